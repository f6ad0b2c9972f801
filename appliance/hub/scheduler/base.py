"""The scheduler interface every backend implements, and the shared job watcher.

One spawner (``appliance.hub.spawner.BatchSpawner``) drives every backend through this interface:

* ``submit(user, request)``: submit as the user (never as root or the hub's identity); returns the
  job id. ``request`` holds only validated values.
* ``query_all()``: ONE query for all of this hub's notebook jobs; the :class:`JobWatcher` calls it
  once per interval and every spawner reads the cached answer, so N users cost one query.
* ``cancel(job_id)``: remove the job, as the hub's service identity.
* ``describe_resources(user)``: what the form may offer this user (partitions, reservations, ...).
* ``check_request(user, request)``: refuse (``OptionsError``) what this user may not ask for, before
  anything is submitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from ...options import UserOptions

PENDING, RUNNING, HELD, DONE, UNKNOWN = "pending", "running", "held", "done", "unknown"


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # pending | running | held | done | unknown
    host: Optional[str] = None  # execute host, from the scheduler (never from the job)
    reason: str = ""  # the scheduler's own words: hold reason, pending reason, exit info
    owner: Optional[str] = None


@dataclass
class SubmitRequest:
    """Everything a backend needs to build a submission; all values validated."""

    user: str
    uid: int
    home: str
    options: UserOptions
    job_name: str
    env_file: str  # path (in the user's home) where the helper writes the secret env
    port_range: tuple[int, int]
    ccache: Optional[str] = None  # the user's Kerberos ticket cache (for submission)
    runtime_seconds: int = 8 * 3600
    extra: dict[str, Any] = field(default_factory=dict)


class SubmitError(Exception):
    """Submission failed; the message is for the user."""


class Scheduler(LoggingConfigurable):
    """Base class of the backends."""

    name = "base"

    poll_interval = Float(
        10.0, help="Seconds between shared status queries while no spawn is pending."
    ).tag(config=True)
    fast_poll_interval = Float(
        0.5, help="Seconds between shared status queries while any spawn is pending."
    ).tag(config=True)

    def build_submit(self, request: SubmitRequest) -> dict[str, Any]:
        """The backend part of the submit helper's request ("submit" key), from validated values.

        The spawner runs the submit helper as the user with it (see appliance.submit_helper), so
        the submission itself always happens under the user's identity.
        """
        raise NotImplementedError

    def fatal_reason(self, status: JobStatus) -> Optional[str]:
        """For a pending job that can never start (e.g. no usable nodes), the message; else None."""
        return None

    async def query_all(self) -> dict[str, JobStatus]:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    async def describe_resources(self, user: str) -> dict[str, Any]:
        return {}

    async def check_request(self, user: str, options: UserOptions) -> None:
        """Raise OptionsError for what this user may not request. Default: nothing extra."""

    def runtime_seconds(self, user: str, options: UserOptions, default_hours: float) -> int:
        hours = options.runtime_hours if options.runtime_hours is not None else default_hours
        return int(hours * 3600)


class JobWatcher:
    """One shared status cache per scheduler.

    Spawners call :meth:`status` (optionally ``fresh=True`` to wait for a query newer than their
    own request). A single background task runs ``query_all()``: every ``fast_poll_interval``
    while any spawner has declared interest via :meth:`hurry`, every ``poll_interval`` otherwise.
    """

    def __init__(self, scheduler: Scheduler, log: Optional[logging.Logger] = None):
        self.scheduler = scheduler
        self.log = log or logging.getLogger(__name__)
        self.jobs: dict[str, JobStatus] = {}
        self.updated = 0.0  # monotonic time the current answer arrived
        self.data_started = 0.0  # monotonic time the query behind the current answer started
        self.queries = 0
        self.last_error: Optional[str] = None
        self._hurry = 0
        self._wake = asyncio.Event()
        self._new_data = asyncio.Condition()
        self._task: Optional[asyncio.Task] = None

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

    async def refresh(self) -> None:
        started = time.monotonic()
        try:
            jobs = await self.scheduler.query_all()
        except Exception as e:  # keep the last good answer, report the problem
            self.last_error = str(e)
            self.log.warning("%s status query failed: %s", self.scheduler.name, e)
            return
        self.jobs = jobs
        self.updated = time.monotonic()
        self.data_started = started
        self.queries += 1
        self.last_error = None
        async with self._new_data:
            self._new_data.notify_all()

    async def _run(self) -> None:
        while True:
            await self.refresh()
            interval = (
                self.scheduler.fast_poll_interval if self._hurry else self.scheduler.poll_interval
            )
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

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

        With ``newer_than`` (a ``time.monotonic()`` value), first waits for an answer from a query
        that started after it: a job submitted at t is then certainly in the answer if it exists.
        """
        self.start()
        deadline = time.monotonic() + timeout
        while newer_than is not None and self.data_started < newer_than:
            self._wake.set()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await self.wait_update(timeout=left)
        return self.jobs.get(job_id)
