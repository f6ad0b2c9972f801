"""The node launcher: private env file handling and port picking."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from appliance import launcher


def write(path, data, mode=0o600):
    with open(path, "w") as f:
        json.dump(data, f)
    os.chmod(path, mode)


def test_reads_and_deletes(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"JUPYTERHUB_API_TOKEN": "t", "A": "1"})
    assert launcher.read_env_file(str(p)) == {"JUPYTERHUB_API_TOKEN": "t", "A": "1"}
    assert not p.exists()


def test_refuses_group_readable(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"A": "1"}, 0o640)
    with pytest.raises(SystemExit):
        launcher.read_env_file(str(p))


def test_refuses_symlink(tmp_path):
    p = tmp_path / "real.json"
    write(p, {"A": "1"})
    link = tmp_path / "env.json"
    link.symlink_to(p)
    with pytest.raises(OSError):
        launcher.read_env_file(str(link))


def test_refuses_bad_names(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"A B": "1"})
    with pytest.raises(SystemExit):
        launcher.read_env_file(str(p))


def test_pick_port_skips_busy():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    busy = s.getsockname()[1]
    try:
        with pytest.raises(SystemExit):
            launcher.pick_port(busy, busy)
        port = launcher.pick_port(busy, busy + 5)
        assert busy < port <= busy + 5
    finally:
        s.close()


def test_parse_range():
    assert launcher.parse_range("40000-41000") == (40000, 41000)
    for bad in ("41000-40000", "80-90", "a-b", "40000"):
        with pytest.raises(Exception):
            launcher.parse_range(bad)


# -- the listening socket must be the job's own (issue 9, hole 2) ----------------------------
# Real sockets, real /proc. "Another user" is a process running as uid OTHER_UID (needs root,
# which CI and the development machines have).
OTHER_UID = 2004  # mallory in demo/users.tsv; any uid other than ours works
LISTEN = ("import os, socket, sys, time; s = socket.socket(); "
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind(('0.0.0.0', int(sys.argv[1]) if len(sys.argv) > 1 else "
          "int(os.environ['JUPYTERHUB_SERVICE_URL'].rsplit(':', 1)[1].split('/')[0]))); "
          "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)")


def free_port() -> int:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def held_port():
    """A port another uid listens on (the hostile user's process on a shared node)."""
    # the system Python: the other uid may not read the test venv
    proc = subprocess.Popen(["/usr/bin/python3", "-c", LISTEN, "0"], stdout=subprocess.PIPE,
                            user=OTHER_UID, text=True, cwd="/")
    port = int(proc.stdout.readline())
    yield port
    proc.kill()
    proc.wait()


def test_port_owner_names_another_uid(held_port):
    assert (OTHER_UID, ) == tuple({uid for uid, _ in launcher.listeners(held_port)})
    assert launcher.port_owner(held_port, os.getuid(), os.getpid()) == ("foreign", OTHER_UID)


def test_port_owner_is_ours_only_for_the_childs_own_socket():
    proc = subprocess.Popen([sys.executable, "-c", LISTEN, "0"], stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        port = int(proc.stdout.readline())
        assert launcher.port_owner(port, os.getuid(), proc.pid) == ("ours", os.getuid())
        # the same uid's socket, but not in the tree of the process the launcher started
        assert launcher.port_owner(port, os.getuid(), other.pid) == ("none", None)
        assert launcher.port_owner(free_port(), os.getuid(), proc.pid) == ("none", None)
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


class FakeHub:
    """The hub's port-report endpoint on loopback; records what the launcher reports."""

    def __init__(self):
        import http.server
        import threading

        reports = self.reports = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def run_launcher(tmp_path, hub, ports, attempts=3, server=LISTEN, extra=()):
    """appliance-launch in a subprocess whose pick_port yields ``ports`` in turn; the "server"
    listens on the port from JUPYTERHUB_SERVICE_URL (as jupyterhub-singleuser does)."""
    env_file = tmp_path / "env.json"
    write(env_file, {"JUPYTERHUB_API_URL": hub.url, "JUPYTERHUB_API_TOKEN": "t"})
    driver = (f"import sys; from appliance import launcher; ports = iter({ports!r}); "
              "launcher.pick_port = lambda lo, hi: next(ports); "
              f"launcher.main(['--env-file', {str(env_file)!r}, '--port-range', '40000-41000', "
              f"'--port-attempts', '{attempts}', '--start-timeout', '20', *{list(extra)!r}, "
              f"'--', {sys.executable!r}, '-c', {server!r}])")
    proc = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(launcher.__file__)))
    return proc


def test_launcher_skips_a_port_another_uid_took_and_reports_its_own(tmp_path, held_port):
    hub, mine = FakeHub(), free_port()
    proc = run_launcher(tmp_path, hub, [held_port, mine])
    try:
        text = _until_reported(proc, hub)
        assert f"port {held_port} is held by uid {OTHER_UID}" in text
        assert f"listens on port {mine}" in text
        assert hub.reports == [{"port": mine}]
        assert launcher.port_owner(mine, os.getuid(), proc.pid)[0] == "ours"
    finally:
        proc.terminate()
        proc.wait(10)
        hub.close()


def test_launcher_fails_clearly_when_other_uids_hold_every_try(tmp_path, held_port):
    hub = FakeHub()
    proc = run_launcher(tmp_path, hub, [held_port] * 3)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        hub.close()
    assert proc.returncode != 0 and hub.reports == []
    assert err.count(f"port {held_port} is held by uid {OTHER_UID}") == 3
    assert "3 ports of the range were taken by other users' processes" in err


def _until_reported(proc, hub) -> str:
    """The launcher's stderr until it says it reports, once the (fake) hub has the report."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "reporting" in line:
            break
    deadline = time.monotonic() + 10
    while not hub.reports and time.monotonic() < deadline:
        time.sleep(0.01)
    return "".join(seen)


def test_a_server_that_ignores_the_stop_signal_is_killed_after_the_stop_timeout(tmp_path):
    """The scheduler's SIGTERM reaches the server; one that hangs in its shutdown (seen: "Shutting
    down 8 extensions" for 10 min, holding its lane slot) is killed after --stop-timeout."""
    hub, port = FakeHub(), free_port()
    deaf = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + LISTEN
    proc = run_launcher(tmp_path, hub, [port], server=deaf, extra=("--stop-timeout", "1"))
    try:
        text = _until_reported(proc, hub)
        server_pid = int(text.split("server (pid ")[1].split(",")[0])
        t0 = time.monotonic()
        proc.terminate()  # what the starter / slurmstepd does
        _, err = proc.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        hub.close()
    assert proc.returncode == 128 + signal.SIGKILL, (proc.returncode, err)
    assert 0.9 <= took < 5, took
    assert f"the server (pid {server_pid}) did not exit within 1 s of the stop signal: killed" in err
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)


def test_a_server_that_stops_in_time_is_not_killed(tmp_path):
    hub, port = FakeHub(), free_port()
    proc = run_launcher(tmp_path, hub, [port], extra=("--stop-timeout", "5"))
    try:
        _until_reported(proc, hub)
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        hub.close()
    # the stand-in server dies of the forwarded SIGTERM: the launcher exits with its status
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
    assert "killed" not in err
