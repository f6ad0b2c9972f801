"""Floor probe, run ON an execute node as an ordinary user (no scheduler, no hub involved).

Starts the same Jupyter server the notebook jobs run, from the node's /opt/jupyter environment, on
a free port and times process start -> first HTTP 200 from its /api, polling every 20 ms:

  mode "lab":        `jupyter lab` (JupyterLab on jupyter_server, no hub at all);
  mode "singleuser": `jupyterhub-singleuser`, exactly what appliance-launch execs in a job, against
                     a dummy hub in this process (answers the startup version check and activity
                     posts at once), so only the server's own start is timed.

Prints one JSON line: {"mode": ..., "start_to_ready_s": ..., "cpu_s": ..., "ok": true|false}.
Usage: floor_probe.py MODE [BIN_DIR] [TIMEOUT]. Stdlib only; copied to the node by bench.py.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_VERSION = "6.1.1"


class DummyHub(BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps({"version": HUB_VERSION}).encode()
        self.send_response(200)
        self.send_header("X-JupyterHub-Version", HUB_VERSION)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


def start_dummy_hub() -> int:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), DummyHub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "lab"
    bindir = sys.argv[2] if len(sys.argv) > 2 else "/opt/jupyter/bin"
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 30
    port = free_port()
    env = dict(os.environ)
    user = env.get("USER") or os.getlogin()
    if mode == "lab":
        prefix = "/"
        cmd = [os.path.join(bindir, "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password="]
    else:
        prefix = f"/user/{user}/"
        hub_port = start_dummy_hub()
        env.update({
            "JUPYTERHUB_API_TOKEN": "floor-probe-dummy-token",
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_SERVER_NAME": "",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_ACTIVITY_URL": f"http://127.0.0.1:{hub_port}/hub/api/users/{user}/activity",
            "JUPYTERHUB_DEFAULT_URL": "/lab",
        })
        cmd = [os.path.join(bindir, "jupyterhub-singleuser")]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=os.path.expanduser("~"))
    ok = False
    try:
        while time.monotonic() - t0 < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}api", timeout=2) as r:
                    if r.status == 200:
                        ok = True
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        dt = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    # cpu_s: CPU seconds the server used from start to its shutdown (start dominates): what N
    # servers starting at once need from the node's cores.
    print(json.dumps({"mode": mode, "start_to_ready_s": round(dt, 3), "cpu_s": round(cpu, 3), "ok": ok}))


if __name__ == "__main__":
    main()
