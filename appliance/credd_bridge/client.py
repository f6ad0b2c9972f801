"""Client of the credential bridge socket, for the hub (async) and for scripts (sync).

Hub usage, after a successful PAM login::

    client = BridgeClient()                      # /run/appliance/bridge.sock
    state = await client.store(user, ccache_path)
    # -> {"user": ..., "state": "active", "valid_until": ..., ...}
    # raises BridgeRefused(code, message) if the bridge refused the cache
    # (nothing stored), BridgeError for everything else (socket missing, credd down).

Command line (as root): ``python -m appliance.credd_bridge.client states``,
``... state alice``, ``... store alice /run/appliance/ccache/krb5cc_...``, ``... ping``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any, Optional

from . import DEFAULT_SOCKET, protocol

#: error codes that mean "the credential was refused" (nothing stored)
REFUSAL_CODES = frozenset(
    {
        "not_found", "symlink", "not_regular", "hardlink", "wrong_owner", "bad_mode",
        "too_large", "empty", "unreadable", "malformed", "wrong_principal", "no_tgt",
        "invalid", "expired", "not_renewable", protocol.BAD_PATH, protocol.UNKNOWN_USER,
        protocol.NO_CREDENTIAL,
    }
)


class BridgeError(Exception):
    """The bridge could not be reached or answered with an error."""

    def __init__(self, code: str, message: str, response: Optional[dict] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.response = response or {}

    @property
    def state(self) -> Optional[dict]:
        return self.response.get("state")


class BridgeRefused(BridgeError):
    """The bridge refused the ticket cache; nothing was stored."""


def _raise_for(response: Any) -> dict:
    if not isinstance(response, dict):
        raise BridgeError("bad_response", "bridge sent something that is not a JSON object")
    if response.get("ok") is True:
        return response
    code = str(response.get("error") or "error")
    message = str(response.get("message") or "")
    cls = BridgeRefused if code in REFUSAL_CODES else BridgeError
    raise cls(code, message, response)


class BridgeClient:
    """Async client; one connection per request."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    async def request(self, op: str, **fields: Any) -> dict:
        """Send one request, return the raw response (``ok`` true or false)."""
        try:
            return await asyncio.wait_for(self._request(op, fields), self.timeout)
        except asyncio.TimeoutError:
            raise BridgeError("timeout", f"no answer from {self.path} in {self.timeout}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise BridgeError("unreachable", f"cannot talk to {self.path}: {exc}") from None

    async def _request(self, op: str, fields: dict) -> dict:
        reader, writer = await asyncio.open_unix_connection(
            self.path, limit=protocol.MAX_LINE * 16
        )
        try:
            writer.write(protocol.encode({"op": op, **fields}))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        if not line:
            raise BridgeError("closed", "bridge closed the connection without answering")
        try:
            return json.loads(line)
        except ValueError:
            raise BridgeError("bad_response", "bridge sent invalid JSON") from None

    async def ping(self) -> dict:
        return _raise_for(await self.request("ping"))

    async def store(self, user: str, ccache_path: str) -> dict:
        return _raise_for(await self.request("store", user=user, ccache_path=ccache_path))["state"]

    async def refresh(self, user: str, *, write_ccache: bool = False,
                      min_valid: float = 60) -> dict:
        """Re-store the bridge's current copy in the credd (before a spawn).  Returns the
        response: ``{"state": {...}, "ccache_path": path or None}``."""
        return _raise_for(await self.request("refresh", user=user, write_ccache=write_ccache,
                                             min_valid=min_valid))

    async def state(self, user: str) -> Optional[dict]:
        return _raise_for(await self.request("state", user=user))["state"]

    async def states(self) -> dict:
        return _raise_for(await self.request("states"))["states"]

    async def forget(self, user: str) -> bool:
        return bool(_raise_for(await self.request("forget", user=user))["forgotten"])

    async def end(self, user: str) -> dict:
        """End ``user``'s credential (forget, delete the credd's copy, remove login caches)."""
        out = _raise_for(await self.request("end", user=user))
        return {k: out.get(k) for k in ("forgotten", "credd_deleted", "caches_removed")}


def request_sync(path: str, op: str, timeout: float = 30.0, **fields: Any) -> dict:
    """Blocking one-shot request (raw response)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(protocol.encode({"op": op, **fields}))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise BridgeError("unreachable", f"cannot talk to {path}: {exc}") from None
    if not buf:
        raise BridgeError("closed", "bridge closed the connection without answering")
    return json.loads(buf)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.credd_bridge.client")
    ap.add_argument("--socket", default=DEFAULT_SOCKET)
    sub = ap.add_subparsers(dest="op", required=True)
    sub.add_parser("ping")
    sub.add_parser("states")
    p = sub.add_parser("state")
    p.add_argument("user")
    p = sub.add_parser("forget")
    p.add_argument("user")
    p = sub.add_parser("end")
    p.add_argument("user")
    p = sub.add_parser("refresh")
    p.add_argument("user")
    p = sub.add_parser("store")
    p.add_argument("user")
    p.add_argument("ccache_path")
    args = ap.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("socket", "op")}
    try:
        response = request_sync(args.socket, args.op, **fields)
    except BridgeError as exc:
        print(json.dumps({"ok": False, "error": exc.code, "message": exc.message}), file=sys.stderr)
        return 2
    print(json.dumps(response, indent=2, sort_keys=True))
    return 0 if response.get("ok") else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
