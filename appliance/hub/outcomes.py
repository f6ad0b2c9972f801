"""The last outcome of a user's spawn, and the plain-language hints for the schedulers' reasons.

Every spawn ends somewhere: started, refused before submission, failed, held, ended by its
wall-clock limit, cancelled by someone else, node lost, stopped by the user, culled as idle. The
spawner records the last one as an :class:`Outcome` in its own state (``orm_spawner.state``, the
hub's database: it survives a hub restart and is never a side file); the home page and
``GET /hub/api/batch/session`` show it, so a user who comes back later learns what happened.

Pure: no JupyterHub, no scheduler calls. The time is always passed in by the caller.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

#: the kinds of outcome (``Outcome.kind``) and their headline on the home page
KINDS = {
    "started": "Your server started",
    "refused": "Your last request was refused before anything was submitted",
    "failed": "Your last server failed to start",
    "held": "Your notebook job was put on hold, so the server was stopped",
    "time_limit": "Your server ended at its wall-clock limit",
    "cancelled": "Your notebook job was cancelled by someone else",
    "lost_node": "Your notebook job lost its node",
    "ended": "Your notebook job ended",
    "stopped": "You stopped your server",
    "culled": "Your server was stopped because it was idle",
    "timed_out": "Your server did not start in time",
}

# HTCondor HoldReasonCode -> hint (docs: "Job ClassAd attributes", HoldReasonCode).
HTCONDOR_HOLD_HINTS = {
    1: "A user or an administrator put the job on hold (condor_hold). Start a new server; ask "
       "your site's support if you did not do it yourself.",
    3: "The job's own policy (periodic_hold) held it.",
    4: "Your Kerberos credential was missing or invalid when the job started: log out and log in "
       "again, then start a new server.",
    6: "The job could not start its program on the node (file system or software problem there). "
       "Try again; tell your site's support if it keeps happening.",
    7: "The job could not write its output file: check that your home directory is writable and "
       "not over quota.",
    12: "Files could not be transferred: check your home directory (space, quota, permissions).",
    13: "Files could not be transferred: check your home directory (space, quota, permissions).",
    14: "The job's working directory (your home) could not be used on the node: file system "
        "problem or quota. Tell your site's support if your home looks fine.",
    21: "The execute node held the job.",
    23: "Your account could not be used on the node: tell your site's support.",
    26: "The site's policy held the job (SYSTEM_PERIODIC_HOLD): often memory above the request. "
        "Ask for more memory, or use less.",
    34: "The job used more memory than it asked for: start again with more memory.",
    46: "The session reached its wall-clock limit (the runtime you chose). Start a new server, "
        "with a longer runtime if you need one.",
    47: "The session reached its execution-time limit.",
}

# Slurm reasons (state_reason / job state) -> hint.
SLURM_HINTS = {
    "JobHeldUser": "You or a tool acting as you held the job (scontrol hold / release).",
    "JobHeldAdmin": "An administrator held the job: ask your site's support.",
    "TIMEOUT": "The session reached its wall-clock limit (the runtime you chose). Start a new "
               "server, with a longer runtime if you need one.",
    "CANCELLED": "Someone (you from a shell, or an administrator) cancelled the job with scancel.",
    "NODE_FAIL": "The node running your notebook failed: start a new server; unsaved work in the "
                 "kernel is lost.",
    "OUT_OF_MEMORY": "The job used more memory than it asked for: start again with more memory.",
    "PREEMPTED": "A job of higher priority took the node: start a new server, in the jhub "
                 "partition to avoid preemption.",
    "FAILED": "The job's program failed: see the job output in ~/.jupyterhub-batch/.",
    "BOOT_FAIL": "The node failed to boot: start a new server.",
    "DEADLINE": "The job reached its deadline.",
}

_MEMORY_RE = re.compile(r"memory|MemoryUsage|RequestMemory", re.I)


def hint_for(backend: str, *, code: Optional[int] = None, reason: str = "",
             state: str = "") -> str:
    """A plain-language hint for the scheduler's reason ('' if none fits)."""
    if backend == "htcondor":
        if code is not None and code in HTCONDOR_HOLD_HINTS:
            if code == 26 and not _MEMORY_RE.search(reason or ""):
                return "The site's policy held the job (SYSTEM_PERIODIC_HOLD)."
            return HTCONDOR_HOLD_HINTS[code]
        if "credential" in (reason or "").lower() or "krb" in (reason or "").lower():
            return HTCONDOR_HOLD_HINTS[4]
        return ""
    if backend == "slurm":
        for key in (state, reason.split(":")[0].strip() if reason else ""):
            if key and key in SLURM_HINTS:
                return SLURM_HINTS[key]
    return ""


@dataclass
class Outcome:
    """One spawn's end (or start), as shown to the user and stored in the hub's database."""

    kind: str  # one of KINDS
    message: str  # the whole sentence the user sees (includes the scheduler's own words)
    time: float  # seconds since the epoch (the caller's clock)
    reason: str = ""  # the scheduler's own words (hold reason, state, pending reason)
    hint: str = ""  # what to do (hint_for), may be ''
    job_id: str = ""
    backend: str = ""
    code: Optional[int] = None  # HTCondor HoldReasonCode, when there is one
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")

    @property
    def title(self) -> str:
        return KINDS[self.kind]

    def to_state(self) -> dict[str, Any]:
        """JSON-able dict for ``Spawner.get_state()`` (no secrets: words and ids only)."""
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in (None, "", {})} | {"kind": self.kind}

    @classmethod
    def from_state(cls, data: Optional[Mapping[str, Any]]) -> Optional["Outcome"]:
        """The stored outcome, or None (missing or not understood: an older hub's state)."""
        if not isinstance(data, Mapping) or data.get("kind") not in KINDS:
            return None
        try:
            return cls(kind=data["kind"], message=str(data.get("message", "")),
                       time=float(data.get("time", 0)), reason=str(data.get("reason", "")),
                       hint=str(data.get("hint", "")), job_id=str(data.get("job_id", "")),
                       backend=str(data.get("backend", "")),
                       code=int(data["code"]) if data.get("code") is not None else None,
                       extra=dict(data.get("extra") or {}))
        except (TypeError, ValueError):
            return None

    def view(self) -> dict[str, Any]:
        """What the home page and the REST API show."""
        return {**self.to_state(), "title": self.title}


def job_words(backend: str, job_id: str) -> str:
    return f"{'HTCondor' if backend == 'htcondor' else 'Slurm' if backend == 'slurm' else backend} " \
           f"job {job_id}"


LOST_NODE_HINT = ("The node running your notebook went away: start a new server; unsaved work in "
                  "the kernel is lost.")


def unreachable_outcome(backend: str, job_id: str, host: str, silent: float, *,
                        now: float) -> Outcome:
    """The server of a job the scheduler still lists as running has not answered the hub for
    ``silent`` seconds: its node is gone (appliance.hub.reachability); the hub removed the job."""
    where = f" on {host}" if host else ""
    return Outcome("lost_node", f"{job_words(backend, job_id)} lost its node: its server{where} "
                   f"has not answered for {silent:.0f} s, so the hub removed the job.", now,
                   f"{host or 'the node'} unreachable", LOST_NODE_HINT, job_id, backend)


def interrupted_outcome(backend: str, job_id: str, *, now: float) -> Outcome:
    """The hub restarted while this spawn was in progress (its job had not started the server)."""
    return Outcome("failed", f"The hub restarted while your server was starting: "
                   f"{job_words(backend, job_id)} was removed. Please start your server again.",
                   now, "hub restarted during the spawn",
                   "Start your server again; running servers are not affected by a hub restart.",
                   job_id, backend)


def ended_outcome(backend: str, job_id: str, *, state: str, reason: str, code: Optional[int],
                  end_state: str, now: float, was_running: bool) -> Outcome:
    """The outcome of a job that left the running state on its own (poll saw it).

    ``state``: the JobStatus state (held | done | pending | gone); ``end_state``: the backend's
    own final word (Slurm job state such as TIMEOUT, HTCondor 'removed'); ``code``: HTCondor's
    HoldReasonCode if held.
    """
    who = job_words(backend, job_id)
    said = f" ({reason})" if reason else ""
    if state == "held":
        kind = "time_limit" if (backend == "htcondor" and code == 46) else "held"
        msg = (f"{who} reached its wall-clock limit and was removed{said}." if kind == "time_limit"
               else f"{who} was put on hold and removed{said}.")
        return Outcome(kind, msg, now, reason, hint_for(backend, code=code, reason=reason),
                       job_id, backend, code)
    if state == "pending" and was_running:
        return Outcome("lost_node", f"{who} lost its node and was removed{said}.", now, reason,
                       LOST_NODE_HINT, job_id, backend)
    key = end_state.upper()
    if key == "TIMEOUT":
        return Outcome("time_limit", f"{who} reached its wall-clock limit{said}.", now, reason,
                       SLURM_HINTS["TIMEOUT"], job_id, backend)
    if key == "CANCELLED" or key == "REMOVED":
        return Outcome("cancelled", f"{who} was cancelled outside the hub{said}.", now, reason,
                       hint_for(backend, state="CANCELLED") or
                       "Someone (you from a shell, or an administrator) removed the job "
                       "(condor_rm).", job_id, backend)
    if key == "NODE_FAIL":
        return Outcome("lost_node", f"{who} lost its node{said}.", now, reason,
                       SLURM_HINTS["NODE_FAIL"], job_id, backend)
    hint = hint_for(backend, state=key, reason=reason)
    return Outcome("ended", f"{who} ended{said}.", now, reason,
                   hint or "The notebook job ended by itself: see its output in "
                   "~/.jupyterhub-batch/.", job_id, backend)
