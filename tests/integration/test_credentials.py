"""Issue 3 on the mini site: the login's Kerberos ticket goes through the credential bridge into
the lane's credd, notebook jobs get it (renewable, private, KRB5CCNAME), a new login replaces it
(also in running jobs), refusals store nothing, nobody gets someone else's ticket, and a spawn
without a usable ticket fails at once. The slow renewal tests are in test_credentials_renewal.py.

Helpers read the lane credd's directory through `podman exec` and parse tickets with
appliance.ccache (ticket bytes stay inside the test process).
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from appliance import ccache
from tests.conftest import HubClient, demo_users, site_exec, wait_for

pytestmark = pytest.mark.minisite

CRED_DIR = "/var/lib/condor/krb_credentials"
PY = "/opt/jupyterhub/bin/python"
BRIDGE_ENV = [
    "env", "CONDOR_CONFIG=/etc/appliance/condor/condor_config",
    "_CONDOR_SEC_TOKEN_DIRECTORY=/srv/appliance/credbridge-tokens.d",
    "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS",
]
HUB_ENV = [
    "env", "CONDOR_CONFIG=/etc/appliance/condor/condor_config",
    "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS",
]


# ---------------------------------------------------------------------------------- helpers


def node_cred(service: str, user: str, suffix: str = "cred") -> tuple[ccache.CCache | None, float]:
    """(parsed <user>.<suffix> in a node's credential directory, its mtime) or (None, 0)."""
    path = f"{CRED_DIR}/{user}.{suffix}"
    r = site_exec(service, "sh", "-c", f"stat -c %.9Y {path} && base64 -w0 {path}", check=False)
    if r.returncode != 0:
        return None, 0.0
    mtime, data = r.stdout.split("\n", 1)
    return ccache.parse(base64.b64decode(data.strip())), float(mtime)


def bridge_state(user: str) -> dict | None:
    r = site_exec("appliance", PY, "-m", "appliance.credd_bridge.client", "state", user)
    return json.loads(r.stdout)["state"]


def bridge(op: str, **fields) -> dict:
    """One request to the bridge socket as root (what the hub can do)."""
    code = ("import json,sys; from appliance.credd_bridge.client import request_sync; "
            "print(json.dumps(request_sync('/run/appliance/bridge.sock', sys.argv[1], "
            "**json.loads(sys.argv[2]))))")
    r = site_exec("appliance", PY, "-c", code, op, json.dumps(fields))
    return json.loads(r.stdout)


def credd_query_as_bridge(user: str) -> int | None:
    """The lane credd's answer to the bridge identity: the .cc mtime, None if nothing stored."""
    r = site_exec("appliance", *BRIDGE_ENV, PY, "-c",
                  "import sys; from appliance.credd_bridge.credstore import HTCondorCredStore; "
                  "print(HTCondorCredStore().query(sys.argv[1]))", user)
    out = r.stdout.strip().splitlines()[-1]
    return None if out == "None" else int(out)


def node_credds_listed() -> bool:
    """Both execute nodes' credds are in the lane collector (where the bridge locates them)."""
    r = site_exec("condor-lane", "condor_status", "-any", "-const", 'MyType == "CredD"', "-af",
                  "Name", check=False)
    return {"exec1.mini.test", "exec2.mini.test"} <= set(r.stdout.split())


def lane_jobs(user: str) -> list[dict]:
    r = site_exec("condor-lane", "condor_q", "-all", "-json", "-constraint",
                  f'JupyterHubUser == "{user}"', "-af:j", "ClusterId", "JobStatus",
                  "SendCredential", "RemoteHost", check=False)
    return json.loads(r.stdout) if r.stdout.strip() else []


SANDBOX_CODE = (
    "import os, base64, json, subprocess\n"
    "name = os.environ.get('KRB5CCNAME', '')\n"
    "path = name.split(':', 1)[-1]\n"
    "st = os.stat(path)\n"
    "klist = subprocess.run(['klist', '-f'], capture_output=True, text=True)\n"
    "print(json.dumps({'KRB5CCNAME': name, 'uid': st.st_uid, 'mode': st.st_mode & 0o7777,\n"
    "                  'regular': os.path.isfile(path) and not os.path.islink(path),\n"
    "                  'cwd': os.getcwd(), 'klist': klist.stdout, 'klist_rc': klist.returncode,\n"
    "                  'data': base64.b64encode(open(path, 'rb').read()).decode()}))\n"
)


def sandbox_ticket(client: HubClient) -> dict:
    """What a kernel in the running notebook sees: KRB5CCNAME, the file, klist, the ticket."""
    info = json.loads(client.run_code(SANDBOX_CODE).strip().splitlines()[-1])
    info["cc"] = ccache.parse(base64.b64decode(info.pop("data")))
    return info


def login(user: str) -> tuple[HubClient, float, float]:
    c = HubClient()
    t0 = time.time()
    r = c.login(user, demo_users()[user]["password"])
    t1 = time.time()
    assert r.status_code == 302, f"login of {user} failed: {r.status_code}"
    c.make_token()
    return c, t0, t1


def ensure_stopped(client: HubClient) -> None:
    if "" in client.user_model().get("servers", {}):
        client.stop()


# ---------------------------------------------------------------------------------- tests


def test_login_stores_ticket_in_lane_credd_before_the_login_answers(site):
    before, before_mtime = node_cred("condor-lane", "alice")
    alice, t0, t1 = login("alice")
    cc, mtime = node_cred("condor-lane", "alice")
    assert cc is not None, "no alice.cred in the lane credd after login"
    assert str(cc.principal) == "alice@MINI.TEST"
    # the ticket of THIS login: the KDC issued it after the login started (1 s resolution)
    assert cc.tgt.authtime >= int(t0), (cc.tgt.authtime, t0)
    assert cc.tgt.renewable and cc.tgt.endtime > time.time()
    # only the TGT: no service tickets leave the appliance
    assert [str(c.server) for c in cc.credentials] == ["krbtgt/MINI.TEST@MINI.TEST"]
    stored_after = mtime - t0
    print(f"login request -> ticket in the lane credd: {stored_after:.3f} s "
          f"(login request took {t1 - t0:.3f} s)")
    # the hand-over is part of the login: stored before the login's answer (mtimes: whole seconds);
    # how long it took is a figure (printed above, docs/credentials.md), not a timed assertion
    assert int(t0) <= mtime <= t1 + 1, (t0, mtime, t1)
    assert mtime > before_mtime
    # the lane's credmon has made the .cc, and the credd says so to the bridge identity
    cc2, cc_mtime = node_cred("condor-lane", "alice", "cc")
    assert cc2 is not None and cc2.tgt.authtime == cc.tgt.authtime and cc_mtime >= mtime
    assert credd_query_as_bridge("alice") >= int(t0)

    # the bridge's state, and what the hub shows alice (her own state only)
    st = bridge_state("alice")
    assert st["state"] == "active" and st["principal"] == "alice@MINI.TEST"
    assert int(t0) <= st["last_forwarded"] <= t1 + 1
    view = alice.api("GET", "/batch/credential").json()
    assert view["user"] == "alice" and view["principal"] == "alice@MINI.TEST"
    assert view["usable"] and view["state"] == "active"
    assert view["valid_until"] == cc.tgt.endtime and view["renew_until"] == cc.tgt.renew_till
    assert int(t0) <= view["last_forwarded"] <= t1 + 1
    assert "ccache" not in json.dumps(view)
    home = alice.s.get(f"{alice.base}/hub/home")
    assert home.status_code == 200 and 'id="batch-credential"' in home.text
    assert "api/batch/credential" in home.text


def test_notebook_job_gets_renewable_ticket_in_private_sandbox_file(site):
    alice, t0, _ = login("alice")
    ensure_stopped(alice)
    stored, _ = node_cred("condor-lane", "alice")
    try:
        r = alice.spawn({"backend": "htcondor"})
        assert r.status_code in (201, 202), r.text
        alice.wait_ready(timeout=240)
        print(f"spawn request -> ready (with credential): {time.time() - t0:.2f} s")
        [job] = lane_jobs("alice")
        assert job["SendCredential"] is True
        # the starter may first copy an older ticket of alice's left on that node; it replaces
        # it with this login's as soon as the node's credmon has processed it (SEC_CREDENTIAL_REFRESH)
        deadline = time.monotonic() + 15
        while True:
            info = sandbox_ticket(alice)
            if info["cc"].tgt.authtime == stored.tgt.authtime or time.monotonic() > deadline:
                break
            time.sleep(1)
        path = info["KRB5CCNAME"].split(":", 1)[-1]
        assert info["KRB5CCNAME"] in (path, "FILE:" + path)
        # a private file in the job's scratch directory on the execute node (not the shared home)
        assert re.fullmatch(r"/var/lib/condor/execute/dir_\d+/alice\.cc", path), path
        assert info["cwd"] == "/home/alice"
        assert info["regular"] and info["uid"] == 2001 and info["mode"] == 0o600, info
        # klist in the kernel: alice's renewable TGT
        assert info["klist_rc"] == 0
        assert "Default principal: alice@MINI.TEST" in info["klist"]
        assert "krbtgt/MINI.TEST@MINI.TEST" in info["klist"] and "renew until" in info["klist"]
        flags = re.search(r"Flags: (\w+)", info["klist"]).group(1)
        assert "R" in flags, info["klist"]
        tgt = info["cc"].tgt
        assert str(info["cc"].principal) == "alice@MINI.TEST" and tgt.renewable
        assert tgt.authtime == stored.tgt.authtime, "the job has not got this login's ticket"
        # nothing of the sandbox came back to the shared home
        r = site_exec("appliance", "find", "/home/alice", "-name", "alice.cc")
        assert r.stdout.strip() == ""
    finally:
        ensure_stopped(alice)


def test_relogin_replaces_ticket_in_credd_running_job_and_new_spawn(site):
    alice, _, _ = login("alice")
    ensure_stopped(alice)
    try:
        assert alice.spawn({"backend": "htcondor"}).status_code in (201, 202)
        alice.wait_ready(timeout=240)
        [job] = lane_jobs("alice")
        host = job["RemoteHost"].split("@")[-1]
        first = bridge_state("alice")
        deadline = time.monotonic() + 15
        while sandbox_ticket(alice)["cc"].tgt.authtime != node_cred("condor-lane", "alice")[0].tgt.authtime:
            assert time.monotonic() < deadline, "job never got the login's ticket"
            time.sleep(1)
        old = sandbox_ticket(alice)["cc"].tgt
        time.sleep(1.1)  # authtimes have 1 s resolution
        # the push finds the node's credd in the lane collector (re-advertised every 60 s; a
        # first update may fail while the site starts): a readiness check, the push itself is
        # tested without it in test_credentials_push.py
        wait_for("the execute nodes' credds in the lane collector", node_credds_listed,
                 timeout=90, interval=2)

        # log in again (browser session): the new ticket replaces the stored one ...
        again, t0, t1 = login("alice")
        cc, _ = node_cred("condor-lane", "alice")
        assert cc.tgt.authtime > old.authtime and cc.tgt.authtime >= int(t0)
        st = bridge_state("alice")
        assert st["last_forwarded"] >= int(t0) and st["valid_until"] >= first["valid_until"]

        # ... and reaches the notebook that is already running (pushed to its node's credd).
        # (The race once recorded here as xfail: the push to a node whose credd the collector did
        # not list went to the lane's credd and was "confirmed" there; see
        # test_credentials_push.py.)
        deadline = time.time() + 30
        while sandbox_ticket(alice)["cc"].tgt.authtime != cc.tgt.authtime:
            assert time.time() < deadline, (
                f"the running job did not get the new ticket within 30 s: {bridge_state('alice')}")
            time.sleep(0.5)
        visible = time.time() - t0
        print(f"re-login -> new ticket visible in the running job on {host}: {visible:.2f} s")
        st = bridge_state("alice")
        assert host in st["pushed_to"] and st["push_error"] is None, st
        node_cc, _ = node_cred(f"condor-{host.split('.')[0]}", "alice", "cc")
        assert node_cc.tgt.authtime == cc.tgt.authtime
        alice.stop()

        # a new spawn gets the new ticket too
        assert alice.spawn({"backend": "htcondor"}).status_code in (201, 202)
        alice.wait_ready(timeout=240)
        deadline = time.monotonic() + 15
        while sandbox_ticket(alice)["cc"].tgt.authtime != cc.tgt.authtime:
            assert time.monotonic() < deadline, "new job did not get the new ticket"
            time.sleep(0.5)
    finally:
        ensure_stopped(alice)


REFUSALS = r'''
import json, os, shutil, subprocess, time
from appliance import ccache
from appliance.credd_bridge.client import request_sync
D = "/run/appliance/ccache"
SOCK = "/run/appliance/bridge.sock"
made = []

def kinit(user, pw, name, *args):
    path = f"{D}/{name}"
    subprocess.run(["kinit", *args, user], input=pw + "\n", text=True, check=True,
                   capture_output=True, env=dict(os.environ, KRB5CCNAME="FILE:" + path))
    made.append(path)
    return path

def copy(src, name, uid=2001, mode=0o600):
    path = f"{D}/{name}"
    shutil.copyfile(src, path)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    made.append(path)
    return path

def store(user, path):
    r = request_sync(SOCK, "store", user=user, ccache_path=path)
    return r.get("error") or "stored"

out = {}
try:
    good = kinit("alice", "alice-pass-1", "krb5cc_2001_itest_good")
    os.chown(good, 2001, 2001)
    bob = kinit("bob", "bob-pass-2", "krb5cc_2002_itest_bob")
    os.chown(bob, 2002, 2002)
    link = f"{D}/krb5cc_2001_itest_link"; os.symlink(copy(good, "krb5cc_2001_itest_t"), link)
    made.append(link)
    out["symlink"] = store("alice", link)
    hard = copy(good, "krb5cc_2001_itest_h")
    os.link(hard, f"{D}/krb5cc_2001_itest_h2"); made.append(f"{D}/krb5cc_2001_itest_h2")
    out["hardlink"] = store("alice", hard)
    out["other_owner"] = store("alice", copy(good, "krb5cc_2001_itest_o", uid=2002))
    out["group_readable"] = store("alice", copy(good, "krb5cc_2001_itest_g", mode=0o640))
    out["other_principal"] = store("alice", copy(bob, "krb5cc_2001_itest_p"))
    # not renewable: this KDC always issues renewable TGTs, so clear the flag in the cache file
    # (the bridge judges the cache's metadata; the ticket itself would still be renewable)
    t = ccache.parse(open(good, "rb").read()).tgt
    nr = ccache.serialize(t.client, [ccache._pack_entry(
        t.client, t.server, authtime=t.authtime, starttime=t.starttime, endtime=t.endtime,
        renew_till=0, flags=int(t.flags) & ~int(ccache.TicketFlags.RENEWABLE))])
    p = f"{D}/krb5cc_2001_itest_nr"; open(p, "wb").write(nr); made.append(p)
    os.chown(p, 2001, 2001); os.chmod(p, 0o600)
    out["not_renewable"] = store("alice", p)
    short = kinit("alice", "alice-pass-1", "krb5cc_2001_itest_x", "-l", "2s")
    os.chown(short, 2001, 2001)
    time.sleep(3)
    out["expired"] = store("alice", short)
    out["outside_ccache_dir"] = store("alice", "/tmp/../run/appliance/ccache/krb5cc_2001_itest_good")
    # bob's cache handed over as alice's, alice's as bob's (what a confused hub could send)
    out["bob_as_alice"] = store("alice", bob)
    out["alice_as_bob"] = store("bob", good)
finally:
    for p in made:
        try:
            os.unlink(p)
        except OSError:
            pass
print(json.dumps(out))
'''


def test_refusals_through_bridge_socket_store_nothing(site):
    login("alice")
    before = bridge_state("alice")
    _, lane_before = node_cred("condor-lane", "alice")
    bob_before = bridge_state("bob")
    r = site_exec("appliance", PY, "-c", REFUSALS)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {
        "symlink": "symlink", "hardlink": "hardlink", "other_owner": "wrong_owner",
        "group_readable": "bad_mode", "other_principal": "wrong_principal",
        "not_renewable": "not_renewable", "expired": "expired",
        "outside_ccache_dir": "bad_path", "bob_as_alice": "wrong_owner",
        "alice_as_bob": "wrong_owner",
    }, out
    assert bridge_state("alice") == before
    assert bridge_state("bob") == bob_before
    _, lane_after = node_cred("condor-lane", "alice")
    assert lane_after == lane_before, "a refused cache changed the lane credd's copy"


def test_bob_cannot_store_or_read_alices_credential(site):
    alice, _, _ = login("alice")
    bob, _, _ = login("bob")
    alice_cc, alice_mtime = node_cred("condor-lane", "alice")

    # the hub API: bob sees his own state only, whatever he asks for
    for path in ("/batch/credential", "/batch/credential?user=alice",
                 "/batch/credential/alice"):
        r = bob.api("GET", path)
        if r.status_code == 200:
            assert r.json()["user"] == "bob" and r.json()["principal"] == "bob@MINI.TEST"
            assert "alice" not in r.text
        else:
            assert r.status_code == 404
    assert bob.api("GET", "/users/alice").status_code in (403, 404)

    # the bridge socket: root only (0660 root:root); bob cannot even connect
    r = site_exec("appliance", "runuser", "-u", "bob", "--", "python3", "-c",
                  "import socket; s = socket.socket(socket.AF_UNIX); "
                  "s.connect('/run/appliance/bridge.sock')", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr

    # the credd: bob with his own Kerberos ticket cannot store for alice (not a CRED_SUPER_USER) ...
    store_for_alice = ("from appliance.credd_bridge.credstore import HTCondorCredStore\n"
                       "try:\n"
                       "    HTCondorCredStore(confirm_timeout=2).put('alice', b'\\x05\\x04' * 64)\n"
                       "    print('STORED')\n"
                       "except Exception as e:\n"
                       "    print('REFUSED', e)\n")
    r = site_exec("appliance", "sh", "-c",
                  "echo bob-pass-2 | KRB5CCNAME=FILE:/tmp/itest-bob.cc kinit bob >/dev/null && "
                  "chown bob /tmp/itest-bob.cc && runuser -u bob -- env KRB5CCNAME=FILE:/tmp/itest-bob.cc "
                  "CONDOR_CONFIG=/etc/appliance/condor/condor_config "
                  "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=KERBEROS "
                  f"{PY} -c \"$0\"; rm -f /tmp/itest-bob.cc", store_for_alice)
    assert "REFUSED" in r.stdout and "not allowed" in r.stdout, r.stdout + r.stderr
    # ... nor can the hub's own identity (hubsvc: queue super user, not a credential super user)
    r = site_exec("appliance", *HUB_ENV, PY, "-c", store_for_alice)
    assert "REFUSED" in r.stdout and "not allowed" in r.stdout, r.stdout + r.stderr
    assert "credbridge" in site_exec("condor-lane", "condor_config_val", "CRED_SUPER_USERS").stdout
    assert site_exec("condor-lane", "condor_config_val", "CRED_SUPER_USERS").stdout.split() == [
        "credbridge"]
    _, after = node_cred("condor-lane", "alice")
    assert after == alice_mtime

    # the credential files: root only on the credd host
    r = site_exec("condor-lane", "stat", "-c", "%U %a", f"{CRED_DIR}/alice.cred",
                  f"{CRED_DIR}/alice.cc")
    assert r.stdout.split() == ["root", "600", "root", "600"]


def test_spawn_without_usable_credential_fails_at_once(site):
    carol, _, _ = login("carol")
    ensure_stopped(carol)
    jobs_before = lane_jobs("carol")
    # the bridge forgets carol (as after an expiry) and her login's cache is gone
    assert bridge("forget", user="carol")["ok"]
    site_exec("appliance", "sh", "-c", "find /run/appliance/ccache -user carol -delete")
    t0 = time.monotonic()
    r = carol.spawn({"backend": "htcondor"})
    message = r.text
    if r.status_code in (201, 202):  # started in the background: wait for its failure
        deadline = time.monotonic() + 30
        while "" in carol.user_model().get("servers", {}) and time.monotonic() < deadline:
            time.sleep(0.2)
        message = carol.s.get(f"{carol.base}/hub/spawn-pending/carol").text
    took = time.monotonic() - t0
    print(f"spawn without a credential refused after {took:.2f} s")
    assert took < 10
    assert "log in again" in message, message[:2000]
    assert "" not in carol.user_model().get("servers", {})
    assert lane_jobs("carol") == jobs_before
    # the home page says so too
    view = carol.api("GET", "/batch/credential").json()
    assert not view["usable"] and "log in again" in view["warning"]
    # logging in again fixes it
    carol2, _, _ = login("carol")
    assert carol2.api("GET", "/batch/credential").json()["usable"]
