"""Per-account login back-off: after ``after`` failed logins of one account, further attempts for
that account wait, ``base`` seconds at first, doubling with every further failure, at most
``maximum`` seconds. A successful login forgets the account's failures, and so does a quiet
``forget`` seconds. Pure logic on an injected monotonic clock (the authenticator feeds it).

Attempts still in flight count as failures until they end, so parallel guesses cannot slip past
the threshold (after a lock, one attempt at a time goes through). The state is bounded: at most ``max_accounts`` accounts are tracked (the oldest
unlocked ones are dropped first). The key is the account NAME, whether or not it exists: an
unknown user gets exactly the answers of a known one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class _Account:
    failures: int = 0
    in_flight: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginBackoff:
    def __init__(self, *, after: int, base: float, maximum: float, forget: float,
                 max_accounts: int, clock: Callable[[], float]):
        self.after, self.base, self.maximum = after, base, maximum
        self.forget, self.max_accounts, self.clock = forget, max_accounts, clock
        self._accounts: dict[str, _Account] = {}

    def delay(self, failures: int) -> float:
        """How long an account with ``failures`` failed logins is locked (0 below the threshold)."""
        if failures < self.after:
            return 0.0
        return min(self.maximum, self.base * 2.0 ** min(failures - self.after, 64))

    def begin(self, name: str) -> int:
        """Before checking a password for ``name``: 0 to go ahead (then call ``end``), or the
        seconds to wait (Retry-After; the attempt is refused without checking anything)."""
        now = self.clock()
        acc = self._accounts.get(name)
        if acc is not None and self._forgotten(acc, now):
            del self._accounts[name]
            acc = None
        if acc is not None:
            if acc.locked_until > now:
                return max(1, math.ceil(acc.locked_until - now))
            # Attempts in flight count as failures: past the threshold (or after a lock, whose
            # next failure locks again) one at a time.
            if acc.in_flight and acc.failures + acc.in_flight >= self.after:
                return max(1, math.ceil(self.delay(max(acc.failures + 1, self.after))))
        else:
            self._make_room(now)
            acc = self._accounts[name] = _Account(last=now)
        acc.in_flight += 1
        return 0

    def end(self, name: str, ok: bool, started: Optional[float] = None,
            checked: bool = True) -> None:
        """After the check that ``begin`` allowed: a success forgets the account's failures.
        A lock counts from ``started`` (when the attempt began), so how long the check took
        (PAM may answer faster for an unknown user) does not show in a later Retry-After.
        ``checked=False``: the password could not be checked at all (the KDC does not answer),
        which neither counts as a failure nor forgets earlier ones."""
        acc = self._accounts.get(name)
        if acc is None:
            return
        acc.in_flight = max(0, acc.in_flight - 1)
        if not checked:
            return
        now = self.clock() if started is None else started
        if ok:
            del self._accounts[name]
            return
        acc.failures += 1
        acc.last = now
        lock = self.delay(acc.failures)
        if lock:
            acc.locked_until = max(acc.locked_until, now + lock)

    def _forgotten(self, acc: _Account, now: float) -> bool:
        return acc.in_flight == 0 and acc.locked_until <= now and now - acc.last > self.forget

    def _make_room(self, now: float) -> None:
        if len(self._accounts) < self.max_accounts:
            return
        for name in [n for n, a in self._accounts.items() if self._forgotten(a, now)]:
            del self._accounts[name]
        if len(self._accounts) >= self.max_accounts:  # drop the oldest not locked, then oldest
            order = sorted(self._accounts.items(),
                           key=lambda kv: (kv[1].locked_until > now or kv[1].in_flight > 0,
                                           kv[1].last))
            for name, _ in order[: len(self._accounts) - self.max_accounts + 1]:
                del self._accounts[name]

    def tracked(self) -> int:
        return len(self._accounts)
