# JupyterHub config fragment (load_subconfig): operations settings (appliance/hub/opsconfig.py):
# hub database URL from its secret file, the Prometheus service + read:metrics role, the
# reservation service + custom:reservations role, and the scrape-time metric collectors.
from appliance.hub import opsconfig

opsconfig.configure(get_config())  # noqa: F821  (provided by JupyterHub)
