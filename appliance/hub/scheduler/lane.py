"""The HTCondor notebook lane as the hub sees it: the notebook slots' ceilings and occupancy.

One collector query (``NotebookSlot =?= true`` startd ads of the lane collector) gives both
what the lane can ever provide (each partitionable slot's ``TotalSlot*`` size, each static
notebook slot's size: :class:`~appliance.hub.scheduler.capacity.CapacityView`) and how full it is
now (CPUs in use of the total, notebooks running). The backend caches it and refreshes it on an
interval, faster while a notebook is pending; every spawner reads the cached answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from .capacity import CapacityView, NodeCeiling, Pool

SLOT_CONSTRAINT = "NotebookSlot =?= true"
SLOT_PROJECTION = [
    "Name", "Machine", "SlotType", "PartitionableSlot", "DynamicSlot", "Cpus", "Memory", "GPUs",
    "TotalSlotCpus", "TotalSlotMemory", "TotalSlotGPUs", "State", "NumDynamicSlots", "Disk",
    # whose job runs there (the startd's record; routehost.slot_host takes route hosts from it)
    "JobId", "GlobalJobId", "RemoteUser",
]


@dataclass(frozen=True)
class FreePart:
    """What is left of one partitionable notebook slot (a new notebook needs ALL of its request
    from ONE of them: free CPUs do not help when the slot's memory or disk is used up)."""

    node: str
    cpus: int
    memory_mb: int
    disk_mb: int

    def text(self) -> str:
        return (f"{self.node}: {self.cpus} CPUs, {self.memory_mb / 1024:.1f} GiB memory, "
                f"{self.disk_mb / 1024:.1f} GiB disk")


@dataclass(frozen=True)
class Occupancy:
    """How full the lane is now."""

    cpus_used: int
    cpus_total: int
    notebooks: int  # dynamic (claimed) notebook slots, i.e. notebooks running
    machines: int
    largest_free: Optional[FreePart] = None  # the partitionable slot with the most CPUs left

    @property
    def full(self) -> bool:
        return self.cpus_total > 0 and self.cpus_used >= self.cpus_total

    def text(self) -> str:
        out = (f"notebook lane: {self.cpus_used} of {self.cpus_total} notebook CPU slots in use "
               f"({self.notebooks} notebook{'s' if self.notebooks != 1 else ''} running on "
               f"{self.machines} node{'s' if self.machines != 1 else ''})")
        if self.largest_free is not None and not self.full:
            out += f"; most left on one node: {self.largest_free.text()}"
        return out

    def as_dict(self) -> dict:
        free = self.largest_free
        return {"cpus_used": self.cpus_used, "cpus_total": self.cpus_total,
                "notebooks": self.notebooks, "machines": self.machines, "full": self.full,
                "largest_free": None if free is None else {
                    "node": free.node, "cpus": free.cpus, "memory_mb": free.memory_mb,
                    "disk_mb": free.disk_mb}}


def _int(ad: Any, key: str, default: int = 0) -> int:
    try:
        value = ad.get(key, default)
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def parse_slots(ads: Iterable[Any], fetched: float) -> tuple[CapacityView, Occupancy]:
    """Slot ads -> (the lane's ceilings, its occupancy). Dynamic slots count as in use; a
    partitionable slot's free part is its ``Cpus``; a static notebook slot is in use when
    claimed."""
    ceilings: dict[str, NodeCeiling] = {}
    used = total = notebooks = 0
    machines: set[str] = set()
    largest: Optional[FreePart] = None
    for ad in ads:
        kind = str(ad.get("SlotType", "") or "")
        name = str(ad.get("Name", "") or "")
        machines.add(str(ad.get("Machine", "") or name.split("@")[-1]))
        if kind == "Dynamic" or ad.get("DynamicSlot") is True:
            notebooks += 1
            continue
        if kind == "Partitionable" or ad.get("PartitionableSlot") is True:
            cpus = _int(ad, "TotalSlotCpus", _int(ad, "Cpus"))
            mem = _int(ad, "TotalSlotMemory", _int(ad, "Memory"))
            gpus = _int(ad, "TotalSlotGPUs", _int(ad, "GPUs"))
            total += cpus
            used += max(0, cpus - _int(ad, "Cpus"))
            free = FreePart(str(ad.get("Machine", "") or name.split("@")[-1]), _int(ad, "Cpus"),
                            _int(ad, "Memory"), _int(ad, "Disk") // 1024)  # Disk is in KiB
            if largest is None or free.cpus > largest.cpus:
                largest = free
        else:  # a static notebook slot
            cpus, mem, gpus = _int(ad, "Cpus"), _int(ad, "Memory"), _int(ad, "GPUs")
            total += cpus
            if str(ad.get("State", "")) == "Claimed":
                used += cpus
                notebooks += 1
        ceilings[name] = NodeCeiling(name=name, cpus=cpus, memory_mb=mem, gpus=gpus)
    pool = Pool("lane", "lane", tuple(ceilings[k] for k in sorted(ceilings)))
    view = CapacityView("htcondor", {"lane": pool}, fetched)
    return view, Occupancy(used, total, notebooks, len(machines - {""}), largest)
