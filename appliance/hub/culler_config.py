# Config of the hub-managed jupyterhub-idle-culler service (appliance.hub.culling): the hub
# decides every cull (per-backend/partition limits, busy kernels) through the culler's own hook.
c = get_config()  # noqa: F821
from appliance.hub.culling import arbiter  # noqa: E402

c.IdleCuller.cull_arbiter_hook = arbiter
