"""Issue 13 on the mini site: compute from the notebook, on both schedulers.

* HTCondor notebook: htcondor2 submits to the BATCH schedd with the forwarded Kerberos ticket, the
  jobs run as the user on an execute node; condor_submit/condor_q/condor_rm in a JupyterLab
  terminal; all of it again after the `shortlived` user's original 2-minute ticket has expired.
* Slurm notebook: sbatch/squeue/scancel to the partitions the user may use, Slurm's own refusal
  for one he may not.
* Dask: SLURMCluster() / HTCondorCluster() without arguments (the nodes' /etc/dask defaults),
  scale(2), a checked computation, workers on other nodes than the notebook and as its user, TLS
  that another user on the node cannot pass, the widget's dashboard link through the hub (200 for
  the owner, 403 for bob, refused on the node for bob), close() leaves no worker job, and a
  notebook that ends (crashes, or is stopped) leaves none after a minute (worker reaper).

One notebook per user and backend for the whole module (alice switches from HTCondor to Slurm
half-way: one server per user). Runtime ~3 min (measured 2:47-3:26), mostly the main pool's stock negotiator and the
2-minute ticket of `shortlived` (its wait overlaps the other tests).
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.conftest import HubClient, demo_users, site_exec, wait_for
from tests.integration.test_credentials import sandbox_ticket

pytestmark = pytest.mark.minisite

SUM_OF_SQUARES = sum(x * x for x in range(1000))
GONE_WITHIN = 60  # seconds: no worker job may outlive its notebook by more than this


def node_service(fqdn: str) -> str:
    short = fqdn.split(".")[0]
    return {"exec1": "condor-exec1", "exec2": "condor-exec2", "node1": "slurm-node1",
            "node2": "slurm-node2", "node3": "slurm-node3"}[short]


def login(user: str) -> HubClient:
    c = HubClient()
    r = c.login(user, demo_users()[user]["password"])
    assert r.status_code == 302, f"login of {user} failed: {r.status_code}"
    c.make_token()
    if "" in c.user_model().get("servers", {}):
        c.stop()
    return c


def spawn(c: HubClient, backend: str) -> None:
    r = c.spawn({"backend": backend})
    assert r.status_code in (201, 202), r.text


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- scheduler side
def condor_jobs(constraint: str) -> list[dict]:
    """Jobs on the batch schedd (root on its host: FS authentication)."""
    r = site_exec("condor-schedd", "condor_q", "-all", "-json", "-constraint", constraint,
                  "-attributes", "ClusterId,ProcId,Owner,JobStatus,RemoteHost,JbaNotebookJob,GlobalJobId",
                  check=False)
    return json.loads(r.stdout) if r.stdout.strip() else []


def live_condor_workers(user: str) -> list[dict]:
    return condor_jobs(f'Owner == "{user}" && JbaDaskWorker =?= true && JobStatus =!= 3 && JobStatus =!= 4')


def slurm_jobs(user: str) -> list[dict]:
    r = site_exec("slurmctld", "squeue", "--json", "-u", user)
    out = []
    for j in json.loads(r.stdout).get("jobs", []):
        st = j.get("job_state")
        out.append({"id": str(j["job_id"]), "name": j.get("name", ""), "partition": j.get("partition"),
                    "state": (st[0] if isinstance(st, list) and st else str(st)), "nodes": j.get("nodes", "")})
    return out


def live_slurm_workers(user: str) -> list[dict]:
    return [j for j in slurm_jobs(user) if j["name"].startswith("dask-nb")
            and j["state"] not in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT")]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def nb(site):
    """Logged-in clients whose notebooks start together: alice (HTCondor), bob (Slurm),
    shortlived (HTCondor). Everything is stopped at the end."""
    clients = {u: login(u) for u in ("alice", "bob", "shortlived")}
    spawn(clients["shortlived"], "htcondor")
    spawn(clients["alice"], "htcondor")
    spawn(clients["bob"], "slurm")
    for c in clients.values():
        c.wait_ready(timeout=240)
    yield clients
    for c in clients.values():
        if "" in c.user_model().get("servers", {}):
            c.stop()


@pytest.fixture(scope="module")
def shortlived_ticket(nb):
    """The original ticket in shortlived's notebook job (what the kernel's KRB5CCNAME holds)."""
    t = sandbox_ticket(nb["shortlived"])
    assert str(t["cc"].principal) == "shortlived@MINI.TEST"
    assert t["cc"].tgt.endtime - t["cc"].tgt.start <= 125, "not a 2-minute ticket"
    return t


SUBMIT_CODE = r'''
import htcondor2, json, os
tag = {tag!r}
out = os.path.expanduser("~/compute-test/" + tag)
os.makedirs(out, exist_ok=True)
schedd = htcondor2.Schedd()   # the nodes' default: the batch schedd (SCHEDD_HOST)
sub = htcondor2.Submit({{
    "executable": "/bin/sh",
    "arguments": "\"-c 'echo $(id -un) $(id -u) $(hostname -f)'\"",
    "output": out + "/job.$(ProcId).out", "error": out + "/job.$(ProcId).err",
    "log": out + "/job.log", "should_transfer_files": "NO",
    "request_cpus": "1", "request_memory": "64MB", "MY.JbaComputeTest": '"' + tag + '"',
}})
result = schedd.submit(sub, count=3)
ads = schedd.query(constraint="ClusterId == %d" % result.cluster(), projection=["GlobalJobId", "Owner"])
print(json.dumps({{"cluster": result.cluster(), "out": out,
                   "gids": [a["GlobalJobId"] for a in ads], "owners": [a["Owner"] for a in ads]}}))
'''


def submit_three(c: HubClient) -> dict:
    tag = f"{c.user}-{uuid.uuid4().hex[:8]}"
    info = last_json(c.run_code(SUBMIT_CODE.format(tag=tag)))
    assert len(info["gids"]) == 3 and set(info["owners"]) == {c.user}
    assert all(g.startswith("schedd.mini.test#") for g in info["gids"]), info  # not the lane
    return info


def wait_outputs(user: str, info: dict, timeout: float = 180) -> list[list[str]]:
    def read():
        r = site_exec("condor-schedd", "sh", "-c", f"cat {info['out']}/job.0.out {info['out']}/job.1.out "
                      f"{info['out']}/job.2.out 2>/dev/null", check=False)
        lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
        return lines if len(lines) == 3 else None
    lines = wait_for(f"the three jobs of {user}", read, timeout=timeout, interval=1)
    uid = demo_users()[user]["uid"]
    for name, u, host in lines:
        assert (name, u) == (user, uid)
        assert host in ("exec1.mini.test", "exec2.mini.test")
    return lines


# -------------------------------------------------------------------------------- HTCondor
def test_htcondor_jobs_from_the_notebook_go_to_the_batch_schedd_and_run_as_the_user(nb, shortlived_ticket):
    t0 = time.monotonic()
    mine = {u: submit_three(nb[u]) for u in ("alice", "shortlived")}
    for u, info in mine.items():
        wait_outputs(u, info)
    print(f"3 + 3 batch jobs submitted from two notebooks -> all outputs: {time.monotonic() - t0:.1f} s")


def test_htcondor_command_line_in_a_terminal(nb):
    alice = nb["alice"]
    out = alice.run_terminal(
        "cd && printf 'executable = /bin/sleep\\narguments = 600\\nshould_transfer_files = NO\\nqueue\\n'"
        " > .compute-test.sub && id=$(condor_submit -terse .compute-test.sub | cut -d. -f1)"
        " && echo CLUSTER=$id && condor_q $id -af GlobalJobId Owner"
        " && condor_rm $id && rm .compute-test.sub", timeout=60)
    assert out.rstrip().endswith("[exit 0]"), out
    cluster = re.search(r"CLUSTER=(\d+)", out).group(1)
    assert re.search(rf"schedd\.mini\.test#{cluster}\.0#\d+ alice", out), out
    assert re.search(rf"All jobs in cluster {cluster} have been marked for removal", out), out


CLUSTER_CODE = r'''
import json, os, socket, time
from dask.distributed import Client
from dask_jobqueue import {cls}
import dask.bag as db
from ipywidgets import Widget

cluster = {cls}()          # nothing but the site's defaults
client = Client(cluster)
t0 = time.monotonic()
cluster.scale(2)
client.wait_for_workers(2, timeout={timeout})
started = time.monotonic() - t0

def where():
    import os, pwd, socket
    return [socket.getfqdn(), os.getuid(), pwd.getpwuid(os.getuid()).pw_name]

total = db.from_sequence(range(1000), npartitions=8).map(lambda x: x * x).sum().compute()
w = cluster._widget()
print(json.dumps({{
    "started": started, "total": total, "workers": list(client.run(where).values()),
    "scheduler": cluster.scheduler_address, "dashboard": cluster.dashboard_link,
    "jobs": sorted(str(j.job_id) for j in cluster.workers.values()),
    "widget": isinstance(w, Widget), "widget_link": cluster.dashboard_link in w.children[0].value,
    "notebook": socket.getfqdn(), "key": os.environ["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"],
}}))
'''

INTRUDER_CODE = r'''
import sys
from distributed import Client
from distributed.security import Security
host = sys.argv[1].split("://")[1]
for name, addr, sec in (("tcp", "tcp://" + host, None), ("tls-own-cert", "tls://" + host, Security.temporary())):
    try:
        Client(addr, timeout=5, security=sec)
        print(name, "CONNECTED")
    except Exception as e:
        print(name, "refused", type(e).__name__)
'''


def check_cluster_owner_only(alice: HubClient, bob: HubClient, info: dict) -> None:
    """The dashboard and the scheduler: alice yes, bob no (through the hub and on the node)."""
    link = info["dashboard"]
    m = re.fullmatch(r"/user/alice/proxy/(\d+)/status", link)
    assert m, link
    port = m.group(1)
    r = alice.user_api("GET", f"/proxy/{port}/status")
    assert r.status_code == 200 and "bokeh" in r.text.lower(), (r.status_code, r.text[:300])
    r = bob.user_api("GET", f"/proxy/{port}/status", owner="alice", allow_redirects=False)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    # On alice's node, as bob: the dashboard port refuses him (alice's own processes get in),
    node = node_service(info["notebook"])
    url = f"http://127.0.0.1:{port}/status"
    as_bob = site_exec(node, "runuser", "-u", "bob", "--", "curl", "-s", "-o", "/dev/null", "-w",
                       "%{http_code}", url, check=False)
    as_alice = site_exec(node, "runuser", "-u", "alice", "--", "curl", "-s", "-o", "/dev/null", "-w",
                         "%{http_code}", url, check=False)
    assert as_alice.stdout == "200" and as_bob.stdout != "200", (as_alice.stdout, as_bob.stdout)
    # the scheduler takes neither plain TCP nor a certificate of bob's own,
    r = site_exec(node, "runuser", "-u", "bob", "--", "/opt/jupyter/bin/python3", "-c", INTRUDER_CODE,
                  info["scheduler"], check=False, timeout=60)
    assert "tcp refused" in r.stdout and "tls-own-cert refused" in r.stdout, r.stdout + r.stderr[-1000:]
    assert "CONNECTED" not in r.stdout
    # and alice's key is hers alone.
    r = site_exec(node, "runuser", "-u", "bob", "--", "cat", info["key"], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def run_cluster(alice: HubClient, bob: HubClient, cls: str, timeout: float) -> dict:
    with alice.kernel(timeout=timeout + 120) as k:
        info = last_json(k.run(CLUSTER_CODE.format(cls=cls, timeout=timeout), timeout=timeout + 120))
        assert info["total"] == SUM_OF_SQUARES
        assert info["scheduler"].startswith("tls://"), info["scheduler"]
        assert len(info["workers"]) == 2
        for host, uid, name in info["workers"]:
            assert (uid, name) == (2001, "alice")
            assert host != info["notebook"], (host, info["notebook"])
        assert info["widget"] and info["widget_link"]
        check_cluster_owner_only(alice, bob, info)
        k.run("client.close(); cluster.close()", timeout=60)
    print(f"{cls}: scale(2) -> both workers connected in {info['started']:.1f} s; notebook on "
          f"{info['notebook']}, workers on {sorted({w[0] for w in info['workers']})}, jobs {info['jobs']}")
    return info


def test_htcondor_dask_cluster_from_the_notebook(nb):
    info = run_cluster(nb["alice"], nb["bob"], "HTCondorCluster", timeout=240)
    assert len(info["jobs"]) == 2
    for h, _, _ in info["workers"]:
        assert h in ("exec1.mini.test", "exec2.mini.test")
    # close() removed the worker jobs
    assert wait_for("no HTCondor worker job of alice", lambda: not live_condor_workers("alice"), timeout=30)


CRASH_CODE = r'''
import os, signal, time
from dask.distributed import Client
from dask_jobqueue import {cls}
cluster = {cls}()
client = Client(cluster)
cluster.scale({n})
deadline = time.monotonic() + {wait}
def submitted():
    return cluster.workers and all(j.job_id for j in cluster.workers.values())
while time.monotonic() < deadline and not (submitted() and len(client.scheduler_info()["workers"]) >= {running}):
    time.sleep(0.2)
print(len(client.scheduler_info()["workers"]), sorted(str(j.job_id) for j in cluster.workers.values()))
'''


def notebook_ends_and_workers_go(alice: HubClient, cls: str, live, n: int, running: int,
                                 how: str) -> float:
    """Start a cluster of n workers (wait for `running` of them), end the notebook (`crash`: the
    server and kernel are killed, nothing can clean up; `stop`: the hub stops the server), then
    return how long until no worker job of alice is left."""
    k = alice.kernel(timeout=300)
    try:
        out = k.run(CRASH_CODE.format(cls=cls, n=n, wait=240, running=running), timeout=300)
        assert int(out.split()[0]) >= running, out
        before = live("alice")
        assert before, "no worker job to watch"
        if how == "crash":
            k.ws.send(json.dumps({
                "header": {"msg_id": uuid.uuid4().hex, "username": "alice", "session": k.session,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": "import os, signal; os.kill(os.getppid(), signal.SIGKILL); "
                                    "os.kill(os.getpid(), signal.SIGKILL)", "silent": True}}))
            t_end = time.monotonic()
            wait_for("the hub to see the notebook gone",
                     lambda: "" not in alice.user_model().get("servers", {}), timeout=60, interval=1)
        else:
            alice.stop()
            t_end = time.monotonic()
    finally:
        try:
            k.ws.close()
        except Exception:
            pass
    wait_for(f"no {cls} worker job of alice", lambda: not live("alice"), timeout=GONE_WITHIN + 30,
             interval=1)
    gone = time.monotonic() - t_end
    print(f"{cls}: notebook {how} with {len(before)} worker jobs "
          f"({sorted(j.get('state', j.get('JobStatus')) for j in before)}); none left {gone:.1f} s later")
    assert gone <= GONE_WITHIN
    return gone


def test_htcondor_workers_go_when_the_notebook_crashes(nb):
    # Killed right after the jobs are queued (the main pool's negotiator may not have matched them
    # yet): no kernel cleans up, nobody renews the jobs' lease; the batch schedd removes them.
    notebook_ends_and_workers_go(nb["alice"], "HTCondorCluster", live_condor_workers, n=2, running=0,
                                 how="crash")


# ----------------------------------------------------------------------------------- Slurm
def test_slurm_batch_jobs_from_bobs_notebook(nb):
    bob = nb["bob"]
    out = bob.run_terminal(
        "id=$(sbatch --parsable -p upex -t 5 -o /dev/null --wrap 'sleep 300') && echo JOB=$id"
        " && squeue -h -j $id -o '%i %u %P' && scancel $id && echo CANCELLED", timeout=60)
    assert out.rstrip().endswith("[exit 0]"), out
    job = re.search(r"JOB=(\d+)", out).group(1)
    assert re.search(rf"{job} bob upex", out) and "CANCELLED" in out, out
    out = bob.run_terminal("sbatch -p jhub -t 5 --wrap true", timeout=60)
    # the notebook partition takes jobs only from the appliance (AllocNodes): Slurm says so
    assert "Batch job submission failed: Access/permission denied" in out, out
    assert not out.rstrip().endswith("[exit 0]"), out


def test_slurm_partition_of_another_group_is_refused(nb):
    """alice (no group upex) from her Slurm notebook: Slurm's own message, nothing queued."""
    alice = nb["alice"]
    if "" in alice.user_model().get("servers", {}):
        alice.stop()
    spawn(alice, "slurm")
    alice.wait_ready(timeout=240)
    out = alice.run_terminal("sbatch -p upex -t 5 --wrap true", timeout=60)
    assert "User's group not permitted to use this partition" in out, out
    assert not [j for j in slurm_jobs("alice") if j["partition"] == "upex"]


def test_slurm_dask_cluster_from_the_notebook(nb):
    info = run_cluster(nb["alice"], nb["bob"], "SLURMCluster", timeout=180)
    # maxwell gives whole nodes: one job with two worker processes on node3
    assert len(info["jobs"]) == 1
    assert {w[0] for w in info["workers"]} == {"node3.mini.test"}
    assert wait_for("no Slurm worker job of alice", lambda: not live_slurm_workers("alice"), timeout=30)


def test_slurm_workers_go_when_the_notebook_stops(nb):
    # scale(4) = two whole-node jobs; only node3 is free for alice: one runs, one stays pending
    notebook_ends_and_workers_go(nb["alice"], "SLURMCluster", live_slurm_workers, n=4, running=2,
                                 how="stop")


# ------------------------------------------------------------------------ ticket lifetime
def test_htcondor_jobs_after_the_original_ticket_expired(nb, shortlived_ticket):
    sl = nb["shortlived"]
    tgt0 = shortlived_ticket["cc"].tgt
    while time.time() < tgt0.endtime + 5:
        time.sleep(min(10.0, max(0.5, tgt0.endtime + 5 - time.time())))
    later = sandbox_ticket(sl)
    tgt1 = later["cc"].tgt
    assert tgt1.authtime == tgt0.authtime and tgt1.endtime > time.time(), (tgt0, tgt1)
    print(f"original ticket ended {time.time() - tgt0.endtime:.0f} s ago; the job's renewed one "
          f"ends in {tgt1.endtime - time.time():.0f} s")
    wait_outputs("shortlived", submit_three(sl))
    out = sl.run_terminal("condor_q -af Owner | sort -u", timeout=60)
    assert out.rstrip().endswith("[exit 0]"), out
