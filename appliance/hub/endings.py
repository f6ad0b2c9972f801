"""``SessionEndings``: the part of ``BatchSpawner`` that records how each session ends.

A mixin (the spawner inherits it; it has no JupyterHub code of its own beyond the Spawner's
attributes it uses): it keeps the user's last :class:`~appliance.hub.outcomes.Outcome` (saved in
the spawner's state, i.e. the hub's database), follows a running job through the shared watcher
so a held, removed or ended job is noticed by the very status query that saw it, removes a held
or re-queued job so nothing is left in the queue for good, and tells apart a stop by the user,
by the idle culler, by the start timeout, and notices a server whose node is gone before the
scheduler does (appliance.hub.reachability: ``unreachable_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

from traitlets import Bool, Float, HasTraits

from .outcomes import Outcome, interrupted_outcome, unreachable_outcome
from .reachability import Reachability, tcp_answers
from .submission import HELPER_ENV, helper_argv
from .scheduler.base import DONE, HELD, PENDING, JobStatus
from .session import end_outcome, failure_outcome


class SessionEndings(HasTraits):
    allow_extension = Bool(
        False,
        help="Let users extend a running session's wall-clock limit from the home page (up to "
        "the lane's or partition's maximum: max_runtime_hours, Slurm's runtime limits). HTCondor: "
        "the hub edits the job's AllowedJobDuration; Slurm: scontrol update TimeLimit as the "
        "hub (docs/security.md, 'Session extension').",
    ).tag(config=True)
    cull_notice_seconds = Float(
        120.0, min=1,
        help="A stop within this many seconds after the idle culler announced it "
        "(POST /hub/api/batch/cull) is recorded as 'culled', with the culler's reason.",
    ).tag(config=True)
    unreachable_timeout = Float(
        120.0, min=0,
        help="A running server whose host does not accept the hub's TCP probe (one per poll, "
        "every poll_interval) for this many seconds is reported lost ('lost its node') and its "
        "job removed. The scheduler can keep the job of a dead node 'running' far longer "
        "(HTCondor: the job lease, 40 min by default). 0: never probe.",
    ).tag(config=True)

    def _init_endings(self) -> None:
        self.last_outcome: Optional[Outcome] = None  # kept in the state (the hub's database)
        self._outcome_final = False  # this job's outcome is recorded: poll/stop keep it
        self._followed = ""  # job id whose state changes the watcher reports to us
        self.cull_notice: Optional[tuple[float, str]] = None  # (time.time(), why): the culler
        self._reach = Reachability()  # failed probes of the running server (poll)

    def record(self, outcome: Outcome) -> None:
        """Keep ``outcome`` as the user's last one (saved with the state)."""
        self.last_outcome = outcome
        self.log.info("%s: outcome %s: %s", self._log_name, outcome.kind, outcome.message)

    async def rewrite_end_file(self, end: float) -> None:
        """After an extension: the job's ``<name>.end`` file (appliance-launch made it) gets the
        new end, written by the submit helper as the user (never by the hub as root)."""
        if not self.env_path or not self.env_path.endswith(".json"):
            self.log.info("%s: end-time file unknown (hub restarted); JOB_END_TIME_FILE keeps "
                          "the old end", self._log_name)
            return
        request = {"action": "end-time", "path": self.env_path[:-5] + ".end", "end": int(end)}
        proc = await asyncio.create_subprocess_exec(
            *helper_argv(self.submit_helper_command, self.user.name),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(HELPER_ENV))
        out, err = await proc.communicate(json.dumps(request).encode())
        if proc.returncode != 0:
            self.log.warning("%s: end-time file not rewritten: %s", self._log_name,
                             (out or err).decode(errors="replace")[-300:])

    # -- following a running job -----------------------------------------------------------
    def _follow(self, watcher) -> None:
        """Let the watcher tell us at once when the job's state changes (held, gone, ...)."""
        if self._followed == self.job_id:
            return
        self._unfollow()
        self._followed = self.job_id
        watcher.subscribe(self.job_id, self._job_changed)

    def _unfollow(self) -> None:
        if self._followed and self.backend:
            watcher = self.registry.running_watcher(self.backend)
            if watcher is not None:
                watcher.unsubscribe(self._followed)
        self._followed = ""

    def _job_changed(self, st: Optional[JobStatus]) -> None:
        if self._spawn_pending or self._stop_pending or not self.server:
            return  # start() follows the job itself; a stop is under way; nothing runs
        if st is None or st.state in (DONE, HELD) or (st.state == PENDING and self.job_host):
            asyncio.ensure_future(self.poll_and_notify())  # the hub's poll callbacks stop it

    # -- outcomes --------------------------------------------------------------------------
    def _started(self, watcher) -> None:
        self.record(Outcome("started", f"Job {self.job_id} started on {self.job_host}",
                            time.time(), job_id=self.job_id, backend=self.backend))
        self._follow(watcher)

    async def _start_failed(self, e: BaseException, backend: str,
                            st: Optional[JobStatus]) -> None:
        message = getattr(e, "jupyterhub_message", None) or str(e) or e.__class__.__name__
        self.record(failure_outcome(message, backend, self.job_id, st, time.time()))
        self._outcome_final = True
        await self._save()

    async def _ended_by_itself(self, watcher, st: Optional[JobStatus]) -> None:
        """Held, gone, cancelled elsewhere, time limit, node lost: record why, and remove a held
        or re-queued job so nothing stays in the queue."""
        self._outcome_final = True
        sched = self.registry.scheduler(self.backend)
        if st is not None and st.state in (HELD, PENDING):
            await self._job(sched, watcher).cancel(st)
        self.record(await end_outcome(sched, self.backend, self.job_id, st,
                                      was_running=bool(self.job_host), now=time.time()))
        await self._save()

    async def unreachable_too_long(self) -> Optional[float]:
        """Probe the running server once (a poll): the seconds it has not answered once that
        reaches ``unreachable_timeout``, else None."""
        server = self.server
        if not self.unreachable_timeout or server is None or not server.port:
            return None
        host = server.ip or self.job_host
        ok = await tcp_answers(host, server.port, timeout=self.check_interval)
        silent = self._reach.answered(ok)
        if not ok:
            self.log.warning("%s: server %s:%s of job %s does not answer (for %.0f s)",
                             self._log_name, host, server.port, self.job_id, silent)
        return silent if silent >= self.unreachable_timeout else None

    async def _lost_unreachable(self, watcher, silent: float) -> None:
        """The server's node is gone (``silent`` s without an answer): record it, remove the job."""
        self._outcome_final = True
        try:
            await self.registry.scheduler(self.backend).forget(self.job_id)
        except Exception as e:  # noqa: BLE001 - logged; the outcome is recorded either way
            self.log.warning("Could not remove job %s of an unreachable server: %s",
                             self.job_id, e)
        self.record(unreachable_outcome(self.backend, self.job_id, self.job_host, silent,
                                        now=time.time()))
        self._reach.reset()
        await self._save()

    async def _interrupted(self, watcher, st: Optional[JobStatus]) -> None:
        """A spawn the hub's restart cut short (its job never ran a server for us): remove the job
        if it is still queued or starting, and say so."""
        self._outcome_final = True
        if st is not None and st.state != DONE:
            await self._job(self.registry.scheduler(self.backend), watcher).cancel()
        self.record(interrupted_outcome(self.backend, self.job_id, now=time.time()))
        await self._save()

    def _stopped_pending(self, timed_out: bool) -> None:
        """stop() of a spawn still pending: the start timeout, or the user's Stop button."""
        if self._outcome_final:
            return
        last = self._events[-1]["message"] if self._events else ""
        self.record(Outcome(
            "timed_out" if timed_out else "stopped",
            (f"Job {self.job_id} did not start within {self.start_timeout} s and was removed"
             if timed_out else f"You cancelled the start; job {self.job_id} was removed")
            + (f" (last: {last})" if last else ""),
            time.time(), job_id=self.job_id, backend=self.backend))
        self._outcome_final = True

    def _stopped(self) -> None:
        """stop() of a running server: by the idle culler (it announced it) or by the user."""
        if self._outcome_final or not self.job_id:
            return
        notice = self.cull_notice
        if notice and time.time() - notice[0] <= self.cull_notice_seconds:
            self.record(Outcome("culled", notice[1], time.time(), job_id=self.job_id,
                                backend=self.backend,
                                hint="Start a new server when you need one; a running cell "
                                "keeps a server from being culled."))
        else:
            self.record(Outcome("stopped", f"You stopped your server (job {self.job_id} removed)",
                                time.time(), job_id=self.job_id, backend=self.backend))
        self._outcome_final = True
