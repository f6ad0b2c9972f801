"""What a cluster can EVER provide: the largest CPU, memory and GPU counts per lane, partition and
reservation, and their node features, from one cached view of the slots / nodes.

This is not the live availability (free cores now, which the spawn page shows): it is the
ceiling. A request above it can never start, so the backend refuses it with HTTP 400 naming the
field and the largest value there is, before anything is submitted; a queued job whose request
no pool can hold (the view changed after submission) fails within one poll interval.

Each backend builds its view from data it already fetches in one shared query (HTCondor: the
lane collector's notebook slot ads; Slurm: ``scontrol show node/partition/reservation``), so N
users cost one query per refresh. Pure data and checks here; the queries live in the backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from ...options import OptionsError, UserOptions


@dataclass(frozen=True)
class NodeCeiling:
    """One node's (or HTCondor partitionable slot's) full size, whatever is in use now."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int = 0
    features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Pool:
    """A place a notebook can go: the HTCondor lane, a Slurm partition or reservation."""

    kind: str  # "lane" | "partition" | "reservation"
    name: str
    nodes: tuple[NodeCeiling, ...]

    @property
    def label(self) -> str:
        return f"{'the notebook lane' if self.kind == 'lane' else self.kind + ' ' + self.name}"

    @property
    def max_cpus(self) -> int:
        return max((n.cpus for n in self.nodes), default=0)

    @property
    def max_memory_mb(self) -> int:
        return max((n.memory_mb for n in self.nodes), default=0)

    @property
    def max_gpus(self) -> int:
        return max((n.gpus for n in self.nodes), default=0)

    @property
    def features(self) -> frozenset[str]:
        out: set[str] = set()
        for n in self.nodes:
            out |= n.features
        return frozenset(out)

    def fits(self, cpus: int, memory_mb: float, gpus: int) -> bool:
        """Some ONE node of the pool could hold the whole request (all at once)."""
        return any(n.cpus >= cpus and n.memory_mb >= memory_mb and n.gpus >= gpus
                   for n in self.nodes)

    def summary(self) -> dict:
        return {"kind": self.kind, "name": self.name, "nodes": len(self.nodes),
                "max_cpus": self.max_cpus, "max_memory_gb": round(self.max_memory_mb / 1024, 2),
                "max_gpus": self.max_gpus, "features": sorted(self.features)}


@dataclass
class CapacityView:
    """The ceilings of one backend, by pool key (``lane``, ``partition:jhub``, ...)."""

    backend: str
    pools: dict[str, Pool] = field(default_factory=dict)
    fetched: float = 0.0  # the backend's clock

    def pool(self, kind: str, name: str = "") -> Optional[Pool]:
        return self.pools.get(f"{kind}:{name}" if name else kind)

    def summary(self) -> dict:
        return {"backend": self.backend, "fetched": self.fetched,
                "pools": [p.summary() for p in self.pools.values()]}


def _gib(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB"


def where_more(pools: Iterable[Pool], attr: str, wanted: float) -> list[str]:
    """Names of the other pools whose largest node has at least ``wanted`` of ``attr``."""
    return [p.label for p in pools if getattr(p, attr) >= wanted]


def check_fits(pool: Pool, options: UserOptions, others: Iterable[Pool] = ()) -> None:
    """OptionsError naming the field and the largest value ``pool`` has, if no node of it could
    ever hold the request; else nothing."""
    others = [p for p in others if p is not pool]
    if not pool.nodes:
        raise OptionsError("backend" if pool.kind == "lane" else pool.kind,
                           f"{pool.label} has no nodes at all")
    mem = options.memory_gb * 1024
    checks = (
        ("gpus", options.gpus or 0, pool.max_gpus, "max_gpus", lambda v: f"{int(v)} GPU(s)"),
        ("cpus", options.cpus, pool.max_cpus, "max_cpus", lambda v: f"{int(v)} CPU cores"),
        ("memory_gb", mem, pool.max_memory_mb, "max_memory_mb", _gib),
    )
    for fieldname, wanted, largest, attr, fmt in checks:
        if wanted > largest:
            alt = where_more(others, attr, wanted)
            raise OptionsError(
                fieldname,
                f"no node of {pool.label} has {fmt(wanted)}; the largest available there is "
                f"{fmt(largest)}" + (f" (try {' or '.join(alt)})" if alt else ""))
    if not pool.fits(options.cpus, mem, options.gpus or 0):
        best = max(pool.nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb))
        raise OptionsError(
            "cpus", f"no single node of {pool.label} has {options.cpus} cores, "
            f"{_gib(mem)} and {options.gpus or 0} GPU(s) together; the largest node "
            f"({best.name}) has {best.cpus} cores, {_gib(best.memory_mb)}, {best.gpus} GPU(s)")


def never_fits(pool: Optional[Pool], cpus: int, memory_mb: float, gpus: int) -> Optional[str]:
    """For a queued job: why no node of ``pool`` can ever hold it, or None (it may start)."""
    if pool is None or not pool.nodes:
        return None if pool is None else f"{pool.label} has no nodes any more"
    if pool.fits(cpus, memory_mb, gpus):
        return None
    return (f"no node of {pool.label} can ever hold {cpus} cores, {_gib(memory_mb)} and {gpus} "
            f"GPU(s); the largest there: {pool.max_cpus} cores, {_gib(pool.max_memory_mb)}, "
            f"{pool.max_gpus} GPU(s)")
