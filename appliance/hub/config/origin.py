# JupyterHub config fragment (load_subconfig): an origin per user (issue 9, hole 1;
# docs/security.md, "An origin per user"). The hub at https://<APPLIANCE_HUB_HOST>[:port], each
# user's server at https://<user>.<APPLIANCE_HUB_HOST>[:port] (appliance/publicorigin.py). CHP routes
# by host (appliance-run chp: --host-routing), nginx passes the Host through and sends any other
# name to the hub's (image/bin/appliance-nginx-conf). The hub's login cookie and every user
# server's OAuth cookie are __Host- cookies: host-only, Secure, Path=/, which a page on another
# subdomain can neither read nor overwrite (cookie tossing).
import os

from appliance import publicorigin

_c = get_config()  # noqa: F821  (provided by JupyterHub)
_c.JupyterHub.subdomain_host = publicorigin.from_env(os.environ).url
_c.JupyterHub.cookie_host_prefix_enabled = True
