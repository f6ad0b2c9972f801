"""Shared fixtures: a client for the running appliance (the mini site `make test` brings up)."""

from __future__ import annotations

import csv
import json
import os
import re
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from appliance import localnames

# The hub is https://hub.localhost:<port>, each user's server https://<user>.hub.localhost:<port>
# (an origin per user, appliance/publicorigin.py): names under .localhost are loopback here too.
localnames.install()
ROOT = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("JBA_PROJECT", "jba")  # compose project of the mini site under test
SITE_URL = os.environ.get("APPLIANCE_URL", "https://hub.localhost:8443")
HTTP_URL = f"http://localhost:{os.environ.get('JBA_HTTP_PORT', '8080')}"  # redirects only
ARTIFACTS = ROOT / "tests" / "artifacts"


def demo_users() -> dict[str, dict]:
    with open(ROOT / "demo" / "users.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["user"]: r for r in rows}


def podman(*args: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "containers.conf"))
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=timeout, env=env, input=input)


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def site_exec(service: str, *cmd: str, check: bool = True, timeout: float = 120,
              input: str | None = None) -> subprocess.CompletedProcess:
    """A command in one of the mini site's containers; ``input`` goes to its stdin (secrets such
    as passwords travel there, never on a command line)."""
    if input is not None:
        return podman("exec", "-i", container(service), *cmd, check=check, timeout=timeout,
                      input=input)
    return podman("exec", container(service), *cmd, check=check, timeout=timeout)


def image(name: str) -> str:
    """The mini site's image for ``name`` ("appliance" or "minisite"), as `make up` tagged it."""
    return f"localhost/jba-{name}:{os.environ.get('JBA_TAG', 'latest')}"


# Secrets the tests create or see (API tokens, ...). The last test of the session
# (tests/integration/test_zz_no_secrets_in_logs.py) checks that none of them is in any log.
SECRETS_SEEN: dict[str, str] = {}


def record_secret(what: str, value: str) -> None:
    if value:
        SECRETS_SEEN[what] = value


# The login ticket caches the tests' logins made (path -> bytes), read right after each login:
# they end at logout (docs/security.md), so the secret scan takes the tickets to look for from here.
LOGIN_CACHES_SEEN: dict[str, bytes] = {}


def record_login_caches(user: str) -> None:
    import base64

    uid = demo_users().get(user, {}).get("uid")
    if not uid:
        return
    r = site_exec("appliance", "sh", "-c", f"for f in /run/appliance/ccache/krb5cc_{uid}_*; do "
                  "[ -f \"$f\" ] && echo \"$f $(base64 -w0 \"$f\")\"; done; true", check=False)
    for line in r.stdout.splitlines():
        path, _, data = line.partition(" ")
        if data:
            LOGIN_CACHES_SEEN[path] = base64.b64decode(data)


_CA: list[str] = []


LOCAL_CA = "/srv/appliance/public/appliance-ca.crt"  # the demo's local CA (appliance/tlsdemo.py)


def ca_bundle() -> str:
    """The appliance's local CA (which signed the demo certificate), so tests verify TLS for real
    (a site's mounted certificate instead: that certificate itself)."""
    if not _CA:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pem = site_exec("appliance", "sh", "-c",
                        f"cat {LOCAL_CA} 2>/dev/null || cat /srv/appliance/tls/active/tls.crt").stdout
        path = ARTIFACTS / "appliance-ca.pem"
        path.write_text(pem)
        _CA.append(str(path))
    return _CA[0]


def refresh_ca() -> str:
    """Read the appliance's CA again into the same file (after a test replaced the state volume,
    which holds it); clients made before keep the path and verify with the new CA."""
    _CA.clear()
    return ca_bundle()


def wait_for(what: str, predicate, timeout: float = 30, interval: float = 0.2):
    """Poll ``predicate()`` until it returns something truthy (a readiness check, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def user_origin(base: str, user: str) -> str:
    """``https://<user>.<hub host>[:port]`` for the hub at ``base`` (JupyterHub's idna subdomain
    hook: plain lower-case names map to themselves)."""
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{user}.{rest.split('/', 1)[0]}"


def service_origin(base: str, service: str) -> str:
    """``https://<service>--service.<hub host>[:port]``: a hub service's own origin."""
    return user_origin(base, f"{service}--service")


class HubClient:
    """A logged-in browser-like session plus an API token, over the real HTTPS front."""

    def __init__(self, base: str = SITE_URL):
        import requests

        self.base = base
        self.s = requests.Session()
        self.s.trust_env = False  # REQUESTS_CA_BUNDLE etc. of the host must not override verify
        self.s.verify = ca_bundle()
        self.user = None
        self.token = None

    def login(self, user: str, password: str) -> "requests.Response":
        r = self.s.get(f"{self.base}/hub/login")
        r.raise_for_status()
        m = re.search(r'name="_xsrf"\s+value="([^"]+)"', r.text)
        data = {"username": user, "password": password}
        if m:
            data["_xsrf"] = m.group(1)
        r = self.s.post(f"{self.base}/hub/login?next=", data=data, allow_redirects=False)
        if r.status_code in (301, 302, 303):
            self.user = user
            if self.base == SITE_URL:
                record_login_caches(user)
        return r

    def xsrf(self) -> str:
        return self.s.cookies.get("_xsrf", path="/hub/") or self.s.cookies.get("_xsrf") or ""

    def make_token(self) -> str:
        r = self.s.post(f"{self.base}/hub/api/users/{self.user}/tokens",
                        json={"note": f"test-{uuid.uuid4().hex[:6]}", "expires_in": 7200},
                        headers={"X-XSRFToken": self.xsrf()})
        r.raise_for_status()
        self.token = r.json()["token"]
        record_secret(f"API token of {self.user} ({len(SECRETS_SEEN)})", self.token)
        return self.token

    def api(self, method: str, path: str, **kw):
        import requests

        headers = kw.pop("headers", {})
        headers["Authorization"] = f"token {self.token}"
        return self.s.request(method, f"{self.base}/hub/api{path}", headers=headers,
                              timeout=kw.pop("timeout", 60), cookies={}, **kw)

    def user_model(self) -> dict:
        r = self.api("GET", f"/users/{self.user}")
        r.raise_for_status()
        return r.json()

    def spawn(self, options: dict):
        return self.api("POST", f"/users/{self.user}/server", json=options, timeout=120)

    def wait_ready(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            srv = self.user_model().get("servers", {}).get("")
            if srv and srv.get("ready"):
                return srv
            if not srv:
                raise AssertionError("server vanished while waiting (spawn failed)")
            time.sleep(0.25)
        raise AssertionError(f"server not ready within {timeout}s")

    def stop(self, timeout: float = 60) -> None:
        r = self.api("DELETE", f"/users/{self.user}/server")
        assert r.status_code in (202, 204, 400), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "" not in self.user_model().get("servers", {}):
                return
            time.sleep(0.25)
        raise AssertionError("server did not stop")

    def user_api(self, method: str, path: str, **kw):
        import requests

        owner = kw.pop("owner", None)
        with requests.Session() as s:
            s.trust_env = False
            return s.request(method, self.user_url(path, owner),
                             headers={"Authorization": f"token {self.token}"}, verify=ca_bundle(),
                             timeout=kw.pop("timeout", 60), **kw)

    def user_url(self, path: str = "", owner: str | None = None) -> str:
        """URL of ``path`` on ``owner``'s server (default: this client's user), on that user's
        own origin ``https://<owner>.<hub host>[:port]``."""
        return f"{user_origin(self.base, owner or self.user)}/user/{owner or self.user}{path}"

    def _ws(self, url_path: str, timeout: float, owner: str | None = None):
        import websocket

        url = self.user_url(url_path, owner).replace("https://", "wss://", 1)
        return websocket.create_connection(url, header=[f"Authorization: token {self.token}"],
                                           sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": ca_bundle()},
                                           timeout=timeout)

    def kernel(self, timeout: float = 60, name: str = "python3") -> "Kernel":
        """A new kernel (of kernelspec ``name``) in the user's server, kept until ``close()`` (or
        the ``with`` block ends)."""
        r = self.user_api("POST", "/api/kernels", json={"name": name})
        r.raise_for_status()
        kid = r.json()["id"]
        return Kernel(self, kid, self._ws(f"/api/kernels/{kid}/channels", timeout))

    def run_code(self, code: str, timeout: float = 60) -> str:
        """Start a kernel through the proxy, execute code over the websocket, return its output."""
        with self.kernel(timeout) as k:
            return k.run(code, timeout)

    def run_terminal(self, command: str, timeout: float = 60) -> str:
        """Run a shell command in a new JupyterLab terminal (terminado websocket); its output."""
        r = self.user_api("POST", "/api/terminals")
        r.raise_for_status()
        name = r.json()["name"]
        marker = uuid.uuid4().hex
        ws = self._ws(f"/terminals/websocket/{name}", timeout)
        try:
            # The end marker is printed by the shell, not echoed: it is split in the command line.
            ws.send(json.dumps(["stdin", f"{command}; echo {marker[:8]}\"\"{marker[8:]} $?\r"]))
            out, deadline = [], time.monotonic() + timeout
            while time.monotonic() < deadline:
                m = json.loads(ws.recv())
                if m[0] == "stdout":
                    out.append(m[1])
                    text = "".join(out)
                    found = re.search(marker + r" (\d+)", text)
                    if found:
                        return text[:found.start()] + f"[exit {found.group(1)}]"
            raise AssertionError(f"terminal command did not finish within {timeout}s: {''.join(out)[-2000:]}")
        finally:
            ws.close()
            self.user_api("DELETE", f"/api/terminals/{name}")


class Kernel:
    """One kernel of a user's server: ``run(code)`` executes a cell and returns its output."""

    def __init__(self, client: HubClient, kernel_id: str, ws):
        self.client, self.id, self.ws = client, kernel_id, ws
        self.session = uuid.uuid4().hex

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, code: str, timeout: float = 60) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.settimeout(timeout)
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.client.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        out = []
        busy_seen = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = json.loads(self.ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = m["msg_type"]
            if t == "stream":
                out.append(m["content"]["text"])
            elif t in ("execute_result", "display_data"):
                out.append(m["content"]["data"].get("text/plain", ""))
            elif t == "error":
                raise AssertionError("kernel error: " + "\n".join(m["content"]["traceback"])
                                     + ("\noutput before the error:\n" + "".join(out)[-3000:] if out else ""))
            elif t == "status" and m["content"]["execution_state"] == "busy":
                busy_seen = True
            elif t == "status" and m["content"]["execution_state"] == "idle" and busy_seen:
                return "".join(out)
        raise AssertionError(f"cell did not finish within {timeout}s; output so far: {''.join(out)[-2000:]}")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            try:
                self.client.user_api("DELETE", f"/api/kernels/{self.id}")
            except Exception:
                pass


@pytest.fixture(scope="session")
def site():
    """The running mini site; fail clearly when it is not up."""
    import requests

    try:
        s = requests.Session()
        s.trust_env = False
        r = s.get(f"{SITE_URL}/hub/health", verify=ca_bundle(), timeout=10)
        r.raise_for_status()
    except Exception as e:
        pytest.fail(f"mini site not reachable at {SITE_URL} ({e}); run `make test` or `make demo`")
    return SITE_URL


@pytest.fixture(scope="session")
def users():
    return demo_users()


@pytest.fixture
def client_for(site, users):
    clients = []

    def make(user: str) -> HubClient:
        c = HubClient(site)
        r = c.login(user, users[user]["password"])
        assert r.status_code == 302, f"login of {user} failed: {r.status_code}"
        c.make_token()
        clients.append(c)
        return c

    yield make


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes minutes (real 2-minute Kerberos tickets); still part of make test")
    config.addinivalue_line(
        "markers", "last: runs after every other test of the session (it checks what they left)")
    config.addinivalue_line(
        "markers", "replaces_appliance: runs at the very end, after the `last` tests (it replaces "
        "the appliance container, its state volume and the hub database: the upgrade test)")


def pytest_collection_modifyitems(config, items):
    # Unit tests first, then integration, then browser: cheap failures surface first. Tests
    # marked `last` (the scan of every log for the run's secrets) come after everything else, and
    # the upgrade test (`replaces_appliance`: a new container, state volume and database) after them.
    order = {"unit": 0, "integration": 1, "browser": 2}
    items.sort(key=lambda it: (it.get_closest_marker("replaces_appliance") is not None,
                               it.get_closest_marker("last") is not None,
                               order.get(Path(str(it.fspath)).parent.name, 1)))
