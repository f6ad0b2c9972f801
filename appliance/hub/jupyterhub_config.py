"""Base JupyterHub configuration of the appliance (shipped in the image).

Site settings go in the mounted /etc/appliance/appliance_config.py (traitlets config, loaded last so
it can override anything here). See docs/admin.md.
"""

import faulthandler
import os
import signal
import socket

import appliance.hub as _hub_pkg

# `supervisorctl signal USR1 jupyterhub` writes every thread's stack to the hub's log: for a hub
# that does not exit after its shutdown's "...done" (seen once with 120 sessions: supervisor
# killed it after 30 s; docs/reliability.md).
faulthandler.register(signal.SIGUSR1, all_threads=True)
from appliance import internaltls, publicorigin
from appliance.hub.availability_api import availability_handlers
from appliance.hub.handlers import default_handlers
from appliance.hub.login_start import login_start_handlers
from appliance.hub.session_api import session_handlers
from appliance.hub.spawner import BatchSpawner

c = get_config()  # noqa: F821  (provided by JupyterHub)

STATE = os.environ.get("APPLIANCE_STATE_DIR", "/srv/appliance")

# --- hub ---------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "appliance.hub.authenticator.KerberosPAMAuthenticator"
c.JupyterHub.spawner_class = "appliance.hub.spawner.BatchSpawner"
c.JupyterHub.db_url = os.environ.get("APPLIANCE_DB_URL", f"sqlite:///{STATE}/jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = f"{STATE}/secrets/cookie_secret"
c.JupyterHub.pid_file = "/run/appliance/jupyterhub.pid"
# Nodes reach the hub API over the cluster network; the browser reaches the hub only via nginx+CHP.
_side = internaltls.cluster_side(os.environ, socket.getfqdn(), publicorigin.from_env(os.environ).host)
c.Spawner.hub_connect_url = _side.connect_url
if os.environ.get("APPLIANCE_CLUSTER_ADDR"):
    # The hub listens on loopback only (CHP and the hub's own services reach it there); nodes reach
    # its REST API through nginx's TLS listener on the cluster-side address, which serves nothing
    # else (image/bin/appliance-nginx-conf; docs/security.md, "User isolation").
    c.JupyterHub.hub_bind_url = os.environ.get("APPLIANCE_HUB_BIND_URL", "http://127.0.0.1:8081")
    c.JupyterHub.hub_connect_url = "http://127.0.0.1:8081"
else:  # the hub itself on every interface, UI included (no cluster-side filter)
    c.JupyterHub.hub_bind_url = os.environ.get("APPLIANCE_HUB_BIND_URL", "http://0.0.0.0:8081")
    c.JupyterHub.hub_connect_url = _side.connect_url
# Routes over mutual TLS (appliance/internaltls.py): every server gets a certificate for its user's
# own host; CHP (appliance-run chp) and the hub present the appliance's client certificate and
# trust only the notebooks CA. JupyterHub's readiness check (User._wait_up) reads these settings.
_tls = internaltls.Paths(f"{STATE}/{internaltls.DIR_NAME}")
c.BatchSpawner.internal_tls_dir = _tls.root
c.BatchSpawner.server_cert_node_names = list(_side.nodes)
c.JupyterHub.tornado_settings = {
    "internal_ssl_key": _tls.key(internaltls.CLIENT),
    "internal_ssl_cert": _tls.crt(internaltls.CLIENT),
    "internal_ssl_ca": _tls.crt(internaltls.NOTEBOOKS_CA),
}
# A hub restart must not kill users' notebooks; CHP is supervised separately.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
# JupyterHub's init_spawners_timeout stays at its default (10 s): with 1 s the hub served before
# its checks of the running servers were done, and after an upgrade (a new container, so a new CHP
# with no routes) the routes came back only after them: the upgrade test's kernels answered 302 to
# the hub for the first seconds (docs/reliability.md, "Load").
# CHP runs under supervisor; the hub checks every 2 s that it still has its routes and adds them
# back after a CHP restart (appliance/hub/proxy.py, SupervisedProxy.route_check_interval).
c.JupyterHub.proxy_class = "appliance.hub.proxy.SupervisedProxy"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
# JupyterHub's own pass over every user's activity (it re-checks the routes too).
c.JupyterHub.last_activity_interval = 30
c.JupyterHub.extra_handlers = (list(default_handlers) + list(session_handlers)
                               + list(availability_handlers) + list(login_start_handlers))
c.JupyterHub.allow_named_servers = False
c.JupyterHub.template_vars = {"appliance": True}
# The home page adds the user's Kerberos credential state (templates/home.html extends the stock
# one); templates/spawn_form.html is the spawn form. A site's own templates go first (docs/admin.md).
c.JupyterHub.template_paths = [os.path.join(os.path.dirname(_hub_pkg.__file__), "templates")]

# --- login ---------------------------------------------------------------------------------
c.Authenticator.enable_auth_state = True
c.Authenticator.allow_all = True  # every site account that PAM accepts may log in
c.Authenticator.admin_users = set(filter(None, os.environ.get("APPLIANCE_ADMIN_USERS", "").split(",")))

# --- spawner -------------------------------------------------------------------------------
c.BatchSpawner.default_backend = "htcondor"
c.Spawner.cmd = ["jupyterhub-singleuser"]

# --- fragments shipped with the appliance (appliance/hub/config/*.py, e.g. operations: database URL
# from its secret, the metrics reader, the reservation service, metric collectors) ---------------
import glob  # noqa: E402

for _fragment in sorted(glob.glob(os.path.join(os.path.dirname(_hub_pkg.__file__), "config", "*.py"))):
    load_subconfig(_fragment)  # noqa: F821

# --- site overrides ------------------------------------------------------------------------
_site = os.environ.get("APPLIANCE_CONFIG", "/etc/appliance/appliance_config.py")
if os.path.exists(_site):
    load_subconfig(_site)  # noqa: F821
# ... then any drop-ins, in name order (config management, or one setting turned on for a while
# without touching the mounted file: tests/integration/test_login_start.py).
_site_dir = os.environ.get("APPLIANCE_CONFIG_DIR", "/etc/appliance/appliance_config.d")
for _dropin in sorted(glob.glob(os.path.join(_site_dir, "*.py"))):
    load_subconfig(_dropin)  # noqa: F821

# Idle culling (appliance/hub/culling.py): the hub-managed jupyterhub-idle-culler, when the site
# set c.IdleCulling.timeouts (after the site config: it decides).
from appliance.hub.culling import configure as _configure_culling  # noqa: E402

_configure_culling(c)

# Settings that can be wrong (port_range, bounds, default_backend, ...) fail here, at hub start,
# naming the setting, instead of at the first spawn.
BatchSpawner(config=c)
