"""``appliance-probe``: a blackbox check of the whole path a user takes.

Logs in through the public URL with the real login form (so PAM creates the Kerberos ticket, as
for a person), starts a server with the given options, checks the Kerberos ticket inside the job
(``klist`` run in a kernel), runs a cell, stops the server, and prints each phase's time. Exit 0
when every phase passed, 1 naming the failing phase (2: bad usage). The password is read from a
file (``--password-file``), never from the command line. ``--textfile`` writes the result in
Prometheus text format (node_exporter's textfile collector) atomically.

Phases: ``login`` (form login + a short-lived API token), ``spawn`` (request to server ready, with
the spawner's own progress messages), ``ticket``, ``cell``, ``stop``. Cron and CI use:
docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Optional
from urllib.parse import urljoin, urlparse

PHASES = ("login", "spawn", "ticket", "cell", "stop")

TICKET_CODE = r"""
import json, subprocess
r = subprocess.run(["klist"], capture_output=True, text=True)
s = subprocess.run(["klist", "-s"]).returncode
print("PROBE" + json.dumps({"rc": r.returncode, "valid": s == 0, "out": r.stdout[-2000:],
                            "err": r.stderr[-500:]}))
"""


class PhaseFailed(Exception):
    def __init__(self, phase: str, message: str):
        super().__init__(f"{phase}: {message}")
        self.phase = phase
        self.message = message


class Probe:
    def __init__(self, url: str, user: str, password: str, options: dict, *,
                 ca: Optional[str] = None, insecure: bool = False, check_ticket: bool = True,
                 spawn_timeout: float = 300, timeout: float = 60,
                 clock: Callable[[], float] = time.monotonic, out=sys.stdout):
        import requests

        self.base = url.rstrip("/")
        self.user = user
        self.password = password
        self.options = options
        self.check_ticket = check_ticket
        self.spawn_timeout = spawn_timeout
        self.timeout = timeout
        self.clock = clock
        self.out = out
        self.s = requests.Session()
        self.s.trust_env = False
        self.verify: Any = False if insecure else (ca or True)
        self.s.verify = self.verify
        self.token: Optional[str] = None
        self.token_id: Optional[str] = None
        self.server_url: Optional[str] = None
        self.times: dict[str, float] = {}
        self.spawn_messages: list[str] = []

    # ------------------------------------------------------------------ helpers
    def api(self, method: str, path: str, **kw):
        headers = kw.pop("headers", {})
        headers["Authorization"] = f"token {self.token}"
        return self.s.request(method, f"{self.base}/hub/api{path}", headers=headers,
                              timeout=kw.pop("timeout", self.timeout), **kw)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ phases
    def login(self) -> None:
        r = self.s.get(f"{self.base}/hub/login", timeout=self.timeout)
        if r.status_code != 200:
            raise PhaseFailed("login", f"login page answered HTTP {r.status_code}")
        m = re.search(r'name="_xsrf"\s+value="([^"]+)"', r.text)
        data = {"username": self.user, "password": self.password}
        if m:
            data["_xsrf"] = m.group(1)
        r = self.s.post(f"{self.base}/hub/login?next=", data=data, allow_redirects=False,
                        timeout=self.timeout)
        if r.status_code not in (302, 303):
            raise PhaseFailed("login", f"login refused (HTTP {r.status_code}); check the probe "
                              "account's password and the KDC")
        xsrf = self.s.cookies.get("_xsrf", path="/hub/") or self.s.cookies.get("_xsrf") or ""
        r = self.s.post(f"{self.base}/hub/api/users/{self.user}/tokens",
                        json={"note": f"appliance-probe {uuid.uuid4().hex[:6]}",
                              "expires_in": int(self.spawn_timeout + 600)},
                        headers={"X-XSRFToken": xsrf}, timeout=self.timeout)
        if r.status_code not in (200, 201):
            raise PhaseFailed("login", f"could not get an API token (HTTP {r.status_code})")
        self.token = r.json()["token"]
        self.token_id = r.json().get("id")

    def _server(self) -> Optional[dict]:
        r = self.api("GET", f"/users/{self.user}")
        r.raise_for_status()
        return (r.json().get("servers") or {}).get("")

    def spawn(self) -> None:
        if self._server():
            raise PhaseFailed("spawn", "the probe account already has a server running; stop "
                              "it first (or use a dedicated probe account)")
        r = self.api("POST", f"/users/{self.user}/server", json=self.options, timeout=120)
        if r.status_code >= 400:
            try:
                msg = r.json().get("message")
            except ValueError:
                msg = r.text[:300]
            raise PhaseFailed("spawn", f"spawn refused (HTTP {r.status_code}): {msg}")
        deadline = self.clock() + self.spawn_timeout
        # The progress stream carries the spawner's own words (queue reason, hold reason ...).
        with self.api("GET", f"/users/{self.user}/server/progress", stream=True,
                      timeout=(self.timeout, self.spawn_timeout)) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if self.clock() > deadline:
                    break
                if not line or not line.startswith("data:"):
                    continue
                ev = json.loads(line[5:])
                if ev.get("message"):
                    self.spawn_messages.append(ev["message"])
                if ev.get("failed"):
                    raise PhaseFailed("spawn", ev.get("message") or "spawn failed")
                if ev.get("ready"):
                    self.server_url = urljoin(self.base + "/", ev.get("url") or f"/user/{self.user}/")
                    return
        srv = self._server()
        if srv and srv.get("ready"):
            self.server_url = urljoin(self.base + "/", srv.get("url") or f"/user/{self.user}/")
            return
        last = self.spawn_messages[-1] if self.spawn_messages else "no progress message"
        raise PhaseFailed("spawn", f"not ready within {self.spawn_timeout:g}s (last: {last})")

    def _execute(self, phase: str, code: str) -> str:
        r = self.s.post(urljoin(self.server_url, "api/kernels"), json={"name": "python3"},
                        headers={"Authorization": f"token {self.token}"}, timeout=self.timeout)
        if r.status_code >= 400:
            raise PhaseFailed(phase, f"could not start a kernel (HTTP {r.status_code})")
        kid = r.json()["id"]
        try:
            return asyncio.run(self._ws_execute(kid, code))
        except PhaseFailed:
            raise
        except Exception as e:
            raise PhaseFailed(phase, f"kernel: {type(e).__name__}: {e}") from None
        finally:
            try:
                self.s.delete(urljoin(self.server_url, f"api/kernels/{kid}"),
                              headers={"Authorization": f"token {self.token}"},
                              timeout=self.timeout)
            except Exception:
                pass

    async def _ws_execute(self, kid: str, code: str) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        u = urlparse(urljoin(self.server_url, f"api/kernels/{kid}/channels"))
        ws_url = u._replace(scheme="wss" if u.scheme == "https" else "ws").geturl()
        ctx = None
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)
            if self.verify is False:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        req = HTTPRequest(ws_url, headers={"Authorization": f"token {self.token}"},
                          ssl_options=ctx, request_timeout=self.timeout,
                          connect_timeout=self.timeout)
        ws = await asyncio.wait_for(websocket_connect(req), self.timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "username": self.user, "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            out: list[str] = []
            deadline = self.clock() + self.timeout
            while self.clock() < deadline:
                raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - self.clock()))
                if raw is None:
                    break
                m = json.loads(raw)
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                t = m.get("msg_type")
                if t == "stream":
                    out.append(m["content"]["text"])
                elif t == "execute_result":
                    out.append(m["content"]["data"].get("text/plain", ""))
                elif t == "error":
                    raise RuntimeError(m["content"].get("ename", "error") + ": "
                                       + m["content"].get("evalue", ""))
                elif t == "status" and m["content"]["execution_state"] == "idle":
                    return "".join(out)
            raise TimeoutError(f"no answer from the kernel within {self.timeout:g}s")
        finally:
            ws.close()

    def ticket(self) -> None:
        text = self._execute("ticket", TICKET_CODE)
        m = re.search(r"PROBE(\{.*\})", text)
        if not m:
            raise PhaseFailed("ticket", "klist gave no answer in the job")
        info = json.loads(m.group(1))
        principal = re.search(r"Default principal:\s*(\S+)", info.get("out", ""))
        if info.get("rc") != 0 or not principal:
            raise PhaseFailed("ticket", "no Kerberos ticket in the job: "
                              + (info.get("err") or info.get("out") or "").strip()[:200])
        if principal.group(1).split("@")[0] != self.user:
            raise PhaseFailed("ticket", f"the job holds a ticket of {principal.group(1)}")
        if not info.get("valid"):
            raise PhaseFailed("ticket", f"the ticket of {principal.group(1)} in the job has expired")

    def cell(self) -> None:
        text = self._execute("cell", "print(6 * 7)")
        if text.strip() != "42":
            raise PhaseFailed("cell", f"cell printed {text.strip()[:100]!r}, expected '42'")

    def stop(self) -> None:
        r = self.api("DELETE", f"/users/{self.user}/server")
        if r.status_code not in (202, 204):
            raise PhaseFailed("stop", f"stop answered HTTP {r.status_code}")
        deadline = self.clock() + self.timeout
        while self.clock() < deadline:
            if not self._server():
                self.server_url = None
                return
            time.sleep(0.25)
        raise PhaseFailed("stop", f"server still there after {self.timeout:g}s")

    # ------------------------------------------------------------------ run
    def run(self) -> Optional[PhaseFailed]:
        """All phases in order; returns the failure (None: all passed). Always cleans up."""
        failure = None
        for phase in PHASES:
            if phase == "ticket" and not self.check_ticket:
                continue
            t0 = self.clock()
            try:
                getattr(self, phase)()
            except PhaseFailed as e:
                failure = e
            except Exception as e:  # network errors etc.: still name the phase
                failure = PhaseFailed(phase, f"{type(e).__name__}: {e}")
            self.times[phase] = self.clock() - t0
            status = "ok" if failure is None else "FAILED"
            self.say(f"phase {phase:<7} {self.times[phase]:7.2f} s  {status}")
            if failure is not None:
                break
        self.cleanup(failure)
        return failure

    def cleanup(self, failure: Optional[PhaseFailed]) -> None:
        if self.token is None:
            return
        try:
            if failure is not None and failure.phase != "stop" and self._server():
                self.api("DELETE", f"/users/{self.user}/server")
            if self.token_id:
                self.api("DELETE", f"/users/{self.user}/tokens/{self.token_id}")
        except Exception:
            pass


def textfile(path: str, probe: Probe, failure: Optional[PhaseFailed], now: float,
             labels: Optional[dict] = None) -> None:
    """Write the Prometheus text format for node_exporter's textfile collector (atomically)."""
    lab = dict(labels or {})

    def fmt(extra: dict) -> str:
        items = {**lab, **extra}
        return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(items.items())) + "}" if items else ""

    lines = [
        "# HELP appliance_probe_success 1 if the last probe passed every phase.",
        "# TYPE appliance_probe_success gauge",
        f"appliance_probe_success{fmt({})} {0 if failure else 1}",
        "# HELP appliance_probe_phase_duration_seconds Duration of each phase of the last probe.",
        "# TYPE appliance_probe_phase_duration_seconds gauge",
    ]
    for phase, secs in probe.times.items():
        lines.append(f"appliance_probe_phase_duration_seconds{fmt({'phase': phase})} {secs:.3f}")
    lines += [
        "# HELP appliance_probe_failed_phase 1 for the phase the last probe failed in.",
        "# TYPE appliance_probe_failed_phase gauge",
    ]
    for phase in PHASES:
        lines.append(f"appliance_probe_failed_phase{fmt({'phase': phase})} "
                     f"{1 if failure and failure.phase == phase else 0}")
    lines += [
        "# HELP appliance_probe_last_run_timestamp_seconds When the last probe finished.",
        "# TYPE appliance_probe_last_run_timestamp_seconds gauge",
        f"appliance_probe_last_run_timestamp_seconds{fmt({})} {now:.0f}",
    ]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".probe-", suffix=".prom.tmp")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="appliance-probe", description="Blackbox login-spawn-ticket-cell-stop probe.")
    ap.add_argument("--url", default=os.environ.get("APPLIANCE_PUBLIC_URL", "https://localhost:8443"),
                    help="public URL of the hub (default: $APPLIANCE_PUBLIC_URL)")
    ap.add_argument("--user", required=True, help="probe account")
    ap.add_argument("--password-file", required=True,
                    help="file holding the probe account's password (first line)")
    ap.add_argument("--options", default="{}",
                    help='user options as JSON, e.g. \'{"backend": "slurm", "partition": "jhub"}\'')
    ap.add_argument("--options-file", help="user options from a JSON file (instead of --options)")
    ap.add_argument("--ca", help="CA bundle for the hub's certificate")
    ap.add_argument("--insecure", action="store_true", help="do not verify TLS (testing only)")
    ap.add_argument("--no-ticket", action="store_true",
                    help="skip the Kerberos ticket check (backends without credentials)")
    ap.add_argument("--spawn-timeout", type=float, default=300)
    ap.add_argument("--timeout", type=float, default=60, help="per-request/phase timeout")
    ap.add_argument("--textfile", help="also write Prometheus text format to this file")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # the demo's https://hub.localhost and https://<user>.hub.localhost are loopback (RFC 6761)
    from appliance import localnames
    localnames.install()
    try:
        with open(args.password_file) as f:
            password = f.readline().rstrip("\n")
        if args.options_file:
            with open(args.options_file) as f:
                options = json.load(f)
        else:
            options = json.loads(args.options)
        if not isinstance(options, dict):
            raise ValueError("options must be a JSON object")
    except (OSError, ValueError) as e:
        print(f"appliance-probe: {e}", file=sys.stderr)
        return 2
    probe = Probe(args.url, args.user, password, options, ca=args.ca, insecure=args.insecure,
                  check_ticket=not args.no_ticket, spawn_timeout=args.spawn_timeout,
                  timeout=args.timeout)
    t0 = time.monotonic()
    failure = probe.run()
    total = time.monotonic() - t0
    if failure is None:
        print(f"appliance-probe: OK in {total:.2f} s")
    else:
        print(f"appliance-probe: FAILED in phase {failure.phase}: {failure.message}")
    if args.textfile:
        textfile(args.textfile, probe, failure, time.time(),
                 {"user": args.user, "backend": options.get("backend", "default")})
    if args.json:
        print(json.dumps({"ok": failure is None, "failed_phase": failure.phase if failure else None,
                          "message": failure.message if failure else None,
                          "phases": {k: round(v, 3) for k, v in probe.times.items()},
                          "total": round(total, 3)}))
    return 0 if failure is None else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
