"""The bridge's socket server and client: protocol, SO_PEERCRED, permissions.

Peer-uid checks use a real Unix socket and a real client process running under
another uid (the tests run as root), so the uid comes from the kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

from appliance.credd_bridge import protocol
from appliance.credd_bridge.bridge import Bridge
from appliance.credd_bridge.client import BridgeClient, BridgeError, BridgeRefused, request_sync
from appliance.credd_bridge.credstore import MemoryCredStore
from appliance.credd_bridge.server import BridgeServer, peer_credentials

from .test_bridge import T0, UIDS, Clock, FlakyStore, put_cache
from .test_ccache import REALM

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, setuid client)")

HUB_UID = 2050
NAMES = {2001: "alice", 2002: "bob", HUB_UID: "hub"}


@pytest.fixture
def world_dir():
    """A directory other uids can traverse (pytest's tmp_path is 0700 root)."""
    d = tempfile.mkdtemp(prefix="bridge-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Running:
    """A BridgeServer on its own event loop thread."""

    def __init__(self, server: BridgeServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(5)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def running(world_dir):
    ccdir = os.path.join(world_dir, "ccache")
    os.mkdir(ccdir)
    store = FlakyStore()
    clock = Clock()
    bridge = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=ccdir, clock=clock,
                    renewer=lambda data: data)
    server = BridgeServer(bridge, os.path.join(world_dir, "bridge.sock"),
                          allowed_uids=[HUB_UID], socket_mode=0o666,
                          user_for_uid=NAMES.get, max_sleep=0.05)
    r = Running(server)
    r.store, r.ccdir, r.path, r.bridge = store, ccdir, server.path, bridge
    yield r
    r.stop()


CLIENT = textwrap.dedent(
    """
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode() + b"\\n")
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    sys.stdout.write(buf.decode())
    """
)


_PYTHON: list = []


def python_for_others() -> str:
    """An interpreter another uid can run (the venv's may live under /root)."""
    if not _PYTHON:
        for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
            if not cand:
                continue
            try:
                subprocess.run([cand, "-I", "-c", "0"], user=2001, group=2001, extra_groups=[],
                               check=True, capture_output=True, timeout=20, cwd="/")
            except (OSError, subprocess.SubprocessError):
                continue
            _PYTHON.append(cand)
            break
        else:
            _PYTHON.append(None)
    if _PYTHON[0] is None:
        pytest.skip("no python interpreter runnable by another uid")
    return _PYTHON[0]


def as_uid(uid: int, path: str, request: dict) -> dict:
    """Send one request from a separate process running as ``uid`` (stdlib-only client)."""
    out = subprocess.run(
        [python_for_others(), "-I", "-c", CLIENT, path, json.dumps(request)],
        user=uid, group=uid, extra_groups=[], capture_output=True, text=True, timeout=20,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------


def test_socket_file_mode_and_type(running):
    st = os.lstat(running.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert st.st_uid == 0


def test_default_socket_mode_is_0660(world_dir):
    server = BridgeServer(Bridge(MemoryCredStore(), realm=REALM),
                          os.path.join(world_dir, "sub", "b.sock"))
    r = Running(server)
    try:
        assert stat.S_IMODE(os.lstat(server.path).st_mode) == 0o660
    finally:
        r.stop()
    assert not os.path.exists(server.path)  # removed on close


def test_refuses_to_replace_a_non_socket(world_dir):
    path = os.path.join(world_dir, "file")
    open(path, "w").close()
    server = BridgeServer(Bridge(MemoryCredStore(), realm=REALM), path)
    with pytest.raises(RuntimeError):
        asyncio.run(server.start())
    assert os.path.isfile(path)


def test_peer_credentials_on_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        pid, uid, gid = peer_credentials(a)
    assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())


def test_root_client_store_state_states(running):
    path = put_cache(running.ccdir, now=T0)
    client = BridgeClient(running.path)

    async def go():
        pong = await client.ping()
        assert pong["peer_uid"] == 0 and pong["privileged"] is True
        state = await client.store("alice", path)
        assert state["state"] == "active" and state["principal"] == f"alice@{REALM}"
        assert (await client.state("alice"))["valid_until"] == T0 + 600
        assert await client.state("bob") is None
        assert set(await client.states()) == {"alice"}
        assert await client.forget("alice") is True
        assert await client.state("alice") is None

    asyncio.run(go())
    assert "alice" in running.store.creds


def test_root_client_ends_a_credential(running):
    path = put_cache(running.ccdir, now=T0)
    client = BridgeClient(running.path)

    async def go():
        await client.store("alice", path)
        return await client.end("alice")

    assert asyncio.run(go()) == {"forgotten": True, "credd_deleted": True, "caches_removed": 1}
    assert "alice" not in running.store.creds and not os.path.exists(path)


def test_client_raises_refused_with_reason(running):
    path = put_cache(running.ccdir, now=T0, principal=f"bob@{REALM}")

    async def go():
        with pytest.raises(BridgeRefused) as e:
            await BridgeClient(running.path).store("alice", path)
        return e.value

    err = asyncio.run(go())
    assert err.code == "wrong_principal"
    assert f"bob@{REALM}" in err.message
    assert running.store.puts == 0


def test_client_reports_credd_error_with_state(running):
    running.store.down = True
    path = put_cache(running.ccdir, now=T0)

    async def go():
        with pytest.raises(BridgeError) as e:
            await BridgeClient(running.path).store("alice", path)
        return e.value

    err = asyncio.run(go())
    assert not isinstance(err, BridgeRefused)
    assert err.code == "credd_error"
    assert err.state["state"] == "retrying"


def test_client_unreachable(world_dir):
    async def go():
        with pytest.raises(BridgeError) as e:
            await BridgeClient(os.path.join(world_dir, "nope.sock"), timeout=2).ping()
        return e.value

    assert asyncio.run(go()).code == "unreachable"


def test_unprivileged_uid_cannot_store(running):
    path = put_cache(running.ccdir, now=T0)
    resp = as_uid(2001, running.path, {"op": "store", "user": "alice", "ccache_path": path})
    assert resp["ok"] is False and resp["error"] == "permission_denied"
    assert running.store.puts == 0
    assert running.bridge.state("alice") is None


def test_unprivileged_uid_sees_only_its_own_state(running):
    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    mine = as_uid(2001, running.path, {"op": "state", "user": "alice"})
    assert mine["ok"] is True and mine["state"]["principal"] == f"alice@{REALM}"
    other = as_uid(2002, running.path, {"op": "state", "user": "alice"})
    assert other == {"ok": False, "error": "permission_denied", "message": other["message"]}
    listing = as_uid(2002, running.path, {"op": "states"})
    assert listing["error"] == "permission_denied"
    forget = as_uid(2002, running.path, {"op": "forget", "user": "alice"})
    assert forget["error"] == "permission_denied"
    for uid in (2001, 2002):  # ending a credential: privileged only, even one's own
        end = as_uid(uid, running.path, {"op": "end", "user": "alice"})
        assert end["error"] == "permission_denied"
    # refresh could write a ticket file: privileged only, even for one's own user
    for uid in (2001, 2002):
        refresh = as_uid(uid, running.path, {"op": "refresh", "user": "alice",
                                             "write_ccache": True})
        assert refresh["error"] == "permission_denied"
    assert running.bridge.state("alice") is not None
    pong = as_uid(2002, running.path, {"op": "ping", "id": 7})
    assert pong == {"ok": True, "peer_uid": 2002, "privileged": False, "id": 7}


def test_hub_uid_may_store(running):
    path = put_cache(running.ccdir, now=T0)
    resp = as_uid(HUB_UID, running.path, {"op": "store", "user": "alice", "ccache_path": path})
    assert resp["ok"] is True, resp
    assert resp["state"]["state"] == "active"
    assert as_uid(HUB_UID, running.path, {"op": "states"})["states"].keys() == {"alice"}


def test_hub_refresh_restores_and_checks_arguments(running):
    assert as_uid(HUB_UID, running.path, {"op": "refresh", "user": "alice"})["error"] == \
        "no_credential"
    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    puts = running.store.puts
    resp = as_uid(HUB_UID, running.path, {"op": "refresh", "user": "alice"})
    assert resp["ok"] is True and resp["ccache_path"] is None, resp
    assert running.store.puts == puts + 1
    bad = as_uid(HUB_UID, running.path, {"op": "refresh", "user": "alice", "min_valid": "x"})
    assert bad["error"] == "bad_request"


def test_uid_claimed_in_request_is_ignored(running):
    path = put_cache(running.ccdir, now=T0)
    resp = as_uid(2001, running.path, {"op": "store", "user": "alice", "ccache_path": path,
                                       "uid": 0, "peer_uid": 0})
    assert resp["error"] == "permission_denied"


def test_protocol_errors(running):
    def raw(line: bytes) -> list[dict]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(running.path)
            s.sendall(line)
            s.shutdown(socket.SHUT_WR)
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return [json.loads(x) for x in buf.splitlines()]

    assert raw(b"not json\n")[0]["error"] == "bad_request"
    assert raw(b"[1,2]\n")[0]["error"] == "bad_request"
    assert raw(b'{"op":"explode"}\n')[0]["error"] == "unknown_op"
    assert raw(b'{"op":"store","user":"alice"}\n')[0]["error"] == "bad_request"
    assert raw(b'{"op":"state","user":5}\n')[0]["error"] == "bad_request"
    # several requests on one connection, answered in order, ids echoed
    many = raw(b'{"op":"ping","id":1}\n\n{"op":"state","user":"x","id":"two"}\n')
    assert [m.get("id") for m in many] == [1, "two"]
    # an over-long line is refused and the connection closed; the server survives
    too_long = raw(b'{"op":"ping","pad":"' + b"x" * (protocol.MAX_LINE + 10) + b'"}\n')
    assert too_long[0]["error"] == "bad_request"
    assert request_sync(running.path, "ping")["ok"] is True


def test_sync_client_cli(running, capsys):
    from appliance.credd_bridge import client as client_mod

    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    assert client_mod.main(["--socket", running.path, "state", "alice"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"]["user"] == "alice"
    assert client_mod.main(["--socket", running.path, "store", "alice", "/etc/passwd"]) == 1


def test_daemon_entry_point_starts_and_answers(world_dir):
    sock = os.path.join(world_dir, "d.sock")
    env = {**os.environ, "CREDD_BRIDGE_REALM": REALM, "CREDD_BRIDGE_STORE": "memory",
           "CREDD_BRIDGE_ALLOWED_UIDS": str(HUB_UID),
           "CREDD_BRIDGE_STATE_FILE": os.path.join(world_dir, "state", "state"),
           "CREDD_BRIDGE_STATE_KEY": os.path.join(world_dir, "secrets", "key")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "appliance.credd_bridge", "--socket", sock,
                             "--socket-mode", "0666"],
                            cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            if proc.poll() is not None:
                break
            import time
            time.sleep(0.05)
        assert os.path.exists(sock), proc.stderr.read() if proc.poll() is not None else ""
        assert request_sync(sock, "ping")["privileged"] is True
        assert as_uid(HUB_UID, sock, {"op": "ping"})["privileged"] is True
        assert as_uid(2001, sock, {"op": "ping"})["privileged"] is False
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "listening on" in err and "no saved credential state in" in err
    assert not os.path.exists(sock)
