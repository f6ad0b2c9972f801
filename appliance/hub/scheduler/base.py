"""The scheduler interface every backend implements (the shared watcher is in ``watcher``).

One spawner (``appliance.hub.spawner.BatchSpawner``) drives every backend through this interface:

* ``build_submit(request)``: the backend part of the submit helper's request, from validated values
  only; the spawner runs the helper (``appliance.userside``) as the user, who submits it.
* ``query_all()``: ONE query for all of this hub's notebook jobs; the ``JobWatcher`` (``watcher``)
  calls it once per interval and every spawner reads the cached answer, so N users cost one query.
* ``fatal_reason(status)``: why a pending job can never start (the spawner then gives up).
* ``cancel(job_id)``: remove the job, as the hub's service identity.
* ``describe_resources(user)``: what the form may offer this user (partitions, reservations, ...).
* ``check_request(user, request)``: refuse (``OptionsError``) what this user may not ask for, before
  anything is submitted (including what the cluster can never provide: ``capacity``).
* ``capacity()``: the cached "largest ever possible" view (``capacity.CapacityView``).
* ``waiting(status)``: live details of a pending job for the progress stream and pending page
  (lane occupancy, expected start, queue position), from shared cached queries only.
* ``last_words(job_id)``: what the scheduler still knows of a job that left its queue.
* ``extend(job_id, seconds)``: move a running job's wall-clock limit (admins enable it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from traitlets import Float
from traitlets.config import LoggingConfigurable

from ...options import UserOptions
from ...userside import SubmitError

__all__ = [
    "PENDING", "RUNNING", "HELD", "DONE", "UNKNOWN",
    "JobStatus", "SubmitRequest", "SubmitError", "Scheduler",
]

PENDING, RUNNING, HELD, DONE, UNKNOWN = "pending", "running", "held", "done", "unknown"


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # pending | running | held | done | unknown
    host: Optional[str] = None  # execute host, from the scheduler (never from the job)
    reason: str = ""  # the scheduler's own words: hold reason, pending reason, exit info
    owner: Optional[str] = None
    # What the backend learnt about the job beyond the above (e.g. Slurm's partition and pending
    # reason code), for its own fatal_reason: it travels with the status, not in the scheduler.
    detail: Any = None
    ends_at: Optional[float] = None  # running: when the wall-clock limit ends it (epoch seconds)
    started_at: Optional[float] = None  # running: when it started (epoch seconds)
    code: Optional[int] = None  # held: the scheduler's reason code (HTCondor HoldReasonCode)
    end_state: str = ""  # done: the scheduler's final word (Slurm TIMEOUT/CANCELLED/..., "removed")
    # running: why the scheduler's record of the host was refused (routehost.HostRefused); the
    # hub then routes nowhere and the spawn fails with this message
    host_error: str = ""


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


class Scheduler(LoggingConfigurable):
    """Base class of the backends."""

    name = "base"
    #: what a job id of this backend looks like (the submit helper's answer is checked with it)
    job_id_re = re.compile(r"^\S+\Z")

    poll_interval = Float(
        10.0, help="Seconds between shared status queries while no spawn is pending."
    ).tag(config=True)
    fast_poll_interval = Float(
        0.5, help="Seconds between shared status queries while any spawn is pending."
    ).tag(config=True)

    def build_submit(self, request: SubmitRequest) -> dict[str, Any]:
        """The backend part of the submit helper's request ("submit" key), from validated values.

        The spawner runs the submit helper as the user with it (see appliance.userside), so
        the submission itself always happens under the user's identity.
        """
        raise NotImplementedError

    def fatal_reason(self, status: JobStatus) -> Optional[str]:
        """For a pending job that can never start (e.g. no usable nodes), the message; else None.

        A function of ``status`` (with its ``detail``) and the backend's cached cluster view only.
        """
        return None

    async def query_all(self) -> dict[str, JobStatus]:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    async def forget(self, job_id: str) -> None:
        """Remove the job of a node that is gone, without waiting for that node to confirm
        (appliance.hub.reachability). Default: ``cancel``."""
        await self.cancel(job_id)

    async def describe_resources(self, user: str) -> dict[str, Any]:
        return {}

    async def check_request(self, user: str, options: UserOptions) -> None:
        """Raise OptionsError for what this user may not request. Default: nothing extra."""

    async def capacity(self):
        """The cached ``CapacityView`` of what this backend can ever provide (None: unknown)."""
        return None

    def waiting(self, status: JobStatus) -> dict[str, Any]:
        """Live details of a pending job (``{}``: nothing beyond the status)."""
        return {}

    async def last_words(self, job_id: str) -> Optional[JobStatus]:
        """The final status of a job that left the queue (history), or None if unknown."""
        return None

    def max_runtime_seconds(self, user: str, options: UserOptions, default_max_hours: float) -> int:
        """The longest wall-clock limit a session with these options may have (extension cap)."""
        return int(default_max_hours * 3600)

    async def extend(self, job_id: str, limit_seconds: int) -> None:
        """Set a running job's wall-clock limit to ``limit_seconds`` (from its start)."""
        raise NotImplementedError(f"{self.name}: extending a session is not supported")

    def runtime_seconds(self, user: str, options: UserOptions, default_hours: float) -> int:
        """The job's wall-clock limit: the request's runtime, else ``default_hours`` (the spawner's
        ``default_runtime_hours``); backends with limits of their own cap it."""
        hours = options.runtime_hours if options.runtime_hours is not None else default_hours
        return int(hours * 3600)
