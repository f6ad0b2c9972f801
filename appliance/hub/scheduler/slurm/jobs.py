"""Slurm jobs -> ``JobStatus``, and when a pending job will never start (pure functions).

``squeue --json`` (24.11): ``job_state`` is a list (``["PENDING"]``, ``["RUNNING",
"COMPLETING"]``), ``nodes`` a hostlist, ``exit_code`` a ``{"return_code", "signal"}`` object.
What :func:`fatal_reason` needs beyond the common ``JobStatus`` fields (partition, reservation,
features, the pending reason code) travels with the status as its ``detail`` (:class:`JobMeta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ....constraint import ConstraintError, parse
from ..base import DONE, HELD, PENDING, RUNNING, UNKNOWN, JobStatus
from ..routehost import HostRefused, checked_host
from .access import Identity, node_problems, suggest
from .cluster import ClusterInfo, as_list, expand_hostlist, num

# Pending reasons after which a notebook job will not start on its own.
FATAL_PENDING_REASONS = {
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionNodeLimit": "the request exceeds the partition's node limit",
    "PartitionTimeLimit": "the runtime exceeds the partition's time limit",
    "PartitionConfig": "the partition's configuration does not allow the request",
    "BadConstraints": "no node can satisfy the requested features/resources",
    "FrontEndDown": "the front end nodes are down",
    "InvalidAccount": "the job's account is invalid",
    "InvalidQOS": "the job's QOS is invalid",
    "AccountNotAllowed": "the account may not use this partition",
    "QOSNotAllowed": "the QOS may not use this partition",
    "DependencyNeverSatisfied": "a dependency can never be satisfied",
    "ReservationDeleted": "the reservation was deleted",
}
# Pending reasons that may hide "nothing in this partition can run the job": check the nodes.
NODE_PENDING_REASONS = {"ReqNodeNotAvail", "Resources", "Priority", "Reservation", "NodeDown"}
HELD_REASONS = {"JobHeldUser", "JobHeldAdmin"}
DONE_STATES = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY",
}


@dataclass(frozen=True)
class JobMeta:
    """What squeue said about a job beyond JobStatus (its ``detail``, for fatal_reason)."""

    user: str
    partition: str
    reservation: str
    features: str
    state_reason: str
    expected_start: Optional[float] = None  # pending: Slurm's estimate (backfill), if it has one
    priority: Optional[float] = None
    submit_time: Optional[float] = None


def _reason_text(job: dict) -> str:
    reason = str(job.get("state_reason") or "")
    desc = str(job.get("state_description") or "")
    if reason == "None":
        reason = ""
    if desc and desc != reason:
        if desc.startswith(reason):
            return desc
        return f"{reason}: {desc}" if reason else desc
    return reason


def _time(value) -> Optional[float]:
    t = num(value)
    return float(t) if t and t != float("inf") else None


def _meta(job: dict) -> JobMeta:
    return JobMeta(
        user=str(job.get("user_name") or ""),
        partition=str(job.get("partition") or ""),
        reservation=str(job.get("resv_name") or ""),
        features=str(job.get("features") or ""),
        state_reason=str(job.get("state_reason") or ""),
        expected_start=_time(job.get("start_time")),
        priority=num(job.get("priority")),
        submit_time=_time(job.get("submit_time")),
    )


def node_host(nodes: list[str], known: Optional[dict[str, str]]) -> tuple[Optional[str], str]:
    """(host, why refused) of an allocation: its first node, which must be one of ``known``
    (NodeName -> the name to route to, from ``scontrol show node``), as a strict host name.
    ``known`` None: not known yet (no host, no error)."""
    if not nodes or known is None:
        return None, ""
    if nodes[0] not in known:
        return None, f"node {nodes[0]!r} is not one of the nodes Slurm lists"
    try:
        return checked_host(known[nodes[0]], known.values(), f"node {nodes[0]}"), ""
    except HostRefused as e:
        return None, str(e)


def job_status(job: dict, known_nodes: Optional[dict[str, str]] = None) -> JobStatus:
    """One squeue --json job -> JobStatus (with its JobMeta as ``detail``). The host is the
    allocation's node (the controller's record), only if it is one of ``known_nodes``
    (:func:`node_host`)."""
    job_id = str(job.get("job_id"))
    states = [str(s).upper() for s in as_list(job.get("job_state"))]
    base = states[0] if states else ""
    reason = _reason_text(job)
    owner = job.get("user_name") or None
    meta = _meta(job)
    host, host_error = node_host(expand_hostlist(str(job.get("nodes") or "")), known_nodes)
    if "COMPLETING" in states or base in DONE_STATES:
        ec = job.get("exit_code") or {}
        rc = num(ec.get("return_code"))
        sig = ((ec.get("signal") or {}).get("name")) or ""
        bits = [base] + ([str(job.get("state_reason"))]
                         if job.get("state_reason") not in (None, "", "None") else [])
        detail = f"signal {sig}" if sig else (f"exit code {int(rc)}" if rc is not None else "")
        text = ": ".join(bits) + (f" ({detail})" if detail else "")
        final = base if base in DONE_STATES else (
            "TIMEOUT" if job.get("state_reason") == "TimeLimit" else "")
        return JobStatus(job_id, DONE, None, text, owner, meta, end_state=final)
    if base == "RUNNING":
        return JobStatus(job_id, RUNNING, host, reason, owner, meta,
                         ends_at=_time(job.get("end_time")),
                         started_at=_time(job.get("start_time")), host_error=host_error)
    if base in ("SUSPENDED", "STOPPED"):
        return JobStatus(job_id, HELD, host, reason or base.lower(), owner, meta)
    if base in ("REQUEUE_HOLD", "SPECIAL_EXIT") or job.get("state_reason") in HELD_REASONS:
        return JobStatus(job_id, HELD, None, reason or base, owner, meta)
    if base in ("PENDING", "REQUEUED", "REQUEUE_FED", "CONFIGURING", "RESIZING"):
        return JobStatus(job_id, PENDING, None, reason, owner, meta)
    return JobStatus(job_id, UNKNOWN, host, reason or base, owner, meta)


def parse_jobs(data: dict, job_name: Optional[str] = None,
               known_nodes: Optional[dict[str, str]] = None) -> dict[str, JobStatus]:
    """``squeue --json`` -> {job id: JobStatus}, only jobs named ``job_name`` if given;
    ``known_nodes``: see :func:`job_status`."""
    statuses = {}
    for job in data.get("jobs", []) or []:
        if job_name is not None and job.get("name") != job_name:
            continue
        st = job_status(job, known_nodes)
        statuses[st.job_id] = st
    return statuses


def needs_nodes(status: JobStatus) -> bool:
    """A pending job whose reason may mean "no node can ever run it" (check the nodes)."""
    meta = status.detail
    return (status.state == PENDING and isinstance(meta, JobMeta)
            and meta.state_reason in NODE_PENDING_REASONS)


def fatal_reason(status: JobStatus, cluster: Optional[ClusterInfo],
                 identity_of: Callable[[str], Identity], now: float,
                 submit_hosts: tuple[str, ...] = ()) -> Optional[str]:
    """Why a pending job cannot start (partition down, no usable node for it), or None.

    ``identity_of(user)`` gives the owner's identity; it is asked only for the node check.
    """
    meta = status.detail
    if status.state != PENDING or not isinstance(meta, JobMeta):
        return None
    if meta.state_reason in FATAL_PENDING_REASONS:
        return (f"Job {status.job_id} cannot start: {FATAL_PENDING_REASONS[meta.state_reason]} "
                f"(Slurm: {status.reason or meta.state_reason}).")
    if cluster is None or meta.state_reason not in NODE_PENDING_REASONS:
        return None
    p = cluster.partitions.get(meta.partition)
    if p is None:
        return None
    constraint = meta.features or None
    if constraint:
        try:
            parse(constraint)
        except ConstraintError:  # not one of ours: do not judge
            constraint = None
    who = identity_of(meta.user)
    problems = node_problems(cluster, p, who, now, meta.reservation or None, constraint)
    if any(not why for why in problems.values()):
        return None
    detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
    return (f"Job {status.job_id} cannot start: no node of partition {p.name} can take jobs "
            f"({detail}).{suggest(cluster, who, now, submit_hosts, p.name)}")
