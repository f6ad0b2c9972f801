"""A notebook session between its start and its end, as the spawner follows it (no JupyterHub).

* :func:`end_outcome`: the outcome of a job that left the running state by itself (held, gone,
  cancelled elsewhere, time limit, node lost), in the scheduler's own words plus a hint; a job
  that vanished from the queue is looked up once in the scheduler's history.
* :func:`failure_outcome`: the outcome of a spawn that failed (the message the user saw).
* :func:`session_view`: what the home page and ``GET /hub/api/batch/session`` show of a running
  server: job, host, end of its wall-clock limit, remaining time, whether it may be extended.
* :func:`plan_extension`: the new limit for "extend by N hours", or ``OptionsError("hours")``
  naming the most that is left.

Times are the caller's (``now``); nothing here reads the wall clock.
"""

from __future__ import annotations

from typing import Any, Optional

from ..options import OptionsError
from .outcomes import Outcome, ended_outcome, hint_for
from .scheduler.base import HELD, PENDING, JobStatus, Scheduler


async def end_outcome(sched: Scheduler, backend: str, job_id: str, st: Optional[JobStatus],
                      *, was_running: bool, now: float) -> Outcome:
    """Why the job is no longer a running server (``st``: the watcher's status, None if the
    queue does not list it any more)."""
    if st is None:
        st = await sched.last_words(job_id)
    if st is None:
        return ended_outcome(backend, job_id, state="gone", reason="the job left the queue",
                             code=None, end_state="", now=now, was_running=was_running)
    return ended_outcome(backend, job_id, state=st.state, reason=st.reason, code=st.code,
                         end_state=st.end_state, now=now, was_running=was_running)


def failure_outcome(message: str, backend: str, job_id: str, st: Optional[JobStatus],
                    now: float) -> Outcome:
    """A spawn that failed: ``held`` (with the hold hint) or ``failed`` (``message`` is what the
    progress stream said last, e.g. "cannot start: no node ...")."""
    if st is not None and st.state == HELD:
        return Outcome("held", message, now, st.reason,
                       hint_for(backend, code=st.code, reason=st.reason,
                                state=st.reason.split(":")[0]), job_id, backend, st.code)
    return Outcome("failed", message, now, st.reason if st else "", "", job_id, backend)


def session_view(*, backend: str, job_id: str, host: str, st: Optional[JobStatus],
                 max_seconds: Optional[int], extend_enabled: bool, now: float) -> dict[str, Any]:
    """The running session as the home page shows it (no secrets: ids, names, times)."""
    out: dict[str, Any] = {"backend": backend, "job_id": job_id, "host": host,
                           "state": st.state if st else "unknown", "ends_at": None,
                           "started_at": None, "remaining_seconds": None,
                           "extend": {"enabled": extend_enabled, "max_ends_at": None,
                                      "max_more_hours": 0.0}}
    if st is None:
        return out
    out["started_at"] = st.started_at
    if st.ends_at:
        out["ends_at"] = st.ends_at
        out["remaining_seconds"] = max(0, int(st.ends_at - now))
    if st.started_at and st.ends_at and max_seconds:
        max_end = st.started_at + max_seconds
        out["extend"]["max_ends_at"] = max_end
        out["extend"]["max_more_hours"] = round(max(0.0, (max_end - st.ends_at) / 3600), 2)
    return out


def plan_extension(st: Optional[JobStatus], hours: Any, max_seconds: int,
                   now: float) -> tuple[int, float]:
    """(new limit in seconds from the job's start, new end) for "extend by ``hours``"."""
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise OptionsError("hours", "must be a number of hours above 0")
    if st is None or st.state == PENDING or not st.started_at or not st.ends_at:
        raise OptionsError("hours", "the session is not running (or its limit is unknown)")
    if st.ends_at <= now:
        raise OptionsError("hours", "the session's limit has already passed")
    new_end = st.ends_at + float(hours) * 3600
    limit = int(round(new_end - st.started_at))
    if limit > max_seconds:
        left = max(0.0, (st.started_at + max_seconds - st.ends_at) / 3600)
        raise OptionsError("hours", f"at most {left:.2f} h more: sessions here run at most "
                           f"{max_seconds / 3600:g} h")
    return limit, new_end
