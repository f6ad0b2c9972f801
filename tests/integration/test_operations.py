"""Operations (issue 14) against the mini site: the staff reservation service, the blackbox probe,
Prometheus scraping the hub with a metrics-only token, PostgreSQL as the hub database.

Cost: ~1.5-2.5 min (three spawns, two probe runs, Prometheus scrape waits of <= 5 s each).
Runs in this order: reservation (bob spawns on Slurm), probe (carol on the HTCondor lane), then
the Prometheus checks find the metrics those spawns left.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import requests

from tests.conftest import (ROOT, SITE_URL, container, podman, service_origin, site_exec,
                            wait_for)

pytestmark = pytest.mark.minisite

SERVICE = "/services/reservations"
AUDIT = "/srv/appliance/reservations/audit.log"


def prom(query: str) -> list:
    """Instant query against the mini site's Prometheus HTTP API (inside its container)."""
    p = site_exec("prometheus", "curl", "-sf", "--get", "--data-urlencode", f"query={query}",
                  "http://localhost:9090/api/v1/query", timeout=30)
    data = json.loads(p.stdout)
    assert data["status"] == "success", data
    return data["data"]["result"]


def audit_records() -> list[dict]:
    out = site_exec("appliance", "cat", AUDIT, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_node_idle(node: str, timeout: float = 90) -> None:
    """Slurm refuses a reservation on nodes with jobs (the service sets no IGNORE_JOBS): wait until
    jobs of earlier tests on that node are gone (readiness check, bounded)."""
    wait_for(f"no jobs on {node}", lambda: not site_exec(
        "slurmctld", "squeue", "-h", "-w", node, "-o", "%i").stdout.strip(), timeout=timeout,
        interval=1)


def svc(client, method: str, path: str, **kw):
    headers = kw.pop("headers", {})
    headers["Authorization"] = f"token {client.token}"
    url = f"{service_origin(client.base, 'reservations')}{SERVICE}{path}"
    return client.s.request(method, url, headers=headers, cookies={}, timeout=60, **kw)


# ---------------------------------------------------------------------------- reservations
def test_reservation_service(client_for):
    alice, bob, carol = client_for("alice"), client_for("bob"), client_for("carol")
    name = f"t{uuid.uuid4().hex[:6]}"
    full = f"staff-{name}"
    before = len(audit_records())
    body = {"name": name, "partition": "upex", "nodes": ["node3"], "groups": ["upex"], "hours": 2}

    # Not staff: 403 for the API and the page, nothing created.
    assert svc(carol, "POST", "/api/reservations", json=body).status_code == 403
    assert svc(carol, "GET", "/").status_code == 403
    # Outside the policy: 400 naming the field, nothing created.
    r = svc(alice, "POST", "/api/reservations", json=dict(body, partition="all"))
    assert r.status_code == 400 and r.json()["error"] == "partition", r.text
    r = svc(alice, "POST", "/api/reservations", json=dict(body, hours=30))
    assert r.status_code == 400 and r.json()["error"] == "hours", r.text

    wait_node_idle("node3")
    r = svc(alice, "POST", "/api/reservations", json=body)
    assert r.status_code == 200 and r.json()["reservation"] == full, r.text
    try:
        listed = svc(alice, "GET", "/api/reservations").json()["reservations"]
        assert [x["nodes"] for x in listed if x["name"] == full] == ["node3"]
        page = svc(alice, "GET", "/")
        assert page.status_code == 200 and full in page.text

        # bob (group upex) sees it on the spawn page (describe_resources; cached <= 30 s) ...
        wait_for("reservation on bob's spawn page",
                 lambda: full in bob.s.get(f"{bob.base}/hub/spawn").text, timeout=45, interval=2)
        # ... and spawns into it.
        r = bob.spawn({"backend": "slurm", "partition": "upex", "reservation": full})
        assert r.status_code in (201, 202), r.text
        bob.wait_ready(timeout=120)
        resv = site_exec("slurmctld", "squeue", "-h", "-u", "bob", "-t", "RUNNING", "-o", "%v %N").stdout
        assert f"{full} node3" in resv, resv
        bob.stop()

        r = svc(alice, "PATCH", f"/api/reservations/{name}", json={"hours": 1})
        assert r.status_code == 200, r.text
        r = svc(alice, "PATCH", f"/api/reservations/{name}", json={"hours": 30})
        assert r.status_code == 400 and r.json()["error"] == "hours"
    finally:
        r = svc(alice, "DELETE", f"/api/reservations/{name}")
    assert r.status_code == 200, r.text
    assert site_exec("slurmctld", "scontrol", "show", "reservation", full, check=False).returncode != 0

    new = audit_records()[before:]
    seen = [(x["actor"], x["action"], x["result"]) for x in new]
    # carol's attempt never reached the wrapper (403 at the service: no scope)
    assert seen == [("alice", "create", "refused"), ("alice", "create", "refused"),
                    ("alice", "create", "ok"), ("alice", "extend", "ok"),
                    ("alice", "extend", "refused"), ("alice", "delete", "ok")], seen
    assert all(x["time"] and x["iso_time"] for x in new)
    assert new[2]["reservation"] == full and new[2]["details"]["groups"] == ["upex"]


# ---------------------------------------------------------------------------- probe
def _probe(user: str, password: str, options: dict, extra=()) -> tuple[int, dict, str]:
    pwfile = f"/run/appliance-probe-{uuid.uuid4().hex[:6]}.pw"
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "containers.conf"))
    subprocess.run(["podman", "exec", "-i", container("appliance"), "sh", "-c",
                    f"umask 077; cat > {pwfile}"], input=password + "\n", text=True, check=True,
                   env=env, timeout=30)
    try:
        p = site_exec("appliance", "appliance-probe", "--url", SITE_URL,
                      "--ca", "/srv/appliance/tls/active/tls.crt", "--user", user,
                      "--password-file", pwfile, "--options", json.dumps(options),
                      "--spawn-timeout", "120", "--json", *extra, check=False, timeout=300)
    finally:
        site_exec("appliance", "rm", "-f", pwfile, check=False)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    return p.returncode, summary, p.stdout


def test_probe_passes_then_names_the_failing_phase(users):
    rc, s, out = _probe("carol", users["carol"]["password"], {"backend": "htcondor"},
                        ["--textfile", "/run/appliance-probe.prom"])
    print(out)
    assert rc == 0, out
    assert s["ok"] and list(s["phases"]) == ["login", "spawn", "ticket", "cell", "stop"]
    prom_text = site_exec("appliance", "cat", "/run/appliance-probe.prom").stdout
    assert 'appliance_probe_success{backend="htcondor",user="carol"} 1' in prom_text

    # The lane's schedd stopped: the spawn phase fails, and says so.
    site_exec("condor-lane", "condor_off", "-daemon", "schedd")
    try:
        # condor_off returns while the schedd still takes submissions: wait until it is gone
        wait_for("lane schedd gone", lambda: site_exec(
            "condor-lane", "condor_q", "-name", "lane.mini.test", "-totals", check=False
        ).returncode != 0, timeout=60, interval=0.5)
        rc, s, out = _probe("carol", users["carol"]["password"], {"backend": "htcondor"})
        print(out)
        assert rc == 1 and s["failed_phase"] == "spawn", out
        assert "FAILED in phase spawn" in out
        assert "login" in s["phases"] and "ticket" not in s["phases"]
    finally:
        site_exec("condor-lane", "condor_on", "-daemon", "schedd")
        wait_for("lane schedd back", lambda: site_exec(
            "condor-lane", "condor_q", "-name", "lane.mini.test", "-totals", check=False
        ).returncode == 0, timeout=60, interval=0.5)
    # Bad password: the login phase.
    rc, s, out = _probe("carol", "not-the-password", {"backend": "htcondor"})
    assert rc == 1 and s["failed_phase"] == "login", out


# ---------------------------------------------------------------------------- Prometheus
def test_metrics_token_may_read_metrics_only(site):
    token = site_exec("appliance", "cat", "/etc/appliance/secrets/metrics/prometheus.token").stdout.strip()
    from tests.conftest import ca_bundle

    s = requests.Session()
    s.trust_env = False
    h = {"Authorization": f"Bearer {token}"}
    r = s.get(f"{site}/hub/metrics", headers=h, verify=ca_bundle(), timeout=30)
    assert r.status_code == 200 and "jupyterhub_" in r.text and "appliance_sessions" in r.text
    assert s.get(f"{site}/hub/api/users", headers=h, verify=ca_bundle(), timeout=30).status_code == 403
    assert s.get(f"{site}/hub/metrics", verify=ca_bundle(), timeout=30).status_code == 403


def test_prometheus_has_the_spawn_metrics(site):
    """The spawns of the tests above (bob on Slurm, carol's probe on HTCondor) reached Prometheus:
    JupyterHub's own spawn histogram and the appliance's per-backend ones."""
    def scraped():
        hub = prom('sum(jupyterhub_server_spawn_duration_seconds_count{status="success"})')
        mine = prom('sum by (backend) (appliance_spawn_duration_seconds_count{outcome="started"})')
        backends = {r["metric"].get("backend") for r in mine if float(r["value"][1]) > 0}
        return hub and float(hub[0]["value"][1]) >= 2 and {"slurm", "htcondor"} <= backends
    wait_for("spawn metrics in Prometheus", scraped, timeout=30, interval=1)
    phases = prom('sum by (phase) (appliance_spawn_phase_duration_seconds_count{backend="htcondor"})')
    assert {r["metric"]["phase"] for r in phases} >= {"credential", "submit", "queue",
                                                      "server_start", "probe"}
    # carol's probe with the lane schedd stopped: a failed spawn, in the submit phase.
    def failed_submit():  # counted at once, but Prometheus has it only after its next scrape
        r = prom('sum(appliance_spawns_total{backend="htcondor",outcome="failed",cause="submit"})')
        return r and float(r[0]["value"][1]) >= 1
    wait_for("the failed spawn in Prometheus", failed_submit, timeout=30, interval=1)
    up = prom('up{job="jupyterhub"}')
    assert up and up[0]["value"][1] == "1"
    assert prom("appliance_bridge_up") and prom("appliance_scheduler_up")


# ---------------------------------------------------------------------------- database
def test_hub_database_is_postgresql():
    url = site_exec("appliance", "/opt/jupyterhub/bin/python", "-m", "appliance.hub.database",
                    "url").stdout.strip()
    assert url.startswith("postgresql+psycopg2://jupyterhub:***@db.mini.test"), url
    users = site_exec("db", "runuser", "-u", "postgres", "--", "psql", "-d", "jupyterhub", "-tAc",
                      "select name from users").stdout.split()
    assert "carol" in users and "alice" in users
    # The password is in no container's environment or command line.
    env = podman("inspect", container("appliance"), "--format", "{{json .Config.Env}}").stdout
    pw = site_exec("appliance", "cat", "/etc/appliance/secrets/db/password").stdout.strip()
    assert pw and pw not in env
    ps = site_exec("appliance", "ps", "-eo", "args").stdout
    assert pw not in ps
