"""Who may use what, as pure functions of the cluster view, the user's identity and a time.

Slurm's own rules (AllowGroups/AllowAccounts/DenyAccounts/AllowedAllocation of partitions, the
Users/Groups/Accounts of reservations) plus the node state, so the hub can refuse a request that
could never start and tell why, before anything is submitted. ``now`` is always the caller's
(the scheduler's clock): these functions never read the wall clock.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from ....constraint import matches
from ....options import OptionsError, UserOptions, check_constraint
from .cluster import ClusterInfo, Partition, Reservation


@dataclass
class Identity:
    """Who asks: user name, unix group names, Slurm accounts (None: unknown, not checked)."""

    user: str
    groups: frozenset[str]
    accounts: Optional[frozenset[str]] = None


def unix_identity(user: str, accounts: Optional[Iterable[str]] = None) -> Identity:
    """The user's unix groups as NSS (files, sssd, ...) sees them, like slurmctld does."""
    names: set[str] = set()
    try:
        pw = pwd.getpwnam(user)
        gids = os.getgrouplist(user, pw.pw_gid)
    except KeyError:
        gids = []
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return Identity(user, frozenset(names), frozenset(accounts) if accounts is not None else None)


@dataclass(frozen=True)
class Policy:
    """The admin's settings the rules need (from ``SlurmScheduler``'s traitlets)."""

    notebook_partition: str = "jhub"
    submit_hosts: tuple[str, ...] = ()
    runtime_hours: dict[str, float] = field(default_factory=dict)  # partition -> default = max
    fallback_hours: float = 8.0  # the maximum in partitions not listed

    def partition_of(self, options: UserOptions) -> str:
        return options.partition or self.notebook_partition


# --------------------------------------------------------------------------------------------
# Partitions, reservations, nodes
# --------------------------------------------------------------------------------------------
def partition_access(p: Partition, who: Identity, submit_hosts: Iterable[str] = ()) -> Optional[str]:
    """None if ``who`` may submit to ``p`` from one of ``submit_hosts``; else why not."""
    if p.allow_groups is not None and not (set(p.allow_groups) & who.groups):
        return f"only members of {', '.join(p.allow_groups)} may use it"
    if who.accounts is not None:
        if p.allow_accounts is not None and not (set(p.allow_accounts) & who.accounts):
            return f"only accounts {', '.join(p.allow_accounts)} may use it"
        if p.deny_accounts and who.accounts and who.accounts <= set(p.deny_accounts):
            return "your accounts are denied"
    hosts = [h for h in submit_hosts if h]
    if p.alloc_nodes is not None and hosts and not (set(p.alloc_nodes) & set(hosts)):
        return "it does not accept jobs from this hub's host (AllocNodes)"
    if p.state not in ("UP",):
        return f"it is {p.state.lower()}"
    return None


def reservation_access(r: Reservation, who: Identity) -> bool:
    """Slurm's rule: listed (or, with '-name', excluded) by user, group or account."""
    deny_users = {u[1:] for u in r.users if u.startswith("-")}
    deny_accounts = {a[1:] for a in r.accounts if a.startswith("-")}
    if who.user in deny_users:
        return False
    if who.accounts is not None and deny_accounts and who.accounts & deny_accounts:
        return False
    users = [u for u in r.users if not u.startswith("-")]
    accounts = [a for a in r.accounts if not a.startswith("-")]
    checks = []
    if users:
        checks.append(who.user in users)
    if accounts:
        checks.append(who.accounts is None or bool(who.accounts & set(accounts)))
    if r.groups:
        checks.append(bool(who.groups & set(r.groups)))
    if not checks:  # only exclusions: everyone else may use it
        return bool(deny_users or deny_accounts)
    # Users and Accounts together must both match; Groups is an alternative list of members.
    return all(checks) if (users and accounts) else any(checks)


def blocking_reservations(c: ClusterInfo, node: str, who: Identity, now: float,
                          own: Optional[str] = None) -> list[Reservation]:
    """Active reservations that keep a job of ``who`` (in reservation ``own``) off ``node``.

    A reserved node is only for jobs that name the reservation (members included), unless the
    reservation is MAGNETIC (members' jobs use it by themselves) or reserves only some of the
    node's cores.
    """
    out = []
    for r in c.reservations.values():
        if r.name == own or node not in r.nodes or not r.active(now):
            continue
        whole = sum(c.nodes[n].cpus for n in r.nodes if n in c.nodes)
        if r.core_count and whole and r.core_count < whole:
            continue
        if "MAGNETIC" in r.flags and own is None and reservation_access(r, who):
            continue
        out.append(r)
    return out


def _until(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts != math.inf else "further notice"


def node_problems(c: ClusterInfo, part: Partition, who: Identity, now: float,
                  reservation: Optional[str] = None,
                  constraint: Optional[str] = None) -> dict[str, str]:
    """For each node of ``part``: why ``who`` cannot start a new job there ('' = can)."""
    out = {}
    resv = c.reservations.get(reservation) if reservation else None
    for name in part.nodes:
        node = c.nodes.get(name)
        if node is None:
            out[name] = "unknown to Slurm"
        elif not node.usable:
            out[name] = node.describe_state()
        elif constraint and not matches(constraint, node.features):
            out[name] = f"lacks features {constraint}"
        elif resv is not None and name not in resv.nodes:
            out[name] = f"not in reservation {resv.name}"
        else:
            blocking = blocking_reservations(c, name, who, now, own=reservation)
            out[name] = f"reserved ({blocking[0].name}) until {_until(blocking[0].end)}" if blocking else ""
    return out


def may_use(c: ClusterInfo, who: Identity, submit_hosts: Iterable[str]) -> list[str]:
    """Partitions ``who`` may submit to (whatever their nodes' state)."""
    hosts = list(submit_hosts)
    return [p.name for p in c.partitions.values() if partition_access(p, who, hosts) is None]


def usable_partitions(c: ClusterInfo, who: Identity, now: float,
                      submit_hosts: Iterable[str] = ()) -> list[str]:
    """Partitions ``who`` may use that have a node able to take a job of theirs now."""
    return [name for name in may_use(c, who, submit_hosts)
            if any(not v for v in node_problems(c, c.partitions[name], who, now).values())]


def suggest(c: ClusterInfo, who: Identity, now: float, submit_hosts: Iterable[str],
            exclude: str) -> str:
    """" Try partition X or Y." (the usable ones but ``exclude``), or ''."""
    others = [p for p in usable_partitions(c, who, now, submit_hosts) if p != exclude]
    return f" Try partition {' or '.join(others)}." if others else ""


# --------------------------------------------------------------------------------------------
# Runtimes
# --------------------------------------------------------------------------------------------
def runtime_limit_hours(policy: Policy, options: UserOptions, cluster: Optional[ClusterInfo],
                        now: float) -> tuple[float, str]:
    """(hours, why): the most a notebook with these options may run.

    The partition's configured runtime (``policy.runtime_hours``, else ``fallback_hours``); in a
    reservation instead until it ends; Slurm's MaxTime of the partition always caps it.
    """
    part = policy.partition_of(options)
    hours = float(policy.runtime_hours.get(part, policy.fallback_hours))
    why = f"notebooks in partition {part} run at most {hours:g} h"
    if cluster is not None:
        resv = cluster.reservations.get(options.reservation or "")
        if resv is not None and resv.end != math.inf:
            hours = max(0.0, (resv.end - now - 60) / 3600)
            why = f"reservation {resv.name} ends in {hours:.1f} h"
        p = cluster.partitions.get(part)
        if p is not None and p.max_time_min is not None and p.max_time_min / 60 < hours:
            hours = p.max_time_min / 60
            why = f"partition {part} allows at most {hours:g} h"
    return hours, why


def runtime_hours(policy: Policy, options: UserOptions, cluster: Optional[ClusterInfo],
                  now: float, default_hours: float) -> float:
    """The runtime of the job: the request's, else the partition's configured runtime, else (a
    partition without one) the spawner's ``default_hours``; never above the limit."""
    limit, _ = runtime_limit_hours(policy, options, cluster, now)
    if options.runtime_hours is not None:
        hours = options.runtime_hours
    elif policy.partition_of(options) in policy.runtime_hours:
        hours = limit
    else:
        hours = default_hours
    return min(hours, limit)


# --------------------------------------------------------------------------------------------
# The spawn-time check and the form's view
# --------------------------------------------------------------------------------------------
def _check_reservation(c: ClusterInfo, who: Identity, options: UserOptions, now: float,
                       p: Partition, hosts: tuple[str, ...]) -> Optional[Reservation]:
    if not options.reservation:
        return None
    pname = p.name
    resv = c.reservations.get(options.reservation)
    if resv is None or resv.end <= now:
        raise OptionsError("reservation", f"there is no reservation {options.reservation!r}")
    if not reservation_access(resv, who):
        raise OptionsError("reservation", f"you may not use reservation {resv.name}")
    if resv.start > now:
        start = time.strftime("%Y-%m-%d %H:%M", time.localtime(resv.start))
        raise OptionsError("reservation", f"reservation {resv.name} starts only at {start}")
    if resv.partition and resv.partition != pname:
        raise OptionsError("reservation", f"reservation {resv.name} is for partition {resv.partition}")
    if not set(resv.nodes) & set(p.nodes):
        fits = [q.name for q in c.partitions.values() if set(q.nodes) & set(resv.nodes)
                and partition_access(q, who, hosts) is None]
        raise OptionsError(
            "reservation",
            f"reservation {resv.name} has no nodes in partition {pname}"
            + (f"; use partition {' or '.join(fits)}" if fits else ""),
        )
    return resv


def _check_features(c: ClusterInfo, options: UserOptions, p: Partition) -> None:
    wanted = check_constraint(options.constraint)
    here = set(c.features(p.nodes))
    known = set(c.features())
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise OptionsError("constraint", f"Slurm knows no node feature {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(known))}")
    missing = [f for f in wanted if f not in here]
    if missing and not any(matches(options.constraint, c.nodes[n].features)
                           for n in p.nodes if n in c.nodes):
        where = sorted({q for n in c.nodes.values() if set(missing) & set(n.features)
                        for q in n.partitions})
        raise OptionsError("constraint", f"no node of partition {p.name} has {', '.join(missing)}"
                           + (f" (found in partition {', '.join(where)})" if where else ""))


def check_against(c: ClusterInfo, who: Identity, options: UserOptions, now: float,
                  policy: Policy) -> None:
    """Raise OptionsError (naming the field, with a hint) for what ``who`` may not request."""
    hosts = policy.submit_hosts
    pname = policy.partition_of(options)
    p = c.partitions.get(pname)
    if p is None:
        mine = may_use(c, who, hosts)
        raise OptionsError("partition", f"there is no partition {pname!r}; you may use: "
                           f"{', '.join(mine) or 'none'}")
    denied = partition_access(p, who, hosts)
    if denied:
        raise OptionsError("partition", f"you may not use partition {pname}: {denied}."
                           f"{suggest(c, who, now, hosts, pname)}")
    resv = _check_reservation(c, who, options, now, p, hosts)
    if options.constraint:
        _check_features(c, options, p)
    problems = node_problems(c, p, who, now, options.reservation)
    candidates = [n for n, why in problems.items() if not why and n in c.nodes]
    if not candidates:
        detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
        scope = f"reservation {resv.name} in partition {pname}" if resv else f"partition {pname}"
        raise OptionsError("partition", f"no node of {scope} can take jobs now ({detail})."
                           f"{suggest(c, who, now, hosts, pname)}")
    if options.constraint and not any(matches(options.constraint, c.nodes[n].features)
                                      for n in candidates):
        held = "; ".join(f"{n}: {why}" for n, why in problems.items()
                         if why and n in c.nodes and matches(options.constraint, c.nodes[n].features))
        raise OptionsError("constraint", f"no usable node of partition {pname} has features "
                           f"{options.constraint}" + (f": the only ones that do cannot take jobs "
                                                      f"now ({held})" if held else ""))
    nodes = [c.nodes[n] for n in candidates]
    if options.gpus and max(n.gpus for n in nodes) < options.gpus:
        with_gpus = sorted({q for n in c.nodes.values() if n.gpus >= options.gpus
                            for q in n.partitions})
        raise OptionsError("gpus", f"partition {pname} has no node with {options.gpus} GPU(s)"
                           + (f"; try {' or '.join(with_gpus)}" if with_gpus else ""))
    if options.cpus > max(n.cpus for n in nodes):
        raise OptionsError("cpus", f"nodes of partition {pname} have at most "
                           f"{max(n.cpus for n in nodes)} cores")
    if options.memory_gb * 1024 > max(n.memory_mb for n in nodes):
        raise OptionsError("memory_gb", f"nodes of partition {pname} have at most "
                           f"{max(n.memory_mb for n in nodes) / 1024:.1f} GiB")
    hours, why = runtime_limit_hours(policy, options, c, now)
    if hours * 60 < 1:
        raise OptionsError("reservation" if resv else "runtime_hours", f"no time left: {why}")
    if options.runtime_hours is not None and options.runtime_hours > hours + 1e-9:
        raise OptionsError("runtime_hours", f"at most {hours:.2f} h: {why}")


def describe(c: ClusterInfo, who: Identity, now: float, policy: Policy) -> dict[str, Any]:
    """What the form may offer ``who``: partitions (with node state), reservations, features."""
    hosts = policy.submit_hosts
    parts = []
    order = sorted(c.partitions.values(),
                   key=lambda p: (p.name != policy.notebook_partition, -p.tier, p.name))
    for p in order:
        if partition_access(p, who, hosts) is not None:
            continue
        problems = node_problems(c, p, who, now)
        nodes = [c.nodes[n] for n in p.nodes if n in c.nodes]
        hours, _ = runtime_limit_hours(policy, UserOptions(backend="slurm", partition=p.name), c, now)
        parts.append({
            "name": p.name,
            "default": p.name == policy.notebook_partition,
            "nodes": len(p.nodes),
            "usable_nodes": sum(1 for v in problems.values() if not v),
            "unusable": {n: why for n, why in problems.items() if why},
            "features": c.features(p.nodes),
            "max_gpus_per_node": max((n.gpus for n in nodes), default=0),
            "max_cpus_per_node": max((n.cpus for n in nodes), default=0),
            "max_memory_gb_per_node": max((n.memory_mb for n in nodes), default=0) / 1024,
            "exclusive": p.oversubscribe == "exclusive",
            "oversubscribe": p.oversubscribe,
            "max_runtime_hours": round(hours, 2),
        })
    resvs = []
    for r in sorted(c.reservations.values(), key=lambda r: r.name):
        if r.end <= now or not reservation_access(r, who) or "MAINT" in r.flags:
            continue
        resvs.append({
            "name": r.name,
            "nodes": r.nodes,
            "partitions": sorted({p.name for p in c.partitions.values()
                                  if set(p.nodes) & set(r.nodes)
                                  and partition_access(p, who, hosts) is None
                                  and (not r.partition or r.partition == p.name)}),
            "start": r.start,
            "end": r.end if r.end != math.inf else None,
            "active": r.active(now),
            "remaining_hours": None if r.end == math.inf else round(max(0.0, r.end - now) / 3600, 2),
        })
    return {
        "backend": "slurm",
        "default_partition": policy.notebook_partition,
        "partitions": parts,
        "reservations": resvs,
        "features": c.features(),
    }
