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
