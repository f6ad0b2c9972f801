"""Is a running notebook server still there? The hub asks the server's TCP port directly.

The scheduler is not always the first to know that a node is gone. HTCondor keeps the job of a
killed execute node "running" for its whole job lease (``JobLeaseDuration``, 40 min by default:
the shadow waits for the starter to reconnect); Slurm until ``SlurmdTimeout`` marks the node down.
The hub reaches every server itself (the proxy routes to it), so one TCP connect per poll tells
much sooner. :class:`Reachability` remembers since when every probe has failed; the spawner reports
the session lost once that lasts ``unreachable_timeout`` seconds (appliance.hub.endings).

A connect says nothing about the kernel: a busy kernel never stops its server from accepting
connections (the kernel is another process), so only a host or server that is gone fails it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional


class Reachability:
    """Consecutive failed probes of one server, on the caller's monotonic ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.since: Optional[float] = None  # first failed probe of the current run of failures

    def answered(self, ok: bool) -> float:
        """Record one probe; the seconds the server has not answered since (0 when it did)."""
        if ok:
            self.since = None
            return 0.0
        if self.since is None:
            self.since = self.clock()
        return self.clock() - self.since

    def reset(self) -> None:
        self.since = None


async def tcp_answers(host: str, port: int, timeout: float) -> bool:
    """True if ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
