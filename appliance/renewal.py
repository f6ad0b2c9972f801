"""THE renewal policy of the appliance's Kerberos tickets, shared by the credential bridge and
the Kerberos credmon (so both renew a ticket at the same time and back off the same way).

* :class:`RenewalPolicy`: renew fraction and margin, retry min/max; :meth:`~RenewalPolicy.renew_at`
  (when), :meth:`~RenewalPolicy.retry_delay` (backoff), :meth:`~RenewalPolicy.after_failure`.
* :func:`renew_checked`: one renewal through an injected renewer, with the result checked.
* :func:`add_arguments` / :func:`from_args`: the four command-line flags with their environment
  defaults (``<PREFIX>RENEW_FRACTION`` ...), declared once for ``python -m appliance.credd_bridge``
  (prefix ``CREDD_BRIDGE_``) and ``python -m appliance.credmon`` (prefix ``CREDMON_KRB_``).
* :func:`iso`: the UTC timestamp both daemons log.

Standard library plus :mod:`appliance.ccache` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Callable, Optional

from . import ccache

__all__ = ["RenewalPolicy", "renew_at", "retry_delay", "renew_checked", "add_arguments",
           "from_args", "iso"]


def retry_delay(failures: int, retry_min: float, retry_max: float) -> float:
    """Backoff after ``failures`` consecutive failed renewals: retry_min, doubling, capped."""
    return min(retry_max, retry_min * (2 ** max(0, failures - 1)))


def renew_at(cred: ccache.Credential, *, fraction: float = 0.5,
             margin: int = 300) -> Optional[int]:
    """When ``cred`` should be renewed, or ``None`` if renewal cannot extend it.

    Renew once ``fraction`` of the lifetime has passed, but at the latest ``margin`` seconds
    before it ends. Never before half of that point (``start + life * fraction / 2``): a ticket
    shorter than the margin (e.g. a 2-minute test ticket) would otherwise be due again the moment
    it was renewed, and every renewal would start the next one at once.
    """
    if not cred.can_extend():
        return None
    start = cred.start
    life = max(0, cred.endtime - start)
    at = min(start + int(life * fraction), cred.endtime - margin)
    return max(at, start + int(life * fraction / 2))


@dataclasses.dataclass(frozen=True)
class RenewalPolicy:
    """When to renew a ticket and how to back off after a failed renewal or store."""

    #: renew after this fraction of a ticket's lifetime
    fraction: float = 0.5
    #: ... but at the latest this many seconds before it ends
    margin: int = 300
    #: first retry delay after a failure (s), doubling per further failure ...
    retry_min: float = 30.0
    #: ... up to this (s)
    retry_max: float = 600.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"renew fraction must be in 0..1, not {self.fraction}")
        if self.margin < 0:
            raise ValueError(f"renew margin must be >= 0, not {self.margin}")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError(f"need 0 < retry-min <= retry-max, not {self.retry_min}, "
                             f"{self.retry_max}")

    def renew_at(self, cred: ccache.Credential) -> Optional[int]:
        return renew_at(cred, fraction=self.fraction, margin=self.margin)

    def retry_delay(self, failures: int) -> float:
        return retry_delay(failures, self.retry_min, self.retry_max)

    def after_failure(self, failures: int, now: float,
                      not_after: Optional[float] = None) -> tuple[int, float]:
        """``(failures + 1, when to try again)``; never later than ``not_after`` (the end of
        the ticket that is still valid)."""
        failures += 1
        at = now + self.retry_delay(failures)
        if not_after is not None:
            at = min(at, not_after)
        return failures, at


def renew_checked(renewer: Callable[[bytes], bytes], data: bytes,
                  principal: str) -> tuple[bytes, ccache.CCache]:
    """Renew the ticket cache image ``data`` with ``renewer`` and check the result holds a TGT of
    ``principal``. Returns the new image and its parse; raises whatever the renewer raises
    (:class:`~appliance.ccache.RenewError`, ...) or ``RenewError`` for a wrong result."""
    new = renewer(data)
    cc = ccache.parse(new)
    if cc.tgt is None or str(cc.principal) != principal or str(cc.tgt.client) != principal:
        raise ccache.RenewError("renewal returned a ticket for another principal")
    return new, cc


_FLAGS = (
    # (flag, attribute, type, env suffix, help)
    ("--renew-fraction", "renew_fraction", float, "RENEW_FRACTION",
     "renew after this fraction of a ticket's lifetime"),
    ("--renew-margin", "renew_margin", int, "RENEW_MARGIN",
     "renew at the latest this many seconds before expiry"),
    ("--retry-min", "retry_min", float, "RETRY_MIN",
     "first retry delay (s) after a failed renewal or store, doubling"),
    ("--retry-max", "retry_max", float, "RETRY_MAX", "longest retry delay (s)"),
)


def add_arguments(parser: argparse.ArgumentParser, env_prefix: str,
                  environ: Optional[dict] = None) -> None:
    """Add the policy's four flags; each defaults to ``$<env_prefix><NAME>``, else the
    :class:`RenewalPolicy` default. A bad value is argparse's usual error naming the flag."""
    env = os.environ if environ is None else environ
    defaults = RenewalPolicy()
    group = parser.add_argument_group("renewal policy (appliance.renewal)")
    for flag, attr, typ, suffix, text in _FLAGS:
        default = getattr(defaults, attr.replace("renew_", ""))
        group.add_argument(flag, dest=attr, type=typ,
                           default=env.get(env_prefix + suffix, str(default)),
                           help=f"{text} [{env_prefix}{suffix}] (default {default})")


def from_args(args: argparse.Namespace) -> RenewalPolicy:
    """The policy the flags of :func:`add_arguments` describe (``ValueError`` if inconsistent)."""
    return RenewalPolicy(fraction=args.renew_fraction, margin=args.renew_margin,
                         retry_min=args.retry_min, retry_max=args.retry_max)


def iso(ts: Optional[float]) -> str:
    """``2026-12-01T10:00:00Z`` (UTC, whole seconds); ``-`` for no time."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
