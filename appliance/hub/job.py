"""One notebook job as its spawner follows it, from the shared watcher's answers only.

``NotebookJob`` turns the scheduler's states into progress messages and into failures a user can
act on (held, with the scheduler's reason; ended before Jupyter started, with where its output
is; can never start, in the backend's words), waits while the job lives for the launcher's port
report and for the server to listen, and removes the job. It knows nothing of JupyterHub: the
spawner passes the job, its waits and an ``emit(message, progress)`` callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from .scheduler.base import DONE, HELD, RUNNING, JobStatus, Scheduler

if TYPE_CHECKING:
    from .scheduler.watcher import JobWatcher


class SpawnError(Exception):
    """A spawn failed for a reason the user must see (JupyterHub shows the message)."""

    jupyterhub_message = None

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


class NotYours(SpawnError):
    """The scheduler lists the job under another owner: the hub neither routes to it nor
    removes it (the job id came from the user's side: the submit helper's answer)."""


@dataclass(frozen=True)
class Waits:
    """The spawner's wait settings (see BatchSpawner's traitlets of the same names)."""

    check_interval: float = 1.0
    status_timeout: float = 5.0
    listen_poll_interval: float = 0.05


class NotebookJob:
    """``owner``: the hub user the job must belong to; every status this class acts on is
    checked against it (:meth:`own`)."""

    def __init__(self, job_id: str, backend: str, scheduler: Scheduler,
                 watcher: Optional[JobWatcher], *, owner: str, job_dir: str, waits: Waits,
                 emit: Callable[..., None], log: logging.Logger):
        self.job_id, self.backend, self.scheduler, self.watcher = job_id, backend, scheduler, watcher
        self.owner = owner
        self.job_dir, self.waits, self.emit, self.log = job_dir, waits, emit, log

    def own(self, st: Optional[JobStatus]) -> Optional[JobStatus]:
        """``st`` if the scheduler's record says the job is the owner's (or it is not listed);
        else NotYours, logged: no route, no removal with the hub's identity."""
        if st is not None and st.owner != self.owner:
            self.log.warning("%s job %s belongs to %r, not to %s: not routed, not removed",
                             self.backend, self.job_id, st.owner, self.owner)
            raise NotYours(f"Job {self.job_id} is not a job of {self.owner} "
                           f"(the scheduler lists it under another user); nothing was started.")
        return st

    def ended_message(self, st: Optional[JobStatus]) -> str:
        where = f" (job output: ~/{self.job_dir}/)"
        if st is not None and st.state == HELD:
            return f"Job {self.job_id} was held by {self.backend}: {st.reason}"
        if st is not None and st.reason:
            return f"Job {self.job_id} ended before Jupyter started: {st.reason}{where}"
        return f"Job {self.job_id} ended before Jupyter started{where}"

    async def running_host(self, submitted: float) -> str:
        """The execute host once the job runs; progress messages while it waits in the queue.

        ``submitted``: the ``time.monotonic()`` after the submission returned; the first answer
        used is from a query that started later, so it lists the job if the job exists.
        """
        last_msg, newer = None, submitted
        while True:
            st = self.own(await self.watcher.status(self.job_id, newer_than=newer))
            newer = None
            if st is None or st.state == DONE:
                raise SpawnError(self.ended_message(st))
            if st.state == HELD:
                await self.cancel(st)
                raise SpawnError(self.ended_message(st))
            if st.state == RUNNING and st.host_error:
                self.log.warning("%s job %s of %s: no route: %s", self.backend, self.job_id,
                                 self.owner, st.host_error)
                await self.cancel(st)
                raise SpawnError(f"Job {self.job_id} was removed: the scheduler's record of where "
                                 f"it runs was refused ({st.host_error}).")
            if st.state == RUNNING and st.host:
                return st.host
            fatal = self.scheduler.fatal_reason(st)
            if fatal:
                await self.cancel(st)
                raise SpawnError(fatal)
            wait = self.scheduler.waiting(st)
            msg = f"Job {self.job_id} waiting in the {self.scheduler.name} queue" + (
                f": {st.reason}" if st.reason else ""
            ) + (f" ({wait['text']})" if wait.get("text") else "")
            if msg != last_msg:
                # the pending page shows these live (job id, state, reason, occupancy/start)
                self.emit(msg, 40, {"job_id": self.job_id, "backend": self.backend,
                                    "state": st.state, "reason": st.reason, **wait})
                last_msg = msg
            await self.watcher.wait_update(timeout=self.waits.status_timeout)

    async def fail_if_ended(self) -> None:
        st = self.own(await self.watcher.status(self.job_id))
        if st is None or st.state in (DONE, HELD):
            raise SpawnError(self.ended_message(st))

    async def while_alive(self, event: asyncio.Event) -> None:
        """Wait for ``event`` (the port report); fail as soon as the job is held or gone."""
        while not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), timeout=self.waits.check_interval)
            except asyncio.TimeoutError:
                await self.fail_if_ended()

    async def listening(self, host: str, port: int, timeout: float) -> None:
        """Return as soon as the server accepts connections (polled every ``listen_poll_interval``).

        JupyterHub's own readiness probe backs off exponentially and cost ~1.3 s (p95 3 s) per
        spawn in performance/; probing cheaply here first makes its first probe succeed.
        """
        deadline = time.monotonic() + timeout
        next_job_check = time.monotonic() + self.waits.check_interval
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                   timeout=self.waits.check_interval)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                pass
            if time.monotonic() > next_job_check:
                next_job_check = time.monotonic() + self.waits.check_interval
                await self.fail_if_ended()
            await asyncio.sleep(self.waits.listen_poll_interval)
        # Give up quietly: JupyterHub's own probe and http_timeout decide from here.

    async def cancel(self, st: Optional[JobStatus] = None) -> bool:
        """Remove the job (as the hub's service identity) if the scheduler lists it as the
        owner's: ``st`` is its status, else the watcher's cached one (a job's owner never
        changes), else one from a query started now. A job listed under another owner, or not
        listed at all, is left alone (logged). Failures are logged, not raised. True when the
        removal was asked for."""
        if st is None:
            if self.watcher is None:
                self.log.info("%s job %s: no status query ran, nothing removed", self.backend,
                              self.job_id)
                return False
            st = self.watcher.jobs.get(self.job_id) or await self.watcher.status(
                self.job_id, newer_than=time.monotonic(), timeout=self.waits.status_timeout)
            if st is None:
                self.log.info("%s job %s is not listed: nothing to remove", self.backend,
                              self.job_id)
                return False
        try:
            self.own(st)
        except NotYours:
            return False
        try:
            await self.scheduler.cancel(self.job_id)
        except Exception as e:
            self.log.warning("Could not remove job %s: %s", self.job_id, e)
        return True

    async def gone(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the scheduler no longer lists the job as active."""
        if self.watcher is None:  # no query was ever started: nothing to wait for
            return
        deadline = time.monotonic() + timeout
        mark = time.monotonic()
        while time.monotonic() < deadline:
            st = await self.watcher.status(self.job_id, newer_than=mark,
                                           timeout=self.waits.status_timeout)
            if st is None or st.state == DONE:
                return
            mark = time.monotonic()
