"""The mini site's Slurm cluster with the appliance's Slurm code, without the hub.

Self-contained: needs only the services slurmctld and slurm-node1..3 (podman exec). The appliance
package (and the ClusterShell library it uses for hostlists) is copied into the slurmctld container, which plays the
submit host: the hub side of ``SlurmScheduler`` runs there as root, the submit-helper side
(``appliance.userside.slurm.run_sbatch``) as the user via ``runuser`` (munge vouches for the uid,
exactly as under ``sudo -u`` on the appliance). slurmctld is in jhub's AllocNodes for this purpose.

Instead of appliance-launch (which needs a hub to report to) the jobs run a probe launcher that
records when the job's first instruction ran; the batch script is the real ``slurm_job.sh``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import textwrap
import time

import ClusterShell
import pytest

from tests.conftest import ROOT, container, podman, site_exec, wait_for

pytestmark = pytest.mark.minisite

CTLD = "slurmctld"
SRC = "/opt/appliance-src"
PROBE = "/home/.jba-slurm-probe/launch"
PY = "/opt/jupyter/bin/python3"


def _env() -> dict:
    import os

    return dict(os.environ, CONTAINERS_CONF=str(ROOT / "containers.conf"))


def sh(cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return site_exec(CTLD, "bash", "-c", cmd, check=check, timeout=timeout)


def py(code: str, user: str | None = None, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Run Python with the appliance package in the slurmctld container (as root or as `user`)."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    cmd = ["podman", "exec", "-i", f"{container(CTLD)}", *prefix, "env", f"PYTHONPATH={SRC}", PY,
           "-c", textwrap.dedent(code)]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=_env())
    if check and r.returncode != 0:
        raise AssertionError(f"python failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


@pytest.fixture(scope="module")
def cluster():
    r = sh("sinfo -h -N -o '%N %T'", check=False)
    if r.returncode != 0:
        pytest.fail(f"Slurm mini cluster not running ({r.stderr.strip()}); "
                    "podman-compose -p jba up -d slurmctld slurm-node1 slurm-node2 slurm-node3")
    podman("exec", f"{container(CTLD)}", "rm", "-rf", SRC)
    podman("exec", f"{container(CTLD)}", "mkdir", "-p", SRC)
    podman("cp", str(ROOT / "appliance"), f"{container(CTLD)}:{SRC}/appliance")
    podman("cp", os.path.dirname(ClusterShell.__file__), f"{container(CTLD)}:{SRC}/ClusterShell")
    # The probe launcher on the shared /home: records the time of the job's first instruction in
    # the file given as --env-file (so each job has its own), then idles like a notebook.
    sh(f"""mkdir -p {PROBE.rsplit('/', 1)[0]} && cat > {PROBE} <<'EOF'
#!/bin/sh
now=$(date +%s.%N)
for a in "$@"; do case $a in --env-file=*) f=${{a#--env-file=}};; esac; done
echo "$now $(hostname -s) $(id -un) $HOME $PWD" > "$f.started"
exec sleep 600
EOF
chmod 755 {PROBE} {PROBE.rsplit('/', 1)[0]}""")
    for u in ("alice", "bob", "carol"):
        sh(f"install -d -m 0700 -o {u} -g {u} /home/{u}/.jupyterhub-batch")
    yield
    sh("scancel -u alice; scancel -u bob; scancel -u carol; "
       "scontrol update nodename=node1 state=resume 2>/dev/null; "
       f"rm -f /home/*/.jupyterhub-batch/*.json.started; rm -rf {PROBE.rsplit('/', 1)[0]} {SRC}",
       check=False)


@pytest.fixture(autouse=True)
def clean(cluster):
    sh("scancel -u alice; scancel -u bob; scancel -u carol; "
       "scontrol update nodename=node1 state=resume 2>/dev/null; true", check=False)
    _wait_no_jobs()
    yield
    sh("scancel -u alice; scancel -u bob; scancel -u carol; "
       "scontrol update nodename=node1 state=resume 2>/dev/null; true", check=False)


def _wait_no_jobs(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sh("squeue -h -u alice,bob,carol -t all -o %i -t PD,R,CG,S").stdout.strip():
            return
        time.sleep(0.3)


BUILD = """
    import json, sys, uuid
    from appliance.options import Bounds, validate_options
    from appliance.hub.scheduler.base import SubmitRequest
    from appliance.hub.scheduler.slurm import SlurmScheduler
    user, raw = sys.argv[1], json.loads(sys.argv[2])
    o = validate_options({"backend": "slurm", **raw}, Bounds(max_gpus=2))
    s = SlurmScheduler(launcher=%r, submit_hosts=["slurmctld"])
    name = "jupyterhub-%%s-default-%%s" %% (user, uuid.uuid4().hex[:8])
    env = "/home/%%s/.jupyterhub-batch/%%s.json" %% (user, name)
    r = SubmitRequest(user=user, uid=0, home="/home/" + user, options=o, job_name=name,
                      env_file=env, port_range=(40000, 41000),
                      runtime_seconds=s.runtime_seconds(user, o, 8.0))
    print(json.dumps({"submit": s.build_submit(r), "env_file": env}))
""" % PROBE

HELPER = """
    import json, sys, time
    t0 = time.time()
    from appliance.userside import SubmitError
    from appliance.userside.slurm import run_sbatch
    try:
        print(json.dumps({"job_id": run_sbatch(json.load(sys.stdin)["submit"]), "t0": t0}))
    except SubmitError as e:
        print(json.dumps({"error": str(e), "t0": t0}))
"""


def build(user: str, **options) -> dict:
    # the hub side builds the argv (as root, like the hub)
    r = site_exec(CTLD, "env", f"PYTHONPATH={SRC}", PY, "-c", textwrap.dedent(BUILD), user,
                  json.dumps(options))
    return json.loads(r.stdout)


def submit(user: str, **options) -> dict:
    """Build as the hub, submit as the user through run_sbatch; returns the helper's answer."""
    b = build(user, **options)
    answer = json.loads(py(HELPER, user=user, stdin=json.dumps(b)).stdout)
    answer["env_file"] = b["env_file"]
    answer["argv"] = b["submit"]["argv"]
    return answer


def started(answer: dict, timeout: float = 30) -> tuple[float, str]:
    """(seconds from the helper's start to the job's first instruction, node)."""
    deadline = time.monotonic() + timeout
    f = answer["env_file"] + ".started"
    while time.monotonic() < deadline:
        r = sh(f"cat {f} 2>/dev/null", check=False)
        if r.stdout.strip():
            t, node = r.stdout.split()[:2]
            return float(t) - answer["t0"], node
        time.sleep(0.05)
    raise AssertionError(f"job {answer.get('job_id')} did not start within {timeout}s: "
                         + sh(f"squeue -j {answer.get('job_id')} -o '%T %r'", check=False).stdout)


def batch(user: str, partition: str, n: int, cpus: int = 8) -> list[str]:
    ids = []
    for _ in range(n):
        r = sh(f"runuser -u {user} -- sbatch --parsable -p {partition} -c {cpus} --time=60 "
               f"--chdir=/home/{user} -o /dev/null --wrap='sleep 3000'")
        ids.append(r.stdout.strip())
    return ids


def query_all() -> dict:
    code = """
        import asyncio, json
        from appliance.hub.scheduler.slurm import SlurmScheduler
        s = SlurmScheduler(submit_hosts=["slurmctld"])
        st = asyncio.run(s.query_all())
        print(json.dumps({k: [v.state, v.host, v.reason, v.owner, s.fatal_reason(v)]
                          for k, v in st.items()}))
    """
    return json.loads(py(code).stdout)


# ---------------------------------------------------------------------------------------------
def test_cluster_shape(cluster):
    nodes = dict(ln.split() for ln in sh("sinfo -h -N -o '%N %T' | sort -u").stdout.splitlines())
    assert set(nodes) == {"node1", "node2", "node3"}
    assert not [n for n, s in nodes.items() if "drain" in s or "down" in s], nodes
    parts = sh("sinfo -h -o %R | sort -u").stdout.split()
    assert sorted(parts) == ["all", "jhub", "maxwell", "upex"]
    assert "Groups=belle2" in sh("scontrol show reservation belle2").stdout
    # munge: one key everywhere, 0400 munge; every node accepts a credential made on slurmctld
    assert sh("stat -c '%a %U' /etc/munge/munge.key /etc/minisite/munge/munge.key").stdout.split() == \
        ["400", "munge", "400", "munge"]
    cred = sh("munge -n").stdout
    for n in ("slurm-node1", "slurm-node2", "slurm-node3"):
        r = subprocess.run(
                ["podman", "exec", "-i", f"{container(n)}", "unmunge"], input=cred, text=True,
                capture_output=True, env=_env())
        assert "STATUS:          Success (0)" in r.stdout, (n, r.stdout, r.stderr)


def test_jhub_notebook_starts_fast_while_batch_partitions_are_full(cluster):
    # fill maxwell (exclusive) and "all" (every free core), with jobs waiting behind them
    batch("bob", "maxwell", 3)
    batch("alice", "all", 4)

    def backlog():
        q = sh("squeue -h -o '%P %T' | sort | uniq -c").stdout
        return "maxwell PENDING" in q and "all PENDING" in q and "maxwell RUNNING" in q and q

    wait_for("maxwell and all full with a backlog", backlog)
    times = []
    for _ in range(3):
        a = submit("alice")
        assert "job_id" in a, a
        dt, node = started(a)
        times.append(dt)
        assert node in ("node1", "node2"), node
    # Routing is asserted; the speed is only reported (performance/bench.py measures it).
    print(f"\njhub submit (helper start) -> job's first instruction with maxwell+all full: "
          f"{', '.join(f'{t:.2f}' for t in times)} s (median {statistics.median(times):.2f} s)")
    # the argv form that ran
    a = submit("alice")
    assert "--partition=jhub" in a["argv"] and "--time=10080" in a["argv"] and "--export=NIL" in a["argv"]
    started(a)


def test_upex_only_for_its_group(cluster):
    ok = submit("bob", partition="upex")
    assert "job_id" in ok, ok
    dt, node = started(ok)
    assert node == "node3"
    refused = submit("alice", partition="upex")
    assert refused.get("error") == ("Batch job submission failed: "
                                    "User's group not permitted to use this partition"), refused


def test_belle2_reservation(cluster):
    ok = submit("carol", reservation="belle2")
    assert "job_id" in ok, ok
    dt, node = started(ok)
    assert node == "node2"
    refused = submit("alice", reservation="belle2")
    assert "Access denied to requested reservation" in refused.get("error", ""), refused


def test_jhub_only_from_allowed_submit_hosts(cluster):
    r = site_exec("slurm-node1", "runuser", "-u", "alice", "--", "sbatch", "-p", "jhub",
                  "--wrap=true", "-o", "/dev/null", check=False)
    assert r.returncode != 0 and "Access/permission denied" in r.stderr


def test_query_all_states(cluster):
    running = submit("alice")
    started(running)
    plain = batch("bob", "maxwell", 2)  # node3 exclusive (node2 is reserved): the second waits
    waiting = submit("bob", partition="maxwell")
    held = build("alice")
    held["submit"]["argv"].insert(1, "--hold")  # (argv edited here, never by users)
    held_answer = json.loads(py(HELPER, user="alice", stdin=json.dumps(held)).stdout)

    def settled():
        j = query_all()
        ok = (j.get(running["job_id"], [None])[0] == "running"
              and j.get(waiting["job_id"], [None])[0] == "pending"
              and j.get(held_answer["job_id"], [None])[0] == "held")
        return ok and j

    jobs = wait_for("running, pending and held notebook jobs in squeue", settled)
    assert jobs[running["job_id"]][:2] == ["running", "node1.mini.test"] or \
        jobs[running["job_id"]][:2] == ["running", "node2.mini.test"], jobs
    assert jobs[running["job_id"]][3] == "alice"
    st, host, reason, owner, fatal = jobs[waiting["job_id"]]
    assert st == "pending" and host is None and reason.startswith(("Resources", "Priority")) and fatal is None
    assert jobs[held_answer["job_id"]][0] == "held" and jobs[held_answer["job_id"]][2] == "JobHeldUser"
    # plain batch jobs (other job names) are not listed; finished notebook jobs stay listed as
    # done for MinJobAge (--states=all), which tells the spawner how a job ended
    assert not set(plain) & set(jobs), jobs
    assert all(v[0] == "done" for k, v in jobs.items()
               if k not in (running["job_id"], waiting["job_id"], held_answer["job_id"]))
    # cancel as root (the hub): the job ends, and cancelling again is fine
    code = f"""
        import asyncio
        from appliance.hub.scheduler.slurm import SlurmScheduler
        s = SlurmScheduler()
        asyncio.run(s.cancel({running['job_id']!r}))
        asyncio.run(s.cancel({running['job_id']!r}))
    """
    py(code)
    wait_for("the cancelled job to be done", lambda: query_all()[running["job_id"]][0] == "done")


def test_drained_partition_is_detected(cluster):
    # node2 is reserved for belle2, so draining node1 leaves alice no jhub node at all
    sh("scontrol update nodename=node1 state=drain reason='disk replacement'")
    code = """
        import asyncio
        from appliance.options import UserOptions, OptionsError
        from appliance.hub.scheduler.slurm import SlurmScheduler
        s = SlurmScheduler(submit_hosts=["slurmctld"])
        for user, kw in (("alice", {}), ("carol", {"reservation": "belle2"})):
            try:
                asyncio.run(s.check_request(user, UserOptions(backend="slurm", **kw)))
                print(user, "OK")
            except OptionsError as e:
                print(user, "REFUSED", e.field, e.message)
    """
    out = py(code).stdout
    print("\n" + out)
    assert "alice REFUSED partition no node of partition jhub can take jobs now" in out
    assert "node1: drained (disk replacement)" in out and "Try partition maxwell or all" in out
    assert "carol OK" in out
    # a job submitted anyway (the hub would not) waits; the spawner's fail-fast check says why
    a = submit("alice")
    assert "job_id" in a, a
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st, host, reason, owner, fatal = query_all()[a["job_id"]]
        if fatal:
            break
        time.sleep(0.5)
    assert st == "pending" and fatal and "no node of partition jhub" in fatal, (st, reason, fatal)
    print(f"pending reason: {reason!r}; fatal_reason: {fatal!r}")


def test_describe_resources_live(cluster):
    code = """
        import asyncio, json
        from appliance.hub.scheduler.slurm import SlurmScheduler
        s = SlurmScheduler(submit_hosts=["slurmctld"])
        out = {u: asyncio.run(s.describe_resources(u)) for u in ("alice", "bob", "carol")}
        print(json.dumps(out))
    """
    d = json.loads(py(code).stdout)
    names = {u: [p["name"] for p in d[u]["partitions"]] for u in d}
    assert "upex" in names["bob"] and "upex" not in names["alice"] and names["alice"][0] == "jhub"
    assert [r["name"] for r in d["carol"]["reservations"]] == ["belle2"]
    assert d["alice"]["reservations"] == []
    assert d["alice"]["features"] == ["avx512", "epyc", "gpu"]
