"""Issue 5: the notebook lane's routing on the mini site (routing, not speed; see docs/fast-lane.md).

With every regular HTCondor slot busy with batch jobs:
* a notebook job submitted to the lane schedd still starts, in a notebook slot;
* batch jobs never land in a notebook slot (although the notebook slots have room), and the lane
  negotiator never starts a batch job; the main negotiator never starts a notebook job.

Jobs are submitted on the schedd hosts themselves as ordinary users (FS authentication), the
batch load as `benchbatch`, the notebook as `bench19` (demo/users.tsv). Every job carries
`JbaRoutingTest = true` and is removed at the end.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import site_exec

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


def jobs(service: str, cluster: str) -> list[dict]:
    out = sh(service, f"condor_q -all {cluster} -af ProcId JobStatus RemoteHost")
    res = []
    for line in out.splitlines():
        proc, status, host = (line.split() + ["", "", ""])[:3]
        res.append({"proc": proc, "status": int(status), "host": host})
    return res


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


def test_notebooks_start_on_a_full_pool_and_batch_stays_out(cleanup_routing_jobs):
    pslots = notebook_slot_names()
    assert len(pslots) >= 1, "the lane sees no notebook slot"
    slots = regular_slots()
    assert slots, "the main collector lists no regular slot"
    free = sum(1 for _, state in slots if state != "Claimed")

    # 1. Fill every free regular slot, plus 3 batch jobs more than fit, plus one notebook job
    #    submitted to the WRONG (main) schedd: the main negotiator must start none of the extras.
    t_submit = time.time()
    batch = submit("condor-schedd", "benchbatch", SLEEP, count=free + 3)
    # (No accounting group on that one: HTCondor 23.9's schedd keeps advertising a group submitter
    # such as group_notebook.bench19 for ~30 min after its last job left, and aborts the
    # negotiator's whole cycle with that schedd when it reaches that submitter.)
    wrong = submit("condor-schedd", "bench19", SLEEP + ["+IsNotebookJob = true"])
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

    # 2. The pool is full. A notebook job on the lane still starts, in a notebook slot...
    nb = submit("condor-lane", "bench19", [
        "universe = vanilla", "executable = /bin/sleep", "arguments = 600",
        "request_cpus = 1", "request_memory = 2048", "+IsNotebookJob = true",
        "accounting_group = group_notebook", "accounting_group_user = bench19"])
    [job] = wait(lambda: [j for j in jobs("condor-lane", nb) if j["status"] == 2],
                 30, "the notebook job running on the lane", step=0.5)
    assert in_notebook_slot(job["host"], pslots), f"notebook job outside a notebook slot: {job}"
    assert all(state == "Claimed" for _, state in regular_slots()), "a regular slot was freed"

    # 3. ...and a batch job on the lane schedd is never started by the lane negotiator.
    lane_batch = submit("condor-lane", "benchbatch", SLEEP)
    t = time.time()
    wait(lambda: cycle_after("condor-lane", t), 30, "a lane negotiation cycle after the submit",
         step=0.5)
    [lb] = jobs("condor-lane", lane_batch)
    assert lb["status"] == 1, f"the lane negotiator started a batch job: {lb}"
    # and still no batch job in a notebook slot anywhere
    for j in jobs("condor-schedd", batch):
        if j["status"] == 2:
            assert not in_notebook_slot(j["host"], pslots), j
