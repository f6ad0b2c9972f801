# Hub settings of the mini site (a site mounts its own file at /etc/appliance/appliance_config.py).
c = get_config()  # noqa: F821

c.JupyterHub.hub_connect_url = "http://appliance.mini.test:8081"
c.BatchSpawner.default_backend = "htcondor"
c.BatchSpawner.max_cpus = 4
c.BatchSpawner.max_memory_gb = 8
c.BatchSpawner.port_range = (40000, 41000)
c.JupyterHub.admin_users = set()  # no admins in the demo; add e.g. {"alice"} to try the admin page

# HTCondor: notebook jobs go to the fast-lane schedd on lane.mini.test.
c.HTCondorScheduler.collector = "lane.mini.test"
c.HTCondorScheduler.schedd = "lane.mini.test"
c.HTCondorScheduler.hub_id = "appliance.mini.test"
c.BatchSpawner.max_gpus = 2  # node3 has (fake) GPUs for the Slurm gres demo
c.JupyterHub.last_activity_interval = 10  # route re-check after a proxy restart (tested)

# --- operations (docs/operations.md): database URL from its secret, the Prometheus service
# (read:metrics only), the reservation service, metric collectors. The shipped base config will
# load appliance/hub/config/*.py itself (one line, see docs/operations.md "Wiring"); until then
# the mini site loads the fragment here.
import os as _os  # noqa: E402

import appliance.hub as _hub  # noqa: E402

_ops = _os.path.join(_os.path.dirname(_hub.__file__), "config", "operations.py")
load_subconfig(_ops)  # noqa: F821  (idempotent: loading it twice adds nothing twice)
# Interim, until the spawner records its own metrics (issue 8's restructuring): a subclass that
# times the spawn phases from outside.
c.JupyterHub.spawner_class = "appliance.hub.metered.MeteredBatchSpawner"
