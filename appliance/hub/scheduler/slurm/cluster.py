"""The cluster as the hub sees it: nodes, partitions, reservations, parsed from Slurm's JSON.

Written against Slurm 24.11 (``data_parser/v0.0.42``): numbers are ``{"set", "infinite",
"number"}`` objects, lists may be JSON lists or comma-separated strings, node states are lists of
flags (``["IDLE", "DRAIN"]``). The parsers accept plain numbers and strings too. Hostlists
(``node[1-3,5]``) are expanded by the ClusterShell library's ``NodeSet`` (LGPL-2.1+, maintained by CEA; used as a library). Pure data, no policy (that is
``access``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from ClusterShell.NodeSet import NodeSet, NodeSetException

# Node state flags that make a node unusable for new jobs (data_parser names).
UNUSABLE_NODE_STATES = {
    "DOWN", "DRAIN", "FAIL", "FUTURE", "NOT_RESPONDING", "INVALID_REG", "ERROR",
    "MAINTENANCE", "POWER_DRAIN", "BLOCKED",
}


# --------------------------------------------------------------------------------------------
# JSON value helpers
# --------------------------------------------------------------------------------------------
def num(value: Any) -> Optional[float]:
    """A Slurm number: plain, or ``{"set", "infinite", "number"}``. None if unset, inf if infinite."""
    if isinstance(value, dict):
        if value.get("infinite"):
            return math.inf
        if not value.get("set", True):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    return None


def as_list(value: Any) -> list[str]:
    """A Slurm list: JSON list, comma-separated string, '' / None / '(null)' -> []."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if str(v)]
    text = str(value).strip()
    if text in ("", "(null)", "N/A"):
        return []
    return [v.strip() for v in text.split(",") if v.strip()]


def _top_level_groups(text: str) -> list[str]:
    """Split at the commas outside brackets; NodeSet sorts a whole set, Slurm's order is kept."""
    groups, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            groups.append(text[start:i])
            start = i + 1
    groups.append(text[start:])
    return [g.strip() for g in groups if g.strip()]


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm hostlist ("node[1-3,5],gpu[01-02]") into names, in Slurm's order."""
    text = (text or "").strip()
    if not text or text in ("(null)", "None"):
        return []
    try:
        return [name for group in _top_level_groups(text) for name in NodeSet(group)]
    except NodeSetException:  # not a hostlist Slurm writes: take the names as they are
        return [t for t in (s.strip() for s in text.split(",")) if t]


def gpu_count(gres: str) -> int:
    """GPUs in a node's gres string ("gpu:2", "gpu:a100:4(S:0-1),shard:8")."""
    total = 0
    for item in as_list(gres):
        item = re.sub(r"\(.*?\)", "", item)
        fields = item.split(":")
        if fields[0] != "gpu":
            continue
        try:
            total += int(fields[-1])
        except ValueError:
            total += 1
    return total


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    address: str
    states: list[str]
    features: list[str]
    gpus: int
    cpus: int
    memory_mb: int
    reason: str = ""
    partitions: list[str] = field(default_factory=list)

    @property
    def unusable_states(self) -> list[str]:
        return [s for s in self.states if s in UNUSABLE_NODE_STATES]

    @property
    def usable(self) -> bool:
        return not self.unusable_states

    def describe_state(self) -> str:
        bad = self.unusable_states
        words = []
        if "DRAIN" in bad:
            busy = {"ALLOCATED", "MIXED", "COMPLETING"} & set(self.states)
            words.append("draining" if busy else "drained")
        words.extend(s.lower().replace("_", " ") for s in bad if s != "DRAIN")
        text = ", ".join(words) or "/".join(self.states).lower()
        return f"{text} ({self.reason})" if self.reason else text


@dataclass
class Partition:
    name: str
    nodes: list[str]
    allow_groups: Optional[list[str]]  # None: ALL
    allow_accounts: Optional[list[str]]
    deny_accounts: list[str]
    alloc_nodes: Optional[list[str]]  # None: ALL
    state: str
    max_time_min: Optional[float]  # None/inf: unlimited
    default_time_min: Optional[float]
    tier: int
    oversubscribe: str  # "exclusive" | "no" | "force:N" | "yes:N"


@dataclass
class Reservation:
    name: str
    nodes: list[str]
    users: list[str]
    groups: list[str]
    accounts: list[str]
    start: float
    end: float
    flags: list[str]
    partition: str = ""
    core_count: int = 0  # reserved cores (0: unknown / whole nodes)

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition]
    nodes: dict[str, Node]
    reservations: dict[str, Reservation]
    fetched: float = 0.0  # the scheduler's clock

    def features(self, node_names: Optional[Iterable[str]] = None) -> list[str]:
        """The features of these nodes (default: all nodes), sorted."""
        names = self.nodes.keys() if node_names is None else node_names
        out: set[str] = set()
        for n in names:
            if n in self.nodes:
                out.update(self.nodes[n].features)
        return sorted(out)

    def addresses(self) -> dict[str, str]:
        """Node name -> NodeAddr."""
        return {n.name: n.address for n in self.nodes.values()}


# --------------------------------------------------------------------------------------------
# Parsers (``scontrol show node|partition|reservation --json``)
# --------------------------------------------------------------------------------------------
def parse_nodes(data: dict) -> dict[str, Node]:
    nodes = {}
    for n in data.get("nodes", []) or []:
        name = n.get("name") or ""
        if not name:
            continue
        nodes[name] = Node(
            name=name,
            address=n.get("address") or name,
            states=[str(s).upper() for s in as_list(n.get("state"))],
            features=as_list(n.get("active_features") or n.get("features")),
            gpus=gpu_count(n.get("gres") or ""),
            cpus=int(num(n.get("cpus")) or 0),
            memory_mb=int(num(n.get("real_memory")) or 0),
            reason=str(n.get("reason") or ""),
            partitions=as_list(n.get("partitions")),
        )
    return nodes


def _oversubscribe(p: dict) -> str:
    o = (p.get("maximums") or {}).get("oversubscribe") or {}
    flags = [str(f).lower() for f in as_list(o.get("flags"))]
    jobs = int(num(o.get("jobs")) or 0)
    if "exclusive" in flags or (jobs == 0 and "force" not in flags):
        return "exclusive"
    if "force" in flags:
        return f"force:{jobs}"
    if jobs > 1:
        return f"yes:{jobs}"
    return "no"


def _all_or(values: list[str]) -> Optional[list[str]]:
    """Slurm's "ALL" (or nothing listed) -> None; else the list."""
    return None if not values or values == ["ALL"] else values


def _minutes(value: Any) -> Optional[float]:
    t = num(value)
    return None if t is None or t == math.inf else t


def parse_partitions(data: dict) -> dict[str, Partition]:
    parts = {}
    for p in data.get("partitions", []) or []:
        name = p.get("name") or ""
        if not name:
            continue
        nodes_d = p.get("nodes") or {}
        accounts = p.get("accounts") or {}
        state = as_list((p.get("partition") or {}).get("state")) or ["UP"]
        parts[name] = Partition(
            name=name,
            nodes=expand_hostlist(nodes_d.get("configured") or ""),
            allow_groups=_all_or(as_list((p.get("groups") or {}).get("allowed"))),
            allow_accounts=_all_or(as_list(accounts.get("allowed"))),
            deny_accounts=as_list(accounts.get("deny")),
            alloc_nodes=_all_or(as_list(nodes_d.get("allowed_allocation"))),
            state=state[0].upper(),
            max_time_min=_minutes((p.get("maximums") or {}).get("time")),
            default_time_min=_minutes((p.get("defaults") or {}).get("time")),
            tier=int(num((p.get("priority") or {}).get("tier")) or 0),
            oversubscribe=_oversubscribe(p),
        )
    return parts


def parse_reservations(data: dict) -> dict[str, Reservation]:
    out = {}
    for r in data.get("reservations", []) or []:
        name = r.get("name") or ""
        if not name:
            continue
        start = num(r.get("start_time"))
        end = num(r.get("end_time"))
        out[name] = Reservation(
            name=name,
            nodes=expand_hostlist(r.get("node_list") or ""),
            users=as_list(r.get("users")),
            groups=as_list(r.get("groups")),
            accounts=as_list(r.get("accounts")),
            start=float(start) if start is not None else 0.0,
            end=float(end) if end not in (None, math.inf) else math.inf,
            flags=[str(f).upper() for f in as_list(r.get("flags"))],
            partition=str(r.get("partition") or ""),
            core_count=int(num(r.get("core_count")) or 0),
        )
    return out
