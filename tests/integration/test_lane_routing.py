"""Issue 5: the notebook lane's routing on the mini site (routing, not speed; see docs/fast-lane.md).

With every regular HTCondor slot busy with batch jobs:
* a notebook started through the hub still starts, on the lane, in a notebook slot;
* batch jobs never land in a notebook slot (although the notebook slots have room), and the lane
  negotiator never starts a batch job; the main negotiator never starts a notebook job.

The batch load is submitted on the batch schedd host as `benchbatch` (FS authentication); the
notebook is `bench19`'s, spawned through the hub (demo/users.tsv). Users can no longer put a
notebook job on the batch schedd or a batch job on the lane (the schedds refuse them at submit:
tests/integration/test_perimeter_condor.py), so the two misrouted jobs that check the negotiators'
own constraints are made the only way left: submitted held in an accepted shape, turned into the
wrong kind by the schedd host's root (a queue super user; PROTECTED_JOB_ATTRS stops users) and
released. Every job carries `JbaRoutingTest = true` and is removed at the end.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import site_exec, wait_for

pytestmark = pytest.mark.minisite

MAIN_POOL = "cm.mini.test"
TAG = "JbaRoutingTest"


def sh(service: str, script: str, check: bool = True) -> str:
    return site_exec(service, "bash", "-c", script, check=check, timeout=120).stdout


def submit(service: str, user: str, lines: list[str], count: int = 1) -> str:
    """condor_submit on the service's host as `user`; returns the cluster id."""
    desc = "\n".join([
        f"initialdir = /home/{user}", "should_transfer_files = NO",
        "output = /dev/null", "error = /dev/null", f"+{TAG} = true", *lines, f"queue {count}",
    ])
    out = sh(service, f"cd /tmp && printf '%s\\n' {shlex.quote(desc)} | "
                      f"runuser -u {user} -- condor_submit -terse -")
    return out.strip().split(".")[0]


def misroute(service: str, cluster: str, is_notebook: bool) -> None:
    """As root on the schedd host (queue super user): flip the job's kind, then release it."""
    sh(service, f"condor_qedit {cluster} IsNotebookJob {'true' if is_notebook else 'false'} "
                f">/dev/null && condor_release {cluster} >/dev/null")


def jobs(service: str, cluster: str) -> list[dict]:
    out = sh(service, f"condor_q -all {cluster} -af ProcId JobStatus RemoteHost")
    res = []
    for line in out.splitlines():
        proc, status, host = (line.split() + ["", "", ""])[:3]
        res.append({"proc": proc, "status": int(status), "host": host})
    return res


def running_notebooks_of(user: str) -> list[dict]:
    out = sh("condor-lane", f"condor_q -all -const 'JupyterHubUser == \"{user}\" && "
                            "JobStatus == 2' -af ClusterId RemoteHost")
    return [{"cluster": c, "host": h} for c, h in (l.split() for l in out.splitlines() if l.strip())]


def regular_slots() -> list[tuple[str, str]]:
    out = sh("condor-cm", "condor_status -const 'NotebookSlot =!= true' -af Name State")
    return [tuple(l.split()) for l in out.splitlines() if l.strip()]


def notebook_slot_names() -> set[str]:
    """Partitionable notebook slots as the lane sees them, e.g. {'slot5@exec1.mini.test'}."""
    return set(sh("condor-lane", "condor_status -const 'NotebookSlot =?= true && "
                                 "PartitionableSlot =?= true' -af Name").split())


def in_notebook_slot(remote_host: str, pslots: set[str]) -> bool:
    name, _, host = remote_host.partition("@")
    return f"{name.split('_')[0]}@{host}" in pslots


def cycle_after(service: str, t: float) -> bool:
    """True once the service's negotiator has finished a cycle that STARTED after time t.

    From its NegotiatorLog (the negotiator ad in the collector is only refreshed every few
    minutes). Log times have whole seconds, so "after t" means at least the next second.
    """
    out = sh(service, "grep -E 'Started Negotiation Cycle|Finished Negotiation Cycle' "
                      "/var/log/condor/NegotiatorLog | tail -n 400", check=False)
    started = None
    for line in out.splitlines():
        try:
            when = datetime.strptime(line[:17], "%m/%d/%y %H:%M:%S").replace(
                tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
        if "Started" in line:
            started = when
        elif started is not None and started >= int(t) + 1:
            return True
    return False


def wait(pred, timeout: float, what: str, step: float = 1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")


@pytest.fixture
def cleanup_routing_jobs():
    yield
    for svc in ("condor-schedd", "condor-lane"):
        sh(svc, f"condor_rm -const '{TAG} =?= true' >/dev/null 2>&1; true", check=False)


SLEEP = ["universe = vanilla", "executable = /bin/sleep", "arguments = 600",
         "request_cpus = 1", "request_memory = 512"]
# Shaped like the hub's notebook jobs (the lane's submit requirements accept nothing else).
LAUNCHER_SHAPED = [
    "universe = vanilla", "executable = /usr/local/bin/appliance-launch",
    "transfer_executable = false",
    'arguments = "--env-file /home/benchbatch/.jupyterhub-batch/routing.json --port-range 40000-41000"',
    "request_cpus = 1", "request_memory = 2048", "allowed_job_duration = 3600",
    "+IsNotebookJob = true", '+JupyterHubUser = "benchbatch"', '+JupyterHubId = "appliance.mini.test"',
    "accounting_group = group_notebook", "accounting_group_user = benchbatch"]


@pytest.fixture
def bench19_hub(client_for):
    c = client_for("bench19")
    yield c
    if "" in c.user_model().get("servers", {}):
        c.stop()


def test_notebooks_start_on_a_full_pool_and_batch_stays_out(cleanup_routing_jobs, bench19_hub):
    pslots = notebook_slot_names()
    assert len(pslots) >= 1, "the lane sees no notebook slot"
    slots = regular_slots()
    assert slots, "the main collector lists no regular slot"
    free = sum(1 for _, state in slots if state != "Claimed")

    # 1. Fill every free regular slot, plus 3 batch jobs more than fit, plus one notebook job
    #    on the WRONG (main) schedd: the main negotiator must start none of the extras.
    wrong = submit("condor-schedd", "bench19", SLEEP + ["hold = true"])
    t_submit = time.time()
    batch = submit("condor-schedd", "benchbatch", SLEEP, count=free + 3)
    # (No accounting group on that one: HTCondor 23.9's schedd keeps advertising a group submitter
    # such as group_notebook.bench19 for ~30 min after its last job left, and aborts the
    # negotiator's whole cycle with that schedd when it reaches that submitter.)
    misroute("condor-schedd", wrong, is_notebook=True)
    sh("condor-schedd", "condor_reschedule >/dev/null 2>&1; true", check=False)
    # The main negotiator has stock timing (one cycle a minute, at most every 5 s after a
    # reschedule): wait for a cycle that ENDED after our submit and for every regular slot busy.
    wait(lambda: cycle_after("condor-cm", t_submit)
         and all(state == "Claimed" for _, state in regular_slots()),
         150, "a main negotiation cycle after the submit, every regular slot claimed", step=2)
    time.sleep(3)  # let the schedd start what was matched

    running = [j for j in jobs("condor-schedd", batch) if j["status"] == 2]
    idle = [j for j in jobs("condor-schedd", batch) if j["status"] == 1]
    assert len(idle) >= 3, f"batch jobs ran beyond the regular slots: {running}"
    for j in running:
        assert not in_notebook_slot(j["host"], pslots), f"batch job in a notebook slot: {j}"
    [nb_main] = jobs("condor-schedd", wrong)
    assert nb_main["status"] == 1, f"the main negotiator started a notebook job: {nb_main}"

    # 2. The pool is full. A notebook started through the hub still starts, in a notebook slot...
    r = bench19_hub.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    bench19_hub.wait_ready(timeout=120)
    [job] = wait_for("bench19's notebook job running on the lane",
                     lambda: running_notebooks_of("bench19"), timeout=30, interval=0.5)
    assert in_notebook_slot(job["host"], pslots), f"notebook job outside a notebook slot: {job}"
    assert all(state == "Claimed" for _, state in regular_slots()), "a regular slot was freed"

    # 3. ...and a batch job on the lane schedd is never started by the lane negotiator.
    lane_batch = submit("condor-lane", "benchbatch", LAUNCHER_SHAPED + ["hold = true"])
    misroute("condor-lane", lane_batch, is_notebook=False)
    t = time.time()
    wait(lambda: cycle_after("condor-lane", t), 30, "a lane negotiation cycle after the submit",
         step=0.5)
    [lb] = jobs("condor-lane", lane_batch)
    assert lb["status"] == 1, f"the lane negotiator started a batch job: {lb}"
    # and still no batch job in a notebook slot anywhere
    for j in jobs("condor-schedd", batch):
        if j["status"] == 2:
            assert not in_notebook_slot(j["host"], pslots), j
