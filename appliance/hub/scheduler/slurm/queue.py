"""Where a pending notebook waits: its place in its partition's queue, Slurm's expected start,
and what Slurm can ever provide per partition and reservation (pure functions).

The positions come from ONE shared ``squeue --json --states=PENDING`` over the partitions that
hold pending notebooks, run by the backend at most every ``pending_check_seconds`` while any
notebook is pending (never one query per user); the expected start is Slurm's own estimate
(``start_time`` of a pending job, set by the backfill scheduler), the same number
``squeue --start`` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ..capacity import CapacityView, NodeCeiling, Pool
from .cluster import ClusterInfo, num


@dataclass(frozen=True)
class Place:
    position: int  # 1 = next to start in its partition
    pending: int  # pending jobs in that partition
    partition: str


def queue_positions(data: dict) -> dict[str, Place]:
    """``squeue --json --states=PENDING`` -> {job id: Place}, ordered like Slurm's scheduler:
    partition priority tier is the same within a partition, so by job priority (high first),
    then submit time, then job id."""
    by_part: dict[str, list[tuple[float, float, int, str]]] = {}
    for job in data.get("jobs", []) or []:
        states = job.get("job_state") or []
        states = states if isinstance(states, list) else [states]
        if "PENDING" not in [str(s).upper() for s in states]:
            continue
        jid = str(job.get("job_id"))
        prio = num(job.get("priority")) or 0
        submit = num(job.get("submit_time")) or 0
        for part in str(job.get("partition") or "").split(","):
            if part:
                by_part.setdefault(part, []).append((-prio, submit, int(jid or 0), jid))
    out: dict[str, Place] = {}
    for part, items in by_part.items():
        items.sort()
        for i, (_, _, _, jid) in enumerate(items, 1):
            if jid not in out:  # a job pending in several partitions: its best place
                out[jid] = Place(i, len(items), part)
    return out


def expected_start_text(ts: Optional[float], now: float) -> str:
    if not ts:
        return "Slurm has no start estimate yet"
    if ts <= now:
        return "Slurm expects it to start as soon as resources free up"
    mins = (ts - now) / 60
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    return f"Slurm's expected start: {when} (in {mins:.0f} min)" if mins < 120 else \
        f"Slurm's expected start: {when} (in {mins / 60:.1f} h)"


def ceilings(c: ClusterInfo) -> CapacityView:
    """Per partition and per reservation: every configured node's full size and features,
    whatever its state now (a drained node may come back; "never" is about the hardware)."""
    def pool(kind: str, name: str, names) -> Pool:
        nodes = [c.nodes[n] for n in names if n in c.nodes]
        return Pool(kind, name, tuple(
            NodeCeiling(n.name, n.cpus, n.memory_mb, n.gpus, frozenset(n.features))
            for n in nodes))

    pools = {f"partition:{p.name}": pool("partition", p.name, p.nodes)
             for p in c.partitions.values()}
    for r in c.reservations.values():
        pools[f"reservation:{r.name}"] = pool("reservation", r.name, r.nodes)
    return CapacityView("slurm", pools, c.fetched)
