"""Live availability per HTCondor lane and per Slurm partition and reservation (pure functions).

What the spawn page's "Available now" panel and ``GET /hub/api/batch/availability`` show, built
from ONE cached view per backend (``appliance.hub.availability`` refreshes it at most once per
interval for all users) and the caller's identity, for a job of a given :class:`Size`:

* HTCondor (the notebook lane's slot ads, the same ``NotebookSlot`` query as ``lane``): free
  cores and GPUs of the partitionable notebook slots, idle nodes (no notebook running), memory of
  the slot with the most memory left, notebooks running, and ``fits_now``: how many notebooks of
  the size the free parts hold (each needs all of it, disk included, from ONE slot). HTCondor has
  no start estimate: the expected start is "now" when one fits, else unknown.
* Slurm (``scontrol show node --json`` for the nodes' allocation, ``squeue --json`` for running
  jobs' end times and pending jobs, partitions and reservations from the scheduler's cached
  view): only partitions and reservations the caller may use (``slurm.access``), only nodes a job
  of theirs could start on now (usable, not kept by someone else's reservation). In an exclusive
  partition a node counts only when idle. The expected start is an estimate from the same data:
  "now" when the size fits on a node now, else the earliest time the running jobs' time limits
  free one node enough (a bound: jobs may end sooner; jobs pending ahead, whose number is given,
  and preemption are not simulated). ``sbatch --test-only`` would be Slurm's own answer, but it
  runs as the user (the submit helper) and costs the controller one scheduling pass per call, so
  it would be one query per user and refresh instead of one per interval.

Every function takes ``now`` (the scheduler's clock); nothing here reads a clock or runs a query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .lane import _int
from .slurm.access import Identity, may_use, node_problems, reservation_access
from .slurm.cluster import ClusterInfo, Partition, as_list, expand_hostlist, num


@dataclass(frozen=True)
class Size:
    """The job the caller has in mind (the form's current values)."""

    cpus: int = 1
    memory_mb: int = 2048
    gpus: int = 0


def _gpus(text: str) -> dict[str, int]:
    """``gpu:a100:2(S:0-1),gpu:1,shard:4`` -> {"a100": 2, "gpu": 1} (untyped GPUs are "gpu")."""
    out: dict[str, int] = {}
    for item in as_list(text):
        fields_ = re.sub(r"\(.*?\)", "", item).split(":")
        if fields_[0] != "gpu" or len(fields_) < 2:
            continue
        kind = fields_[1] if len(fields_) > 2 else "gpu"
        try:
            count = int(fields_[-1])
        except ValueError:
            continue
        out[kind] = out.get(kind, 0) + count
    return out


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _start(at: Optional[float], estimate: str, text: str) -> dict:
    return {"at": at, "estimate": estimate, "text": text}


# --------------------------------------------------------------------------------------------
# HTCondor: the notebook lane
# --------------------------------------------------------------------------------------------
def condor_lane(ads: Iterable[Any], size: Size, disk_mb: int, now: float) -> dict:
    """The lane's availability from its notebook slot ads (``lane.SLOT_PROJECTION``)."""
    free_cores = total_cores = running = fits = 0
    gpus: dict[str, int] = {}
    per_node: dict[str, dict] = {}
    best_mem, best_node = 0, None
    for ad in ads:
        node = str(ad.get("Machine", "") or str(ad.get("Name", "")).split("@")[-1])
        info = per_node.setdefault(node, {"busy": False})
        kind = str(ad.get("SlotType", "") or "")
        if kind == "Dynamic" or ad.get("DynamicSlot") is True:
            running += 1
            info["busy"] = True
            continue
        partitionable = kind == "Partitionable" or ad.get("PartitionableSlot") is True
        cpus, mem, free_gpus = _int(ad, "Cpus"), _int(ad, "Memory"), _int(ad, "GPUs")
        if partitionable:
            total_cores += _int(ad, "TotalSlotCpus", cpus)
            disk = _int(ad, "Disk") // 1024  # KiB
            if cpus < _int(ad, "TotalSlotCpus", cpus):
                info["busy"] = True
            n = min(cpus // max(1, size.cpus), mem // max(1, size.memory_mb),
                    disk // max(1, disk_mb),
                    free_gpus // size.gpus if size.gpus else math.inf)
        else:  # a static notebook slot: free while unclaimed
            total_cores += cpus
            if str(ad.get("State", "")) == "Claimed":
                running += 1
                info["busy"] = True
                continue
            n = int(cpus >= size.cpus and mem >= size.memory_mb and free_gpus >= size.gpus)
        free_cores += cpus
        if free_gpus:
            kind_ = str(ad.get("GPUs_DeviceName") or "gpu")
            _add(gpus, {kind_: free_gpus})
        fits += int(n)
        if mem > best_mem:
            best_mem, best_node = mem, node
    start = (_start(now, "now", "now") if fits else
             _start(None, "unknown", "when a notebook ends (HTCondor gives no estimate)"))
    return {
        "kind": "lane", "name": "lane", "label": "notebook lane",
        "nodes": len(per_node), "usable_nodes": len(per_node),
        "idle_nodes": sum(1 for v in per_node.values() if not v["busy"]),
        "free_cores": free_cores, "total_cores": total_cores,
        "free_gpus": sum(gpus.values()), "free_gpus_by_type": gpus,
        "largest_free_memory_mb": best_mem, "largest_free_node": best_node,
        "notebooks_running": running, "pending_jobs": None,
        "fits_now": fits, "expected_start": start,
    }


# --------------------------------------------------------------------------------------------
# Slurm: partitions and reservations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeUse:
    """A node's allocation now (``scontrol show node --json``)."""

    alloc_cpus: int
    alloc_memory_mb: int
    gpus: dict[str, int] = field(default_factory=dict)  # configured, by type
    gpus_used: dict[str, int] = field(default_factory=dict)

    def free_gpus(self) -> dict[str, int]:
        return {k: max(0, v - self.gpus_used.get(k, 0)) for k, v in self.gpus.items()}


@dataclass(frozen=True)
class Job:
    """A running or pending job of anyone (``squeue --json``)."""

    partition: str
    state: str  # RUNNING | PENDING
    nodes: tuple[str, ...]
    cpus_per_node: int
    end: Optional[float]  # running: start + time limit (Slurm's end_time)


def parse_node_use(data: dict) -> dict[str, NodeUse]:
    out = {}
    for n in data.get("nodes", []) or []:
        name = n.get("name") or ""
        if name:
            out[name] = NodeUse(int(num(n.get("alloc_cpus")) or 0),
                                int(num(n.get("alloc_memory")) or 0),
                                _gpus(n.get("gres") or ""), _gpus(n.get("gres_used") or ""))
    return out


def parse_jobs(data: dict) -> list[Job]:
    out = []
    for j in data.get("jobs", []) or []:
        states = [str(s).upper() for s in as_list(j.get("job_state"))]
        state = "RUNNING" if "RUNNING" in states else "PENDING" if "PENDING" in states else ""
        if not state:
            continue
        nodes = tuple(expand_hostlist(str(j.get("nodes") or ""))) if state == "RUNNING" else ()
        cpus = int(num(j.get("cpus")) or 1)
        end = num(j.get("end_time"))
        for part in str(j.get("partition") or "").split(",")[:1]:
            out.append(Job(part, state, nodes, max(1, cpus // max(1, len(nodes) or 1)),
                           float(end) if end and end != math.inf else None))
    return out


@dataclass
class SlurmView:
    """One refresh's data: the cluster (partitions/reservations cached, nodes fresh), the nodes'
    allocation, every running and pending job."""

    cluster: ClusterInfo
    use: dict[str, NodeUse]
    jobs: list[Job]


def _shared(p: Partition) -> int:
    """Jobs per core the partition lets share (1: not shared, 0: exclusive nodes)."""
    kind, _, n = p.oversubscribe.partition(":")
    if kind == "exclusive":
        return 0
    return max(1, int(n or 1)) if kind in ("force", "yes") else 1


def _fits_on(v: SlurmView, p: Partition, node: str, size: Size,
             jobs: list[Job], gone: int = 0) -> int:
    """Jobs of ``size`` that node could take now in ``p``, the first ``gone`` of ``jobs`` (the
    node's running jobs, by end time) ended."""
    n, use = v.cluster.nodes[node], v.use.get(node, NodeUse(0, 0))
    if n.cpus < size.cpus or n.memory_mb < size.memory_mb:
        return 0
    left = jobs[gone:]
    freed = sum(j.cpus_per_node for j in jobs[:gone])
    alloc = max(0, use.alloc_cpus - freed)
    total_gpus = sum(use.gpus.values())
    if size.gpus > total_gpus:
        return 0
    # which job holds which GPU is not in the data: they are free once no job is left
    gpus = total_gpus if not left else sum(use.free_gpus().values())
    by_gpu = gpus // size.gpus if size.gpus else math.inf
    share = _shared(p)
    if share == 0:  # whole nodes only
        return int(alloc == 0 and by_gpu >= 1)
    if share == 1:
        by_cpu = (n.cpus - alloc) // size.cpus
    else:  # cores shared by up to `share` jobs of sharing partitions
        load = sum(j.cpus_per_node for j in left)
        by_cpu = max(0, share * n.cpus - load) // size.cpus
    free_mem = n.memory_mb - max(0, use.alloc_memory_mb)
    by_mem = free_mem // size.memory_mb if use.alloc_memory_mb and size.memory_mb else math.inf
    return int(max(0, min(by_cpu, by_mem, by_gpu)))


def _pool(v: SlurmView, p: Partition, nodes: list[str], size: Size, now: float,
          kind: str, name: str, configured: list[str]) -> dict:
    """One partition's or reservation's numbers: ``nodes`` those a job of the caller could start
    on now, ``configured`` all of its nodes (the "of" of the counts)."""
    exclusive = _shared(p) == 0
    running = {n: sorted((j for j in v.jobs if j.state == "RUNNING" and n in j.nodes),
                         key=lambda j: j.end or math.inf) for n in nodes}
    free_cores = idle = fits = 0
    gpus: dict[str, int] = {}
    best_mem, best_node = 0, None
    for name_ in nodes:
        n, use = v.cluster.nodes[name_], v.use.get(name_, NodeUse(0, 0))
        is_idle = use.alloc_cpus == 0
        idle += is_idle
        if exclusive and not is_idle:
            continue
        free_cores += max(0, n.cpus - use.alloc_cpus)
        _add(gpus, use.free_gpus())
        mem = n.memory_mb - use.alloc_memory_mb
        if mem > best_mem:
            best_mem, best_node = mem, name_
        fits += _fits_on(v, p, name_, size, running[name_])
    pending = sum(1 for j in v.jobs if j.state == "PENDING" and j.partition == p.name)
    ahead = f" ({pending} job{'s' if pending != 1 else ''} pending here may start first)" \
        if pending else ""
    if fits:
        start = _start(now, "now", "now" + ahead)
    else:
        start = _earliest(v, p, nodes, size, running, ahead)
    return {
        "kind": kind, "name": name, "label": f"{kind} {name}",
        "nodes": len(configured), "usable_nodes": len(nodes), "idle_nodes": idle,
        "free_cores": free_cores,
        "total_cores": sum(v.cluster.nodes[n].cpus for n in configured if n in v.cluster.nodes),
        "free_gpus": sum(gpus.values()), "free_gpus_by_type": gpus,
        "largest_free_memory_mb": best_mem, "largest_free_node": best_node,
        "notebooks_running": None, "pending_jobs": pending,
        "fits_now": fits, "expected_start": start, "oversubscribe": p.oversubscribe,
    }


def _earliest(v: SlurmView, p: Partition, nodes: list[str], size: Size,
              running: dict[str, list[Job]], ahead: str) -> dict:
    """When the running jobs' time limits first free one node enough for ``size``."""
    best: Optional[float] = None
    ever = False
    for node in nodes:
        n = v.cluster.nodes[node]
        use = v.use.get(node, NodeUse(0, 0))
        if n.cpus < size.cpus or n.memory_mb < size.memory_mb or \
                sum(use.gpus.values()) < size.gpus:
            continue
        ever = True
        jobs = running[node]
        for gone in range(1, len(jobs) + 1):
            end = jobs[gone - 1].end
            if end is None:
                break
            if _fits_on(v, p, node, size, jobs, gone):
                best = end if best is None else min(best, end)
                break
    if best is not None:
        return _start(best, "after_running_jobs",
                      "when running jobs reach their time limit (they may end sooner)" + ahead)
    if not ever:
        return _start(None, "never", "no usable node here is that large")
    return _start(None, "unknown", "no estimate: the nodes' jobs have no time limit" + ahead)


def slurm_pools(v: SlurmView, who: Identity, now: float, size: Size,
                submit_hosts: Iterable[str] = (), first: str = "") -> list[dict]:
    """Per partition and reservation ``who`` may use: availability for a job of ``size``
    (partitions ``first`` and by name; then reservations)."""
    c = v.cluster
    hosts = tuple(submit_hosts)
    out = []
    for pname in sorted(may_use(c, who, hosts), key=lambda n: (n != first, n)):
        p = c.partitions[pname]
        problems = node_problems(c, p, who, now)
        nodes = [n for n, why in problems.items() if not why and n in c.nodes]
        out.append(_pool(v, p, nodes, size, now, "partition", pname, p.nodes))
    mine = set(may_use(c, who, hosts))
    for r in sorted(c.reservations.values(), key=lambda r: r.name):
        if r.end <= now or "MAINT" in r.flags or not reservation_access(r, who):
            continue
        parts = [q for q in sorted(mine, key=lambda n: (n != first, n))
                 if set(c.partitions[q].nodes) & set(r.nodes)
                 and (not r.partition or r.partition == q)]
        if not parts:
            continue
        p = c.partitions[parts[0]]
        problems = node_problems(c, p, who, now, reservation=r.name) if r.active(now) else {}
        nodes = [n for n, why in problems.items() if not why and n in c.nodes]
        pool = _pool(v, p, nodes, size, now, "reservation", r.name,
                     [n for n in r.nodes if n in p.nodes])
        pool.update(partition=p.name, partitions=parts, starts_at=r.start,
                    ends_at=r.end if r.end != math.inf else None)
        if not r.active(now):
            pool["expected_start"] = _start(r.start, "reservation_start",
                                            "when the reservation starts")
        out.append(pool)
    return out
