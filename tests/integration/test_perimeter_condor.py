"""Issue 10, batch side, on the mini site: a user with a Kerberos ticket cannot bypass the hub.

The hostile user (`bench18`, demo/users.tsv) works where a user's code really runs: on an
execute node (their notebook's terminal), with their own ticket (kinit, password on stdin), and
talks to the schedds directly with condor_submit / condor_qedit, authenticated by Kerberos only.

* the notebook lane refuses every job not shaped like the hub's (wrong executable, extra
  arguments, a transferred executable, too big, too long, no runtime, no tag, someone else's
  fair share, another universe, a container), each with a message saying what to do instead, and
  keeps no job; a hub-shaped job is accepted, but nobody may edit its attributes afterwards;
* the lane starts at most one notebook per user: a direct job waits while the user's hub
  notebook runs, and starts once it is gone;
* the batch schedd refuses jobs tagged as notebooks or accounted to the notebook group (and
  their later addition by condor_qedit);
* the hub's service identity cannot remove a job on the batch schedd (it can on the lane).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest

from tests.conftest import demo_users, site_exec, wait_for

pytestmark = pytest.mark.minisite

HOSTILE = "bench18"
TAG = "JbaPerimeterTest"
LANE = ("lane.mini.test", "lane.mini.test")          # (schedd name, collector)
BATCH = ("schedd.mini.test", "cm.mini.test")
HINT = "Start notebooks from the JupyterHub web page"


def hub_shaped(user: str = HOSTILE) -> dict[str, str]:
    """A job exactly as the hub submits it (appliance/hub/scheduler/htcondor.py), held."""
    return {
        "universe": "vanilla", "executable": "/usr/local/bin/appliance-launch",
        "transfer_executable": "false",
        "arguments": f'"--env-file /home/{user}/.jupyterhub-batch/perimeter.json '
                     f'--port-range 40000-41000"',
        "initialdir": f"/home/{user}", "should_transfer_files": "NO",
        "output": "/dev/null", "error": "/dev/null",
        "request_cpus": "1", "request_memory": "2048MB", "request_disk": "256MB",
        "allowed_job_duration": "3600", "+IsNotebookJob": "true", "+JupyterHubUser": f'"{user}"',
        "+JupyterHubId": '"appliance.mini.test"',
        "accounting_group": "group_notebook", "accounting_group_user": user,
        "hold": "true", f"+{TAG}": "true",
    }


def batch_job() -> dict[str, str]:
    return {"universe": "vanilla", "executable": "/bin/sleep", "arguments": "600",
            "initialdir": "/tmp", "should_transfer_files": "NO", "output": "/dev/null",
            "error": "/dev/null", "hold": "true", f"+{TAG}": "true"}


def as_user(user: str, command: str, stdin: str = ""):
    """`command` as `user` on an execute node with the user's own ticket (and nothing else)."""
    pw = demo_users()[user]["password"]
    cc = f"/tmp/krb5cc_perimeter_{user}"
    script = (
        f"IFS= read -r pw; printf '%s\\n' \"$pw\" | runuser -u {user} -- "
        f"env KRB5CCNAME=FILE:{cc} kinit -l 10m {user} >/dev/null || exit 99; "
        f"cd /tmp; runuser -u {user} -- env KRB5CCNAME=FILE:{cc} "
        f"_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=KERBEROS {command}; rc=$?; "
        f"rm -f {cc}; exit $rc")
    r = site_exec("condor-exec1", "bash", "-c", script, input=pw + "\n" + stdin, check=False)
    assert r.returncode != 99, f"kinit as {user} failed: {r.stderr}"
    return r


def submit(where: tuple[str, str], desc: dict[str, str], user: str = HOSTILE):
    name, pool = where
    text = "\n".join(f"{k} = {v}" for k, v in desc.items()) + "\nqueue\n"
    return as_user(user, f"condor_submit -name {name} -pool {pool} -terse -", stdin=text)


def cluster_of(r) -> str:
    assert r.returncode == 0, f"submission refused: {r.stdout}{r.stderr}"
    return r.stdout.strip().split(".")[0]


def queue(service: str, constraint: str, *attrs: str) -> list[dict]:
    r = site_exec(service, "condor_q", "-all", "-constraint", constraint, "-json",
                  "-attributes", ",".join(("ClusterId",) + attrs), check=False)
    return json.loads(r.stdout) if r.stdout.strip() else []


def tagged(service: str, *attrs: str) -> list[dict]:
    return queue(service, f"{TAG} =?= true", *attrs)


@pytest.fixture
def cleanup():
    yield
    for svc in ("condor-lane", "condor-schedd"):
        site_exec(svc, "condor_rm", "-constraint", f"{TAG} =?= true", check=False)


# ----------------------------------------------------------------------------- the lane

def lane_bounds() -> dict[str, int]:
    """The lane's size and runtime bounds as shipped (one past each must be refused)."""
    conf = (Path(__file__).parents[2] / "condor-config/lane/40-jba-lane-policy.conf").read_text()
    found = re.findall(r"^(JBA_MAX_\w+|JBA_NOTEBOOK_DISK_MB) = (\d+)$", conf, re.M)
    return {k: int(v) for k, v in found}


LANE_BOUNDS = lane_bounds()

REFUSED_ON_LANE = {
    "wrong executable": ({"executable": "/bin/sleep", "arguments": "600"},
                         "runs only the hub's launcher"),
    "launcher with a command of its own": (
        {"arguments": '"--env-file /tmp/x.json --port-range 40000-41000 -- /bin/sh -c id"'},
        "runs only the hub's launcher"),
    "executable transferred from the submitter": (
        {"transfer_executable": "true", "should_transfer_files": "YES"},
        "runs only the hub's launcher"),
    "too many CPUs": ({"request_cpus": str(LANE_BOUNDS["JBA_MAX_CPUS"] + 1)}, "Notebook too big"),
    "too much memory": ({"request_memory": f'{LANE_BOUNDS["JBA_MAX_MEMORY_MB"] + 1}MB'},
                        "Notebook too big"),
    "too many GPUs": ({"request_gpus": str(LANE_BOUNDS["JBA_MAX_GPUS"] + 1)}, "Notebook too big"),
    "too long": ({"allowed_job_duration": str(LANE_BOUNDS["JBA_MAX_RUNTIME_S"] + 1)},
                 "runtime must be set"),
    "no runtime limit": ({"allowed_job_duration": ""}, "runtime must be set"),
    "no notebook tag": ({"+IsNotebookJob": "false"}, "not a JupyterHub notebook job"),
    "another hub's tag": ({"+JupyterHubId": '"evil.example"'}, "not a JupyterHub notebook job"),
    "someone else's fair share": ({"accounting_group_user": "alice"},
                                  "not a JupyterHub notebook job"),
    "local universe": ({"universe": "local"}, "vanilla universe"),
    "scheduler universe": ({"universe": "scheduler"}, "vanilla universe"),
    "container image": ({"container_image": "docker://debian:trixie"}, "vanilla universe"),
}


@pytest.mark.parametrize("case", list(REFUSED_ON_LANE))
def test_lane_refuses_what_the_hub_would_not_submit(site, cleanup, case):
    change, message = REFUSED_ON_LANE[case]
    desc = {**hub_shaped(), **change}
    desc = {k: v for k, v in desc.items() if v != ""}
    r = submit(LANE, desc)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{case}: the lane accepted it: {out}"
    assert message in out, f"{case}: unexpected refusal: {out}"
    assert "JupyterHub" in out, f"{case}: the message does not say what to do: {out}"
    assert not tagged("condor-lane"), f"{case}: a refused submission left a job"


def test_lane_takes_the_hubs_shape_and_nobody_edits_it(site, cleanup):
    cluster = cluster_of(submit(LANE, hub_shaped()))
    before = queue("condor-lane", f"ClusterId == {cluster}", "RequestCpus", "Cmd",
                   "AllowedJobDuration", "AcctGroupUser", "WantContainer")
    edits = [("RequestCpus", "64"), ("Cmd", '"/bin/sh"'), ("AllowedJobDuration", "99999999"),
             ("AcctGroupUser", '"alice"'), ("WantContainer", "true")]
    for attr, value in edits:
        r = as_user(HOSTILE, f"condor_qedit -name {LANE[0]} -pool {LANE[1]} {cluster} "
                             f"{attr} {shlex.quote(value)}")
        assert r.returncode != 0, f"condor_qedit {attr} = {value} was accepted: {r.stdout}"
    after = queue("condor-lane", f"ClusterId == {cluster}", "RequestCpus", "Cmd",
                  "AllowedJobDuration", "AcctGroupUser", "WantContainer")
    assert after == before, f"attributes changed: {before} -> {after}"


@pytest.mark.parametrize("asked", ["10GB", ""])  # a node's whole disk share; HTCondor's default
def test_every_notebook_job_reserves_the_lanes_disk_size(site, cleanup, asked):
    """The lane's transform sets RequestDisk, whatever the job asked: no notebook takes another
    user's disk share, and a hub that sets no request_disk (older release) still fits."""
    desc = {k: v for k, v in {**hub_shaped(), "request_disk": asked}.items() if v != ""}
    cluster = cluster_of(submit(LANE, desc))
    (job,) = queue("condor-lane", f"ClusterId == {cluster}", "RequestDisk")
    assert job["RequestDisk"] == LANE_BOUNDS["JBA_NOTEBOOK_DISK_MB"] * 1024, job
    r = as_user(HOSTILE, f"condor_qedit -name {LANE[0]} -pool {LANE[1]} {cluster} "
                         f"RequestDisk 99999999")
    assert r.returncode != 0, f"condor_qedit RequestDisk was accepted: {r.stdout}"


def lane_cycle_after(t: float) -> bool:
    """The lane negotiator finished a cycle that started after time t (see test_lane_routing)."""
    from tests.integration.test_lane_routing import cycle_after

    return cycle_after("condor-lane", t)


def test_one_running_notebook_per_user(client_for, cleanup):
    hub = client_for(HOSTILE)
    r = hub.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready(timeout=180)
        running = queue("condor-lane", f'JupyterHubUser == "{HOSTILE}" && JobStatus == 2')
        assert len(running) == 1, running
        # A second, hub-shaped notebook straight to the lane: accepted, but it must not start.
        desc = {k: v for k, v in hub_shaped().items() if k != "hold"}
        cluster = cluster_of(submit(LANE, desc))
        t = time.time()
        wait_for("two lane negotiation cycles after the direct submit",
                 lambda: lane_cycle_after(t + 1), timeout=30, interval=0.5)
        [job] = queue("condor-lane", f"ClusterId == {cluster}", "JobStatus", "NumJobStarts")
        assert job["JobStatus"] == 1, f"a second notebook of {HOSTILE} started: {job}"
    finally:
        hub.stop()
    # Once the hub's notebook is gone, the waiting job may start: it waited for the limit only.
    # (Its launcher finds no env file and exits at once, so look at its start count or history.)
    def started():
        q = queue("condor-lane", f"ClusterId == {cluster}", "JobStatus", "NumJobStarts",
                  "JobCurrentStartDate")
        if q:
            return q[0].get("NumJobStarts", 0) >= 1 or q[0].get("JobCurrentStartDate")
        h = site_exec("condor-lane", "condor_history", "-limit", "1", "-json", "-attributes",
                      "JobStartDate", str(cluster), check=False).stdout
        return bool(h.strip()) and json.loads(h)[0].get("JobStartDate")
    wait_for("the waiting direct job to start after the hub's notebook stopped", started,
             timeout=60, interval=0.5)


# ----------------------------------------------------------------------- the batch schedd

REFUSED_ON_BATCH = {
    "notebook tag": {"+IsNotebookJob": "true"},
    "notebook accounting group": {"accounting_group": "group_notebook"},
    "notebook group, other spelling": {"accounting_group": "Group_Notebook.sub"},
    "notebook group set directly": {"+AccountingGroup": f'"group_notebook.{HOSTILE}"'},
}


@pytest.mark.parametrize("case", list(REFUSED_ON_BATCH))
def test_batch_schedd_refuses_notebook_jobs(site, cleanup, case):
    r = submit(BATCH, {**batch_job(), **REFUSED_ON_BATCH[case]})
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{case}: the batch schedd accepted it: {out}"
    assert "does not take notebook jobs" in out and HINT in out, out
    assert not tagged("condor-schedd"), f"{case}: a refused submission left a job"


def test_batch_job_cannot_become_a_notebook_job_later(site, cleanup):
    cluster = cluster_of(submit(BATCH, batch_job()))     # an ordinary batch job is welcome
    for attr, value in [("IsNotebookJob", "true"), ("AcctGroup", '"group_notebook"'),
                        ("AccountingGroup", f'"group_notebook.{HOSTILE}"')]:
        r = as_user(HOSTILE, f"condor_qedit -name {BATCH[0]} -pool {BATCH[1]} {cluster} "
                             f"{attr} {shlex.quote(value)}")
        assert r.returncode != 0, f"condor_qedit {attr} was accepted: {r.stdout}"
    [job] = queue("condor-schedd", f"ClusterId == {cluster}", "IsNotebookJob", "AcctGroup",
                  "AccountingGroup")
    assert set(job) == {"ClusterId"}, f"notebook attributes were added: {job}"


# ------------------------------------------------------------------ the hub's identity

HUB_REMOVE = """
import os, sys
os.environ["CONDOR_CONFIG"] = "/etc/appliance/condor/condor_config"
os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = "IDTOKENS"
import htcondor2 as htcondor
name, pool, job = sys.argv[1:4]
schedd = htcondor.Schedd(htcondor.Collector(pool).locate(htcondor.DaemonType.Schedd, name))
try:
    print(dict(schedd.act(htcondor.JobAction.Remove, [job])).get("TotalSuccess", 0))
except Exception as e:
    print("refused:", e)
"""


def hub_remove(where: tuple[str, str], cluster: str) -> str:
    """Remove a job as the hub does (its IDTOKEN, appliance/hub/scheduler/htcondor.py)."""
    return site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", HUB_REMOVE, *where,
                     f"{cluster}.0").stdout.strip()


def test_hub_identity_is_queue_super_user_on_the_lane_only(site, cleanup):
    batch = cluster_of(submit(BATCH, batch_job()))
    assert hub_remove(BATCH, batch).startswith("refused"), "the hub removed a batch job"
    [job] = queue("condor-schedd", f"ClusterId == {batch}", "JobStatus")
    assert job["JobStatus"] == 5, f"the batch job is no longer held: {job}"
    # The same token does remove another user's job on the lane (so the refusal above is policy).
    lane = cluster_of(submit(LANE, hub_shaped()))
    assert hub_remove(LANE, lane) == "1"
    assert all(j.get("JobStatus") == 3 for j in queue("condor-lane", f"ClusterId == {lane}",
                                                       "JobStatus"))
