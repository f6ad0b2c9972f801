"""``JobWatcher``: one shared status cache per scheduler, for every spawner of the hub.

Spawners call :meth:`JobWatcher.status` (optionally ``newer_than`` a time of their own, to wait for
an answer from a query that started after it). A single background task runs the scheduler's
``query_all()``: every ``fast_poll_interval`` while any spawner has declared interest via
:meth:`JobWatcher.hurry`, every ``poll_interval`` otherwise.

A spawner whose server runs :meth:`JobWatcher.subscribe` s to its job: when an answer shows the
job in another state than the previous answer did (held, gone, back to pending), the callback
runs at once, so the hub learns of a held or ended job from the very query that saw it instead
of at its own next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from .base import JobStatus, Scheduler


class JobWatcher:
    """One shared status cache per scheduler (see module doc).

    ``clock`` is a monotonic clock (seconds); ``newer_than`` values must come from the same one
    (the default, ``time.monotonic``, is what the spawner uses).
    """

    def __init__(self, scheduler: Scheduler, log: Optional[logging.Logger] = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_query: Optional[Callable[[float, bool], None]] = None):
        self.scheduler = scheduler
        #: called after every status query with (seconds, ok): the hub's metrics
        self.on_query = on_query
        self.log = log or logging.getLogger(__name__)
        self.clock = clock
        self.jobs: dict[str, JobStatus] = {}
        self.updated = 0.0  # clock time the current answer arrived
        self.data_started = 0.0  # clock time the query behind the current answer started
        self.queries = 0
        self.last_error: Optional[str] = None
        self._hurry = 0
        self._wake = asyncio.Event()
        self._new_data = asyncio.Condition()
        self._task: Optional[asyncio.Task] = None
        self._subscribers: dict[str, Callable[[Optional[JobStatus]], None]] = {}

    def subscribe(self, job_id: str, callback: Callable[[Optional[JobStatus]], None]) -> None:
        """Call ``callback(new_status or None)`` whenever the job's state changes."""
        self._subscribers[job_id] = callback

    def unsubscribe(self, job_id: str) -> None:
        self._subscribers.pop(job_id, None)

    def _notify(self, old: dict[str, JobStatus], new: dict[str, JobStatus]) -> None:
        for job_id, callback in list(self._subscribers.items()):
            before, after = old.get(job_id), new.get(job_id)
            if (before.state if before else None) == (after.state if after else None):
                continue
            try:
                callback(after)
            except Exception:  # one spawner's problem must not stop the cache
                self.log.exception("watcher callback for job %s failed", job_id)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
            self._task = None

    class _Hurry:
        def __init__(self, watcher: "JobWatcher"):
            self.w = watcher

        def __enter__(self):
            self.w._hurry += 1
            self.w._wake.set()
            return self

        def __exit__(self, *exc):
            self.w._hurry -= 1

    def hurry(self) -> "JobWatcher._Hurry":
        """Context manager: poll fast while inside (a spawn is pending)."""
        return JobWatcher._Hurry(self)

    def interval(self) -> float:
        """Seconds until the next query: fast while any spawner hurries."""
        return self.scheduler.fast_poll_interval if self._hurry else self.scheduler.poll_interval

    async def refresh(self) -> None:
        started = self.clock()
        try:
            jobs = await self.scheduler.query_all()
        except Exception as e:  # keep the last good answer, report the problem
            self.last_error = str(e)
            self.log.warning("%s status query failed: %s", self.scheduler.name, e)
            self._report(started, ok=False)
            return
        self._report(started, ok=True)
        old, self.jobs = self.jobs, jobs
        self.updated = self.clock()
        self.data_started = started
        self.queries += 1
        self.last_error = None
        self._notify(old, jobs)
        async with self._new_data:
            self._new_data.notify_all()

    def _report(self, started: float, ok: bool) -> None:
        if self.on_query is not None:
            try:
                self.on_query(self.clock() - started, ok)
            except Exception:  # metrics must never break the status cache
                self.log.debug("on_query callback failed", exc_info=True)

    async def _pause(self, interval: float) -> None:
        """Wait ``interval`` seconds, or less if a spawner hurries."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            await self.refresh()
            interval = self.interval()
            self._wake.clear()
            await self._pause(interval)

    async def wait_update(self, timeout: float) -> bool:
        """Wait for the next completed query; False on timeout."""
        self.start()
        try:
            async with self._new_data:
                await asyncio.wait_for(self._new_data.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def status(self, job_id: str, newer_than: Optional[float] = None,
                     timeout: float = 30.0) -> Optional[JobStatus]:
        """The cached status of ``job_id`` (None if the scheduler does not list it).

        With ``newer_than`` (a value of ``clock``), first waits for an answer from a query that
        started after it: a job submitted at t is then certainly in the answer if it exists.
        """
        self.start()
        deadline = self.clock() + timeout
        while newer_than is not None and self.data_started < newer_than:
            self._wake.set()
            left = deadline - self.clock()
            if left <= 0:
                break
            await self.wait_update(timeout=left)
        return self.jobs.get(job_id)
