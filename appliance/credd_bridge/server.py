"""The bridge's Unix-socket server (asyncio), with SO_PEERCRED authorisation.

Who may do what (peer uid from the kernel, never from the request):

* a *privileged* peer (root, or a uid in ``allowed_uids``, e.g. the hub's) may use
  every op;
* any other peer may only ``ping`` and ask ``state`` for the user whose uid it is;
  everything else gets ``permission_denied``.  (The socket's file mode decides who
  can connect at all; the default 0660 root:root admits only root.)

Requests on one connection are answered in order; a connection may carry many.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import stat
import struct
from typing import Callable, Iterable, Optional

from appliance.privfile import Refusal

from . import protocol
from .bridge import Bridge, CreddStoreFailed
from .protocol import ProtocolError

log = logging.getLogger("appliance.credd_bridge.server")

_UCRED = struct.Struct("3i")


async def renewal_loop(
    bridge: Bridge,
    wake: asyncio.Event,
    *,
    max_sleep: float = 60.0,
    min_sleep: float = 0.05,
    stop: Optional[asyncio.Event] = None,
) -> None:
    """Run ``bridge.run_due`` whenever something is due; ``wake`` re-plans early.

    The blocking work runs in a thread.  Sleeps are capped at ``max_sleep`` so
    clock jumps are noticed.
    """
    while stop is None or not stop.is_set():
        await asyncio.to_thread(bridge.run_due)
        nxt = bridge.next_wakeup()
        if nxt is None:
            delay = max_sleep
        else:
            delay = min(max(nxt - bridge.clock(), min_sleep), max_sleep)
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass
        wake.clear()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


def _pwd_name(uid: int) -> Optional[str]:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class BridgeServer:
    def __init__(
        self,
        bridge: Bridge,
        path: str,
        *,
        allowed_uids: Iterable[int] = (),
        socket_mode: int = 0o660,
        socket_gid: Optional[int] = None,
        user_for_uid: Callable[[int], Optional[str]] = _pwd_name,
        max_sleep: float = 60.0,
    ) -> None:
        self.bridge = bridge
        self.path = path
        self.allowed_uids = {0, *allowed_uids}
        self.socket_mode = socket_mode
        self.socket_gid = socket_gid
        self.user_for_uid = user_for_uid
        self.max_sleep = max_sleep
        self._server: Optional[asyncio.AbstractServer] = None
        self._loop_task: Optional[asyncio.Task] = None
        self._wake: Optional[asyncio.Event] = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise RuntimeError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)  # stale socket from an earlier run
        old_umask = os.umask(0o177)  # the socket appears 0600, then gets its mode
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=self.path, limit=protocol.MAX_LINE + 1
            )
        finally:
            os.umask(old_umask)
        if self.socket_gid is not None:
            os.chown(self.path, -1, self.socket_gid)
        os.chmod(self.path, self.socket_mode)
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        wake = self._wake
        self.bridge.on_change = lambda: loop.call_soon_threadsafe(wake.set)
        self._loop_task = asyncio.create_task(
            renewal_loop(self.bridge, wake, max_sleep=self.max_sleep)
        )
        log.info("listening on %s (privileged uids: %s)", self.path,
                 ",".join(str(u) for u in sorted(self.allowed_uids)))

    async def close(self) -> None:
        self.bridge.on_change = None
        self.bridge.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    # -- connections ---------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError:
            writer.close()
            return
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(protocol.encode(
                        protocol.error(protocol.BAD_REQUEST, "request line too long")))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self.dispatch(line, uid, pid)
                writer.write(protocol.encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def is_privileged(self, uid: int) -> bool:
        return uid in self.allowed_uids

    async def dispatch(self, line: bytes, uid: int, pid: int = 0) -> dict:
        """Answer one request line from a peer with ``uid``."""
        req_id = None
        try:
            req = protocol.decode(line)
            req_id = req.get("id")
            response = await self._dispatch(req, uid, pid)
        except ProtocolError as exc:
            response = protocol.error(exc.code, exc.message)
        except Refusal as exc:
            response = protocol.error(exc.code, exc.message)
        except CreddStoreFailed as exc:
            response = protocol.error(protocol.CREDD_ERROR, exc.message, state=exc.state)
        except Exception:  # noqa: BLE001 - never kill the server for one request
            log.exception("internal error handling a request from uid %d", uid)
            response = protocol.error(protocol.INTERNAL, "internal error")
        if req_id is not None and isinstance(req_id, (str, int)):
            response["id"] = req_id
        return response

    async def _dispatch(self, req: dict, uid: int, pid: int) -> dict:
        op = req.get("op")
        if op not in protocol.OPS:
            raise ProtocolError(protocol.UNKNOWN_OP, f"unknown op {op!r}")
        privileged = self.is_privileged(uid)
        if op == "ping":
            return protocol.ok(peer_uid=uid, privileged=privileged)
        if op == "state":
            user = protocol.require_str(req, "user")
            if not privileged and self.user_for_uid(uid) != user:
                raise ProtocolError(protocol.PERMISSION_DENIED,
                                    "only root or the hub may read another user's state")
            return protocol.ok(state=self.bridge.state(user))
        if not privileged:
            log.warning("uid %d (pid %d) tried op %s: permission denied", uid, pid, op)
            raise ProtocolError(protocol.PERMISSION_DENIED, f"op {op} needs root or the hub's uid")
        if op == "store":
            user = protocol.require_str(req, "user")
            path = protocol.require_str(req, "ccache_path")
            state = await asyncio.to_thread(self.bridge.store, user, path)
            return protocol.ok(state=state)
        if op == "refresh":
            user = protocol.require_str(req, "user")
            write = req.get("write_ccache", False)
            min_valid = req.get("min_valid", 60)
            if not isinstance(write, bool) or not isinstance(min_valid, (int, float)) or \
                    isinstance(min_valid, bool) or not 0 <= min_valid <= 86400:
                raise ProtocolError(protocol.BAD_REQUEST, "bad write_ccache or min_valid")
            state, path = await asyncio.to_thread(
                self.bridge.refresh, user, min_valid=float(min_valid), write_ccache=write)
            return protocol.ok(state=state, ccache_path=path)
        if op == "states":
            return protocol.ok(states=self.bridge.states())
        if op == "forget":
            user = protocol.require_str(req, "user")
            return protocol.ok(forgotten=self.bridge.forget(user))
        if op == "end":
            user = protocol.require_str(req, "user")
            return protocol.ok(**await asyncio.to_thread(self.bridge.end, user))
        raise ProtocolError(protocol.UNKNOWN_OP, f"unknown op {op!r}")  # pragma: no cover
