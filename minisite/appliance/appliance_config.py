# Hub settings of the mini site (a site mounts its own file at /etc/appliance/appliance_config.py).
c = get_config()  # noqa: F821

# Notebook jobs reach the hub API at nginx's cluster-side TLS listener (APPLIANCE_CLUSTER_ADDR):
# https://appliance.mini.test:8444 by default (appliance.internaltls.cluster_side).
c.BatchSpawner.default_backend = "htcondor"
c.BatchSpawner.max_cpus = 4
c.BatchSpawner.max_memory_gb = 64  # above every node: the capacity check, not the bound, refuses (issue 11)
c.BatchSpawner.port_range = (40000, 41000)
c.JupyterHub.admin_users = set()  # no admins in the demo; add e.g. {"alice"} to try the admin page

# HTCondor: notebook jobs go to the fast-lane schedd on lane.mini.test.
c.HTCondorScheduler.collector = "lane.mini.test"
c.HTCondorScheduler.schedd = "lane.mini.test"
c.HTCondorScheduler.hub_id = "appliance.mini.test"
c.BatchSpawner.max_gpus = 2  # exec1 and node3 have two (simulated) GPUs each
# Group kernels: group belle2's notebooks get the "Belle II" kernel (demo/group-kernels/, mounted
# at /opt/group-kernels on the nodes).
c.BatchSpawner.group_kernel_paths = {"belle2": ["/opt/group-kernels/belle2"]}
c.JupyterHub.last_activity_interval = 10  # route re-check after a proxy restart (tested)
# The notebook lane refuses anything beyond these bounds (condor-config/lane/40-jba-lane-policy.conf,
# JBA_MAX_*; tests/unit/test_lane_policy.py keeps the two equal).
c.BatchSpawner.max_runtime_hours = 168

# Honest waiting (issue 11; docs/user-guide.md "Waiting, holds and the end of a session"): short
# intervals so the tests see holds, cancels and time limits within seconds. A site keeps the
# defaults (10 s between status queries while nothing is pending).
c.Scheduler.poll_interval = 2.0
c.BatchSpawner.poll_interval = 5
c.BatchSpawner.allow_extension = True
# Idle culling per backend/partition: 4 h, and 40 s in the opportunistic partition "all" (short
# so the test sees a cull there; no other test leaves a server idle in "all").
c.IdleCulling.timeouts = {"htcondor": 4 * 3600, "slurm": 4 * 3600, "slurm/all": 40}
c.IdleCulling.cull_every = 10
# A server whose node stopped answering the hub's TCP probe for 10 s is reported lost and its job
# removed (the fault suite kills nodes: tests/integration/test_zy_faults.py); a site keeps 120 s.
c.BatchSpawner.unreachable_timeout = 10

# Presets: cards at the top of the spawn form (docs/admin.md, "Presets"); validated against the
# bounds above when the hub starts. The SLURM one is offered to whoever may use partition jhub.
c.BatchSpawner.presets = [
    {"name": "Standard notebook", "description": "HTCondor notebook lane: starts in seconds",
     "options": {"backend": "htcondor", "cpus": 1, "memory_gb": 2}},
    {"name": "SLURM jhub notebook", "description": "SLURM notebook partition jhub (shared)",
     "options": {"backend": "slurm", "partition": "jhub", "cpus": 1, "memory_gb": 2}},
    {"name": "Large memory", "description": "HTCondor notebook lane, 4 cores and 16 GiB for 8 hours",
     "options": {"backend": "htcondor", "cpus": 4, "memory_gb": 16, "runtime_hours": 8}},
]
