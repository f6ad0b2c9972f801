"""Wire format of the bridge socket: newline-delimited JSON (one object per line).

Request:  ``{"op": "<op>", ...fields, "id": <optional, echoed>}``
Response: ``{"ok": true, ...}`` or ``{"ok": false, "error": "<code>", "message": "<text>"}``

Ops (see docs/credentials.md for the full table):

* ``ping`` -> ``{"ok": true, "peer_uid": N}``
* ``store`` ``{user, ccache_path}`` -> ``{"ok": true, "state": {...}}``
* ``refresh`` ``{user, write_ccache?, min_valid?}`` -> ``{"ok": true, "state": {...},
  "ccache_path": str | null}`` (re-store the bridge's renewed copy; before every spawn)
* ``state`` ``{user}`` -> ``{"ok": true, "state": {...} | null}``
* ``states`` -> ``{"ok": true, "states": {user: {...}}}``
* ``forget`` ``{user}`` -> ``{"ok": true, "forgotten": bool}``
* ``end`` ``{user}`` -> ``{"ok": true, "forgotten": bool, "credd_deleted": bool,
  "caches_removed": n}`` (the credential ends: forgotten, the credd's copy deleted, the user's
  login ticket caches removed; the hub asks at logout)
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 64 * 1024

OPS = ("ping", "store", "refresh", "state", "states", "forget", "end")

# error codes that are not refusals of a file or credential
BAD_REQUEST = "bad_request"
PERMISSION_DENIED = "permission_denied"
UNKNOWN_OP = "unknown_op"
UNKNOWN_USER = "unknown_user"
BAD_PATH = "bad_path"
CREDD_ERROR = "credd_error"
NO_CREDENTIAL = "no_credential"
INTERNAL = "internal_error"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line (compact, ASCII only, so no byte in it can be a newline)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(BAD_REQUEST, "request line too long")
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(BAD_REQUEST, "request is not a JSON object") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, "request is not a JSON object")
    return obj


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "error": code, "message": message}
    out.update(extra)
    return out


def ok(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True}
    out.update(fields)
    return out


def require_str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(BAD_REQUEST, f"field '{key}' must be a non-empty string")
    return value
