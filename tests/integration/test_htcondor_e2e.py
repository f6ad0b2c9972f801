"""Issue 2 end to end on the mini site: login over HTTPS (PAM + Kerberos), HTCondor spawn through the
REST API, a kernel through the proxy, the job's identity and host, hub restart, stop."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import HTTP_URL, SITE_URL, HubClient, site_exec

pytestmark = pytest.mark.minisite


def lane_jobs(user: str) -> list[dict]:
    r = site_exec("condor-lane", "condor_q", "-all", "-json", "-constraint",
                  f'JupyterHubUser == "{user}"', "-af:j", "ClusterId", "JobStatus", check=False)
    out = r.stdout.strip()
    if not out:
        return []
    return json.loads(out)


def test_http_redirects_to_https(site):
    import requests

    s = requests.Session()
    s.trust_env = False
    r = s.get(f"{HTTP_URL}/hub/login", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"].startswith(f"{SITE_URL}/hub/login")


def test_wrong_password_refused(site, users):
    before = site_exec("appliance", "ls", "/run/appliance/ccache").stdout.split()
    c = HubClient(site)
    r = c.login("alice", "not-her-password")
    assert r.status_code == 403 or (r.status_code == 200 and "Invalid" in r.text), r.status_code
    # a fresh unknown name: the per-account back-off may have counted an old one
    r2 = HubClient(site).login("nosuch" + uuid.uuid4().hex[:6], "whatever")
    assert r2.status_code == r.status_code
    after = site_exec("appliance", "ls", "/run/appliance/ccache").stdout.split()
    # no new file (the bridge's sweep may remove old ones meanwhile)
    assert set(after) <= set(before), "a failed login left a ticket cache behind"


def test_login_keeps_ticket_cache(client_for):
    alice = client_for("alice")
    files = site_exec("appliance", "find", "/run/appliance/ccache", "-user", "alice",
                      "-perm", "0600", "-type", "f").stdout.split()
    assert files, "no private ticket cache owned by alice after login"
    klist = site_exec("appliance", "klist", "-c", files[-1]).stdout
    assert "alice@MINI.TEST" in klist


def test_bad_env_refused_before_submit(client_for):
    alice = client_for("alice")
    before = len(lane_jobs("alice"))
    r = alice.spawn({"backend": "htcondor", "env": {"A": "line1\nline2"}})
    assert r.status_code == 400, r.text
    assert "env" in r.json()["message"]
    r = alice.spawn({"backend": "htcondor", "cpus": 999})
    assert r.status_code == 400 and "cpus" in r.json()["message"]
    r = alice.spawn({"backend": "htcondor", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    assert len(lane_jobs("alice")) == before
    assert "" not in alice.user_model().get("servers", {})


def test_spawn_kernel_restart_stop(client_for, site):
    alice = client_for("alice")
    t0 = time.monotonic()
    r = alice.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    srv = alice.wait_ready(timeout=240)
    ready_s = time.monotonic() - t0
    print(f"spawn request -> ready: {ready_s:.2f} s")
    state = alice.user_model()
    # alice's own origin (subdomain_host: an origin per user)
    assert srv["url"] == alice.user_url("/")

    # A kernel runs code through the proxy (websocket), as alice, on an execute node.
    assert alice.run_code("print(1+1)").strip() == "2"
    out = alice.run_code("import os, socket; print(os.getuid(), socket.getfqdn(), os.getcwd())")
    uid, host, cwd = out.split()
    assert uid == "2001"
    assert host in ("exec1.mini.test", "exec2.mini.test")
    assert cwd == "/home/alice"
    jobs = lane_jobs("alice")
    assert len(jobs) == 1 and jobs[0]["JobStatus"] == 2

    # The file browser shows the shared home.
    site_exec("appliance", "runuser", "-u", "alice", "--", "touch", "/home/alice/hello-from-appliance.txt")
    r = alice.user_api("GET", "/api/contents/")
    names = [i["name"] for i in r.json()["content"]]
    assert "hello-from-appliance.txt" in names

    # Log in again: straight back to the running server (one server per user).
    again = HubClient(site)
    r = again.login("alice", "alice-pass-1")
    assert r.status_code == 302
    r = again.s.get(f"{site}/hub/spawn", allow_redirects=False)
    assert r.status_code == 302 and "/user/alice/" in r.headers["Location"]

    # A hub restart does not kill the server; it is reachable again afterwards.
    site_exec("appliance", "supervisorctl", "-c", "/etc/supervisor/appliance.conf", "restart", "jupyterhub")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if alice.user_model()["servers"][""]["ready"]:
                break
        except Exception:
            pass
        time.sleep(0.5)
    assert alice.user_model()["servers"][""]["ready"]
    assert alice.run_code("print(6*7)").strip() == "42"
    assert len(lane_jobs("alice")) == 1

    # A proxy restart loses CHP's in-memory routes; the hub's periodic check puts them back.
    site_exec("appliance", "supervisorctl", "-c", "/etc/supervisor/appliance.conf", "restart", "chp")
    deadline = time.monotonic() + 60
    ok = False
    while time.monotonic() < deadline and not ok:
        try:
            ok = alice.user_api("GET", "/api/status", timeout=5).status_code == 200
        except Exception:
            ok = False
        if not ok:
            time.sleep(0.5)
    assert ok, "route to alice's server did not come back after a proxy restart"

    # Stop from the hub: the job is removed.
    alice.stop()
    deadline = time.monotonic() + 30
    while lane_jobs("alice") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lane_jobs("alice") == []
