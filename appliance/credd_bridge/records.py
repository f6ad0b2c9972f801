"""What the bridge keeps per user (:class:`UserRecord`) and what it tells about it.

Per-user state (what ``state``/``states`` return)::

    {"user", "principal", "state", "valid_until", "renew_until", "last_forwarded",
     "last_renewed", "next_action", "error"}

``state`` is one of

* ``active``   - the credd has a valid copy; the next renewal is at ``next_action``
* ``retrying`` - a renewal or a credd store failed (``error`` says which and why);
  retried with exponential backoff at ``next_action``; the ticket is still valid
  until ``valid_until``
* ``final``    - the ticket cannot be extended any more (renew-till reached); the
  credd copy is valid until ``valid_until``, then the state becomes ``expired``
* ``expired``  - ``valid_until`` has passed; the user must log in again

Times are integer seconds since the epoch (``null`` if unknown).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Optional

ACTIVE = "active"
RETRYING = "retrying"
FINAL = "final"
EXPIRED = "expired"


@dataclasses.dataclass
class UserRecord:
    user: str
    principal: str
    ccache: bytes = dataclasses.field(repr=False)
    valid_until: int = 0
    renew_until: Optional[int] = None
    state: str = ACTIVE
    error: Optional[str] = None
    last_forwarded: Optional[float] = None
    last_renewed: Optional[float] = None
    next_action: Optional[float] = None
    pending_store: bool = False
    failures: int = 0
    generation: int = 0
    pushed_to: list = dataclasses.field(default_factory=list)
    last_pushed: Optional[float] = None
    push_error: Optional[str] = None

    def public(self) -> dict:
        def t(v):
            return None if v is None else int(v)

        return {
            "user": self.user,
            "principal": self.principal,
            "state": self.state,
            "valid_until": t(self.valid_until),
            "renew_until": t(self.renew_until),
            "last_forwarded": t(self.last_forwarded),
            "last_renewed": t(self.last_renewed),
            "next_action": t(self.next_action),
            "error": self.error,
            "pushed_to": list(self.pushed_to),
            "last_pushed": t(self.last_pushed),
            "push_error": self.push_error,
        }

    # -- persistence (appliance.credd_bridge.statefile encrypts this) -------------------------

    def saved(self) -> dict:
        """Everything needed to go on renewing and pushing after a restart (ticket included)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["ccache"] = base64.b64encode(self.ccache).decode("ascii")
        out["pushed_to"] = list(self.pushed_to)
        return out

    @classmethod
    def from_saved(cls, d: dict) -> "UserRecord":
        """The inverse of :meth:`saved`; ``ValueError`` for anything that does not fit."""
        if not isinstance(d, dict):
            raise ValueError("a user record must be an object")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"user record without {f.name}")
                continue
            value, kind = d[f.name], _FIELD_TYPES[f.name]
            if value is None and None in kind:
                kw[f.name] = None
            elif isinstance(value, bool) and bool not in kind:
                raise ValueError(f"bad {f.name} in a user record")
            elif not isinstance(value, tuple(k for k in kind if k is not None)):
                raise ValueError(f"bad {f.name} in a user record")
            else:
                kw[f.name] = value
        try:
            kw["ccache"] = base64.b64decode(kw.get("ccache", ""), validate=True)
        except (ValueError, TypeError):
            raise ValueError("bad ccache in a user record") from None
        if not all(isinstance(h, str) for h in kw.get("pushed_to", [])):
            raise ValueError("bad pushed_to in a user record")
        if kw["state"] not in (ACTIVE, RETRYING, FINAL, EXPIRED):
            raise ValueError("bad state in a user record")
        return cls(**kw)


_NUM = (int, float)
_FIELD_TYPES = {
    "user": (str,), "principal": (str,), "ccache": (str,), "valid_until": (int,),
    "renew_until": (int, None), "state": (str,), "error": (str, None),
    "last_forwarded": (*_NUM, None), "last_renewed": (*_NUM, None),
    "next_action": (*_NUM, None), "pending_store": (bool,), "failures": (int,),
    "generation": (int,), "pushed_to": (list,), "last_pushed": (*_NUM, None),
    "push_error": (str, None),
}
