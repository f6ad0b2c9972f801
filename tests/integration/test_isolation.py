"""Issue 9: users cannot reach each other (the parts done so far; docs/security.md, "User isolation").

Each test is the attack, performed on the mini site by the hostile user `mallory`
(demo/users.tsv), and asserts it fails:

* mallory edits her own running lane job's ad (``condor_qedit`` of ``RemoteHost`` and other
  attributes naming a host) to point at a trap listener on the cluster network: the hub's status
  code still routes to the node that runs the job, her route does not change, and nothing connects
  to the trap;
* mallory holds, as her own uid, the port the launcher picks on a shared execute node (IPv6-only,
  which the launcher's IPv4 bind test cannot see): the launcher does not report that port, picks
  another or fails naming her uid;
* from a container on the cluster network that is not the appliance, the hub answers only its
  REST API (the login page is 404) and from the dmz network port 8081 answers nothing.

A job id of another user fed back by the submit helper is refused in
tests/unit/test_spawner.py (test_helper_answering_another_users_job_is_refused): the helper is
root-owned and runs from sudo with a fixed environment, so no mini-site user can make it print
another answer without a code change.
"""

from __future__ import annotations

import json
import shlex
import time
from urllib.parse import urlparse

import pytest

from tests.conftest import SITE_URL, container, podman, site_exec, user_origin, wait_for
from tests.integration.test_perimeter_condor import as_user

pytestmark = pytest.mark.minisite

HOSTILE = "mallory"
LANE = "lane.mini.test"
TRAP_SERVICE, TRAP_HOST = "kdc", "kdc.mini.test"  # on the cluster network, not a node
TRAP_PORT = 40999


def sh(service: str, script: str, check: bool = True, timeout: float = 120, **kw):
    return site_exec(service, "bash", "-c", script, check=check, timeout=timeout, **kw)


def address(service: str, network_hint: str = "") -> str:
    """The service's IPv4 address on the cluster network (its /etc/hosts entry)."""
    return sh(service, f"getent ahostsv4 {shlex.quote(network_hint)} | awk 'NR==1{{print $1}}'"
              ).stdout.strip()


@pytest.fixture
def trap():
    """A TCP listener on the cluster network that records every connection it gets; one canary
    connection from an execute node proves it records (so "no new connection" means something)."""
    log = f"/tmp/jba-isolation-trap-{int(time.time())}.log"
    code = (f"import socket; s = socket.socket(); "
            f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', {TRAP_PORT})); "
            f"s.listen(); f = open({log!r}, 'a', buffering=1)\n"
            f"while True:\n c, a = s.accept(); f.write(repr(a) + '\\n'); c.close()")
    pid = sh(TRAP_SERVICE, f"nohup timeout 900 python3 -c {shlex.quote(code)} >/dev/null 2>&1 & "
                           "echo $!").stdout.strip()

    def hits() -> list[str]:
        r = sh(TRAP_SERVICE, f"cat {log} 2>/dev/null", check=False)
        return [ln for ln in r.stdout.splitlines() if ln.strip()]

    probe = f"exec 3<>/dev/tcp/{TRAP_HOST}/{TRAP_PORT}"
    deadline = time.monotonic() + 15
    while not hits() and time.monotonic() < deadline:  # until the listener is up and records
        sh("condor-exec2", f"timeout 2 bash -c {shlex.quote(probe)}", check=False)
    assert len(hits()) >= 1, "the trap listener records nothing"
    yield hits
    sh(TRAP_SERVICE, f"kill {int(pid)}; rm -f {log}", check=False)


def running_job(user: str) -> str:
    out = sh("condor-lane", f"condor_q -all -constraint 'Owner == \"{user}\" && JobStatus == 2 && "
                            f"IsNotebookJob =?= true' -af ClusterId ProcId").stdout.split()
    return f"{out[0]}.{out[1]}" if len(out) >= 2 else ""


HUB_STATUS = """
import asyncio, json, sys
from appliance.hub.scheduler.htcondor import HTCondorScheduler
s = HTCondorScheduler(collector="lane.mini.test", schedd="lane.mini.test",
                      hub_id="appliance.mini.test")
async def main():
    for _ in range(40):  # the slot ad may lag the schedd by ~1 s
        st = (await s.query_all()).get(sys.argv[1])
        if st is not None and (st.host or st.host_error):
            break
        await asyncio.sleep(0.5)
    print(json.dumps(st and {"state": st.state, "host": st.host, "error": st.host_error,
                             "owner": st.owner}))
asyncio.run(main())
"""


def hub_status(job_id: str) -> dict:
    """The job's status as the hub's code computes it (the hub's identity and config, on the
    appliance), from the real schedd and collector."""
    r = site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", HUB_STATUS, job_id,
                  timeout=60)
    return json.loads(r.stdout.strip().splitlines()[-1])


ROUTES = """
import json, urllib.request
token = open("/srv/appliance/secrets/proxy_token").read().strip()
req = urllib.request.Request("http://127.0.0.1:8001/api/routes",
                             headers={"Authorization": f"token {token}"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
"""


def proxy_target(user: str) -> str:
    """Where CHP sends <user>.<hub host>/user/<user>/ now (its REST API on the appliance's
    loopback; CHP routes by host, the user's own origin)."""
    r = site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", ROUTES, timeout=30)
    routes = json.loads(r.stdout)
    spec = f"/{urlparse(user_origin(SITE_URL, user)).hostname}/user/{user}"
    route = routes.get(spec) or routes.get(spec + "/") or {}
    return route.get("target", "")


def test_edited_job_ad_does_not_move_the_route(client_for, trap):
    c = client_for(HOSTILE)
    c.stop()
    r = c.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    try:
        c.wait_ready()
        job = running_job(HOSTILE)
        assert job, "mallory's notebook job is not running on the lane"
        before = hub_status(job)
        node = before["host"]
        assert before["state"] == "running" and node.startswith("exec") and not before["error"]
        target = proxy_target(HOSTILE)
        assert target.startswith(f"https://{node}:"), target  # internal TLS

        canary = len(trap())  # the fixture's own probe
        trap_addr = address(TRAP_SERVICE, TRAP_HOST)
        forged = f'"slot1@{trap_addr}:{TRAP_PORT}#"'
        edits = {"RemoteHost": forged, "LastRemoteHost": forged,
                 "StartdIpAddr": f'"<{trap_addr}:{TRAP_PORT}>"'}
        for attr, value in edits.items():
            e = as_user(HOSTILE, f"condor_qedit -name {LANE} -pool {LANE} {job} {attr} "
                                 f"{shlex.quote(value)}")
            assert e.returncode == 0, f"mallory could not edit {attr}: {e.stdout}{e.stderr}"
        seen = sh("condor-lane", f"condor_q {job} -af RemoteHost").stdout.strip()
        assert trap_addr in seen, f"the edit did not land: {seen}"
        # the attribute the owner check reads is not hers to edit
        e = as_user(HOSTILE, f"condor_qedit -name {LANE} -pool {LANE} {job} Owner '\"alice\"'")
        assert e.returncode != 0

        after = hub_status(job)
        assert after["host"] == node and not after["error"], after
        assert after["owner"] == HOSTILE
        # the hub keeps checking the route (last_activity_interval = 10 s in the mini site)
        time.sleep(12)
        assert proxy_target(HOSTILE) == target
        c.user_api("GET", "/api/status").raise_for_status()  # her server still answers
        assert len(trap()) == canary, f"something connected to the edited address: {trap()}"
    finally:
        c.stop()


LAUNCH_ON_NODE = r"""
set -u
user=$1 hostile=$2 lo=$3 hi=$4 free=$5
work=$(mktemp -d /tmp/jba-iso.XXXXXX); chmod 755 "$work"
# the hub's report endpoint, on the node's loopback, recording what is reported
cat > "$work/hub.py" <<'PY'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        open(sys.argv[1], "a").write(body.decode() + "\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_port, flush=True)
s.serve_forever()
PY
python3 "$work/hub.py" "$work/reports" > "$work/hubport" & hub=$!
for i in $(seq 50); do [ -s "$work/hubport" ] && break; sleep 0.1; done
# the hostile user's processes: every port of the range but the last, IPv6-only (the launcher's
# IPv4 bind test does not see them; a node resolving to IPv6 would send the route there)
cat > "$work/hold.py" <<'PY'
import socket, sys, time
held = []
free = int(sys.argv[3] or 0)
for port in range(int(sys.argv[1]), int(sys.argv[2]) + 1):
    if port == free:
        continue
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::", port)); s.listen(); held.append(s)
print("held", flush=True)
time.sleep(600)
PY
runuser -u "$hostile" -- python3 "$work/hold.py" "$lo" "$hi" "$free" > "$work/held" & hold=$!
for i in $(seq 50); do [ -s "$work/held" ] && break; sleep 0.1; done
home=$(getent passwd "$user" | cut -d: -f6)
env_file="$home/.jupyterhub-batch/iso-test.json"
runuser -u "$user" -- mkdir -p "$home/.jupyterhub-batch"
printf '{"JUPYTERHUB_API_URL": "http://127.0.0.1:%s/hub/api", "JUPYTERHUB_API_TOKEN": "t"}' \
  "$(cat "$work/hubport")" | runuser -u "$user" -- sh -c "umask 077; cat > $env_file"
server='import os, socket, time; p = int(os.environ["JUPYTERHUB_SERVICE_URL"].rsplit(":", 1)[1].split("/")[0]); s = socket.socket(); s.bind(("0.0.0.0", p)); s.listen(); time.sleep(30)'
runuser -u "$user" -- timeout 60 /usr/local/bin/appliance-launch --env-file "$env_file" \
  --port-range "$lo-$hi" --port-attempts "${ATTEMPTS:-40}" -- python3 -c "$server" \
  > "$work/out" 2> "$work/err" & launcher=$!
for i in $(seq 200); do [ -s "$work/reports" ] && break; kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
sleep 0.3
echo "REPORTS"; cat "$work/reports" 2>/dev/null
echo "ERR"; cat "$work/err"
kill $launcher $hold $hub 2>/dev/null; wait 2>/dev/null
rm -rf "$work" "$env_file"
"""


def launch_on_node(lo: int, hi: int, free: int | None, attempts: int) -> tuple[list[dict], str]:
    """alice's launcher on exec1 with port range lo-hi while mallory holds every port of it
    but ``free``; returns (the port reports the hub got, the launcher's stderr)."""
    r = site_exec("condor-exec1", "env", f"ATTEMPTS={attempts}", "bash", "-c", LAUNCH_ON_NODE,
                  "launch", "alice", HOSTILE, str(lo), str(hi), str(free or ""), timeout=120,
                  check=False)

    reports, err = r.stdout.split("REPORTS\n", 1)[1].split("ERR\n", 1)
    return [json.loads(line) for line in reports.splitlines() if line.strip()], err


def test_port_held_by_another_user_is_never_reported():
    uid = site_exec("condor-exec1", "id", "-u", HOSTILE).stdout.strip()
    # mallory holds 40900..40903; only 40904 is alice's to take
    reports, err = launch_on_node(40900, 40904, free=40904, attempts=40)
    assert reports == [{"port": 40904}], err
    assert "listens on port 40904" in err
    # The launcher tries the range in random order: the free port may come first (1 in 5), so
    # a try of a held port is not certain here (test_launcher_fails_clearly_... makes it so);
    # every one that happened named her uid.
    held = [line for line in err.splitlines() if "is held by uid" in line]
    assert all(f"is held by uid {uid}, not by this job" in line for line in held), err


def test_launcher_fails_clearly_when_every_port_is_held():
    uid = site_exec("condor-exec1", "id", "-u", HOSTILE).stdout.strip()
    # mallory holds 40910, the whole range of this launcher
    reports, err = launch_on_node(40910, 40910, free=None, attempts=3)
    assert reports == [], err
    assert err.count(f"port 40910 is held by uid {uid}") == 3, err
    assert "3 ports of the range were taken by other users' processes" in err


def cluster_get(service: str, url: str, ca: str = "") -> str:
    """HTTP status of GET ``url`` from ``service``'s container, verifying TLS against ``ca``
    (else the system's CAs): "refused", "tls" (certificate not verified) or "timeout" if none."""
    code = ("import ssl, sys, urllib.request, urllib.error\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[2] or None)\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5, context=ctx); print(r.status)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n"
            "except Exception as e:\n"
            " t = str(e).lower()\n"
            " print('refused' if 'refused' in t else 'tls' if 'certificate' in t else 'timeout')")
    return site_exec(service, "python3", "-c", code, url, ca, check=False).stdout.strip()


def cluster_ca_on(service: str) -> str:
    """The appliance's cluster CA (public) copied into ``service``'s container; its path there."""
    pem = site_exec("appliance", "cat", "/srv/appliance/internal-tls/cluster-ca.crt").stdout
    path = "/tmp/jba-cluster-ca.crt"
    site_exec(service, "sh", "-c", f"cat > {path}", input=pem)
    return path


def test_cluster_side_serves_only_the_api_over_tls():
    ca = cluster_ca_on("kdc")
    hub = "https://appliance.mini.test:8444"
    assert cluster_get("kdc", f"{hub}/hub/api/", ca) == "200"  # what nodes need, verified TLS
    assert cluster_get("kdc", f"{hub}/hub/login", ca) == "404"
    assert cluster_get("kdc", f"{hub}/hub/home", ca) == "404"
    assert cluster_get("kdc", f"{hub}/user/alice/", ca) == "404"
    assert cluster_get("kdc", f"{hub}/hub/api/../login", ca) in ("404", "400")
    # plain HTTP to the API fails: 400 on the TLS port, nothing on the old plain port (no server
    # of an earlier release runs, appliance-run hub)
    assert cluster_get("kdc", "http://appliance.mini.test:8444/hub/api/") == "400"
    assert cluster_get("kdc", "http://appliance.mini.test:8081/hub/api/") == "refused"
    # and the certificate is the appliance's: without the cluster CA the client refuses
    assert cluster_get("kdc", f"{hub}/hub/api/") == "tls"


def tcp_open(service: str, host: str, port: int) -> bool:
    """Whether a TCP connection from ``service``'s container to host:port is accepted."""
    r = site_exec(service, "bash", "-c", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}'",
                  check=False)
    return r.returncode == 0


def test_dmz_side_has_no_hub_port():
    # prometheus is on both networks; the appliance's dmz address is the one that is not the
    # cluster one
    addrs = sh("appliance", "hostname -I").stdout.split()
    cluster = address("appliance", "appliance.mini.test")
    dmz = [a for a in addrs if a != cluster and ":" not in a]
    assert dmz, addrs
    assert tcp_open("prometheus", dmz[0], 8443)  # nginx: the one way in
    assert not tcp_open("prometheus", dmz[0], 8081)
    assert not tcp_open("prometheus", dmz[0], 8444)  # the cluster side's TLS API
    assert not tcp_open("prometheus", dmz[0], 8000)  # CHP: loopback only


# -- internal TLS: only alice's own server can answer alice's route (hole 2, rest) ---------------
HOSTILE_TLS_SERVER = r"""
import http.server, os, ssl, sys
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(f"{self.headers.get('Host')} cookie={bool(self.headers.get('Cookie'))}\n")
        body = b"mallory's page"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(os.environ["CA"])
s = http.server.HTTPServer(("0.0.0.0", port), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("up", flush=True)
s.serve_forever()
"""

PROXY_ROUTE = """
import json, sys, urllib.request
token = open("/srv/appliance/secrets/proxy_token").read().strip()
method, spec = sys.argv[1], sys.argv[2]
body = json.dumps({"target": sys.argv[3]}).encode() if method == "POST" else None
req = urllib.request.Request("http://127.0.0.1:8001/api/routes" + spec, data=body, method=method,
                             headers={"Authorization": f"token {token}"})
print(urllib.request.urlopen(req, timeout=10).status)
"""

HUB_PIN = """
import asyncio, logging, sys
from appliance import internaltls
from appliance.hub.job import SpawnError
from appliance.hub.servertls import ServerTLS
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
side = internaltls.cluster_side({"APPLIANCE_CLUSTER_ADDR": "x"}, "appliance.mini.test",
                                "hub.localhost")
tls = ServerTLS("/srv/appliance/internal-tls", list(side.nodes), logging.getLogger("hub"))
issued = tls.issue("alice.hub.localhost", days=1)  # what the hub issues for alice's spawn
try:
    asyncio.run(tls.check(sys.argv[1], int(sys.argv[2]), issued, "alice", timeout=10))
    print("ACCEPTED")
except SpawnError as e:
    print("REFUSED", e)
"""

HIJACK_PORT = 40950


def server_tls_files(user: str) -> tuple[str, dict]:
    """(node service, {CERT, KEY, CA}) of ``user``'s running single-user server: copies, owned by
    her, of the files the launcher wrote from the job's private env file (her own certificate,
    for her own host; the originals sit in the job's private /tmp, HTCondor's
    MOUNT_UNDER_SCRATCH, which she reads from any process of her job)."""
    for node in ("condor-exec1", "condor-exec2"):
        r = sh(node, f"for pid in $(pgrep -u {user} -f jupyterhub-singleuser); do "
                     "tr '\\0' '\\n' < /proc/$pid/environ | grep '^JUPYTERHUB_SSL_' "
                     "&& echo PID=$pid && break; done", check=False)
        env = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
        if not env:
            continue
        d = f"/tmp/jba-hijack-tls-{user}"
        files = {"CERT": f"{d}/cert.pem", "KEY": f"{d}/key.pem", "CA": f"{d}/ca.pem"}
        src = {"CERT": "JUPYTERHUB_SSL_CERTFILE", "KEY": "JUPYTERHUB_SSL_KEYFILE",
               "CA": "JUPYTERHUB_SSL_CLIENT_CA"}
        copy = " && ".join(f"install -o {user} -m 0600 /proc/{env['PID']}/root{env[src[k]]} {v}"
                           for k, v in files.items())
        sh(node, f"rm -rf {d} && install -d -o {user} -m 0700 {d} && {copy}")
        return node, files
    raise AssertionError(f"no running server of {user} with TLS files on the lane's nodes")


def test_only_alices_server_can_answer_alices_route(client_for):
    """mallory, with her own valid server certificate (her running notebook's), serves on a port
    of a shared node; alice's route is pointed at it, as after alice's server died and mallory
    bound its port. CHP refuses the handshake (the name it checks is alice's host), nothing
    reaches mallory's process, and the hub's pin refuses it too, logging the refused certificate.
    Control: the same process answers on mallory's own host."""
    from tests.conftest import ca_bundle

    c = client_for(HOSTILE)
    c.stop()
    assert c.spawn({"backend": "htcondor"}).status_code in (201, 202)
    node = service = log = None
    host_of = {u: urlparse(user_origin(SITE_URL, u)).hostname for u in ("alice", HOSTILE)}
    try:
        c.wait_ready()
        service, files = server_tls_files(HOSTILE)
        node = f"{service.split('-')[-1]}.mini.test"
        log = f"/tmp/jba-hijack-{int(time.time())}.log"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in files.items())
        sh(service, f"touch {log}; chmod 666 {log}; runuser -u {HOSTILE} -- env {env} "
                    f"nohup timeout 300 python3 -c {shlex.quote(HOSTILE_TLS_SERVER)} "
                    f"{HIJACK_PORT} {log} > {log}.out 2>&1 &")
        wait_for("mallory's TLS server", lambda: "up" in sh(service, f"cat {log}.out",
                                                            check=False).stdout, timeout=20)
        target = f"https://{node}:{HIJACK_PORT}"
        for user in ("alice", HOSTILE):
            site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", PROXY_ROUTE, "POST",
                      f"/{host_of[user]}/jba-hijack", target)
        import requests
        s = requests.Session()
        s.trust_env = False
        port = urlparse(SITE_URL).port
        own = s.get(f"https://{host_of[HOSTILE]}:{port}/jba-hijack", verify=ca_bundle(),
                    timeout=30)
        assert own.status_code == 200 and own.text == "mallory's page"  # the control
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        hijacked = s.get(f"https://{host_of['alice']}:{port}/jba-hijack", verify=ca_bundle(),
                         cookies={"jupyterhub-user-alice": "would-be-alices"}, timeout=30)
        assert hijacked.status_code == 503, hijacked.status_code
        assert "mallory's page" not in hijacked.text
        logs = podman("logs", "--since", since, container("appliance"))
        chp_log = logs.stdout + logs.stderr
        assert (f"Host: {host_of['alice']}. is not in the cert's altnames: "
                f"DNS:{host_of[HOSTILE]}") in chp_log, chp_log[-2000:]  # CHP refused the handshake
        seen = sh(service, f"cat {log}").stdout.splitlines()
        assert seen == [f"{host_of[HOSTILE]}:{port} cookie=False"], seen  # only the control
        pin = site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", HUB_PIN, node,
                        str(HIJACK_PORT), timeout=60).stdout
        assert "REFUSED" in pin and "ACCEPTED" not in pin, pin
        assert f"alice: refused certificate from {node}:{HIJACK_PORT}" in pin, pin
    finally:
        for user in ("alice", HOSTILE):
            site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", PROXY_ROUTE, "DELETE",
                      f"/{host_of[user]}/jba-hijack", check=False)
        if service:
            sh(service, f"pkill -u {HOSTILE} -f 'import http.server, os, ssl'; rm -f {log} "
                        f"{log}.out; rm -rf /tmp/jba-hijack-tls-{HOSTILE}", check=False)
        c.stop()
