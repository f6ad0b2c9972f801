"""Slurm backend: Slurm's JSON command line (sbatch, squeue, scancel, scontrol), no pyslurm.

Written against Slurm 24.11 (``data_parser/v0.0.42``): ``job_state`` is a list (``["PENDING"]``),
numbers are ``{"set": bool, "infinite": bool, "number": N}`` objects, node states are lists of
flags (``["IDLE", "DRAIN"]``). The parsers accept plain numbers too.

Who does what:

* The hub (root) only *reads* (``squeue --json``, ``scontrol show partition|node|reservation
  --json``) and cancels (``scancel``, root is a Slurm operator).
* The submission happens as the user: the spawner runs ``appliance-submit`` under ``sudo -u USER``
  with the dict from :meth:`SlurmScheduler.build_submit`; the helper calls :func:`run_sbatch`, so
  munge vouches for the user's own uid.
* The argv is built by :func:`build_sbatch_argv` from validated values only: a list of arguments
  (no shell), each option glued to its value (``--partition=jhub``) so no value can become an
  option, and the batch script is the fixed file ``slurm_job.sh`` next to this module.
* All notebook jobs carry one job name (:attr:`SlurmScheduler.job_name`): ``query_all`` is one
  ``squeue --json --states=all --name=<job_name>``. The spawner's per-job name goes to
  ``--comment`` for people reading ``squeue -o %k``.
"""

from __future__ import annotations

import asyncio
import grp
import json
import math
import os
import pwd
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from traitlets import Bool, Dict, Float, List, Unicode, default

from ...options import CONSTRAINT_TOKEN_RE, SLURM_NAME_RE, OptionsError, UserOptions, parse_constraint
from .base import DONE, HELD, PENDING, RUNNING, UNKNOWN, JobStatus, Scheduler, SubmitError, SubmitRequest

JOB_SCRIPT = str(Path(__file__).with_name("slurm_job.sh"))

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@%/ -]*$")  # absolute, printable, no ':' tricks needed
JOB_ID_RE = re.compile(r"^\d+(_\d+)?$")

# Node state flags that make a node unusable for new jobs (data_parser names).
UNUSABLE_NODE_STATES = {
    "DOWN", "DRAIN", "FAIL", "FUTURE", "NOT_RESPONDING", "INVALID_REG", "ERROR",
    "MAINTENANCE", "POWER_DRAIN", "BLOCKED",
}
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


# --------------------------------------------------------------------------------------------
# JSON helpers
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


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm hostlist ("node[1-3,5],gpu[01-02]") into names."""
    text = (text or "").strip()
    if not text or text in ("(null)", "None"):
        return []
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        parts = re.split(r"(\[[^\]]*\])", item)
        names = [""]
        for part in parts:
            if part.startswith("[") and part.endswith("]"):
                choices: list[str] = []
                for rng in part[1:-1].split(","):
                    if "-" in rng:
                        lo, hi = rng.split("-", 1)
                        width = len(lo)
                        for i in range(int(lo), int(hi) + 1):
                            choices.append(str(i).zfill(width))
                    elif rng:
                        choices.append(rng)
                names = [n + c for n in names for c in choices]
            else:
                names = [n + part for n in names]
        out.extend(names)
    return out


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
# Cluster description
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
            words.append("draining" if {"ALLOCATED", "MIXED", "COMPLETING"} & set(self.states) else "drained")
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


def parse_partitions(data: dict) -> dict[str, Partition]:
    parts = {}
    for p in data.get("partitions", []) or []:
        name = p.get("name") or ""
        if not name:
            continue
        nodes_d = p.get("nodes") or {}
        groups = as_list((p.get("groups") or {}).get("allowed"))
        accounts = p.get("accounts") or {}
        allow_acc = as_list(accounts.get("allowed"))
        alloc = as_list(nodes_d.get("allowed_allocation"))
        state = as_list((p.get("partition") or {}).get("state")) or ["UP"]
        maxt = num(((p.get("maximums") or {}).get("time")))
        deft = num(((p.get("defaults") or {}).get("time")))
        parts[name] = Partition(
            name=name,
            nodes=expand_hostlist(nodes_d.get("configured") or ""),
            allow_groups=None if not groups or groups == ["ALL"] else groups,
            allow_accounts=None if not allow_acc or allow_acc == ["ALL"] else allow_acc,
            deny_accounts=as_list(accounts.get("deny")),
            alloc_nodes=None if not alloc or alloc == ["ALL"] else alloc,
            state=state[0].upper(),
            max_time_min=None if maxt is None or maxt == math.inf else maxt,
            default_time_min=None if deft is None or deft == math.inf else deft,
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


def check_constraint_text(text: str) -> list[str]:
    """parse_constraint, and refuse any whitespace but plain spaces (newline, tab, ...)."""
    if re.search(r"[^\S ]", text):
        raise OptionsError("constraint", "only features, '&', '|', parentheses and spaces are allowed")
    return parse_constraint(text)


def constraint_matches(text: str, features: Iterable[str]) -> bool:
    """Evaluate a validated constraint against one node's features (Slurm: left to right)."""
    feats = set(features)
    tokens = [m.group(1) for m in CONSTRAINT_TOKEN_RE.finditer(text or "")]
    pos = 0

    def term() -> bool:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            v = expr()
            pos += 1  # ')'
            return v
        return tok in feats

    def expr() -> bool:
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] in ("&", "|"):
            op = tokens[pos]
            pos += 1
            w = term()
            v = (v and w) if op == "&" else (v or w)
        return v

    if not tokens:
        return True
    check_constraint_text(text)  # raises OptionsError on anything malformed
    return expr()


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition]
    nodes: dict[str, Node]
    reservations: dict[str, Reservation]
    fetched: float = 0.0  # the scheduler's clock

    def features(self, node_names: Optional[Iterable[str]] = None) -> list[str]:
        names = self.nodes.keys() if node_names is None else node_names
        out: set[str] = set()
        for n in names:
            if n in self.nodes:
                out.update(self.nodes[n].features)
        return sorted(out)

    def blocking_reservations(self, node: str, who: Identity, now: float,
                              own: Optional[str] = None) -> list[Reservation]:
        """Active reservations that keep a job of ``who`` (in reservation ``own``) off ``node``.

        A reserved node is only for jobs that name the reservation (members included), unless
        the reservation is MAGNETIC (members' jobs use it by themselves) or reserves only some
        of the node's cores.
        """
        out = []
        for r in self.reservations.values():
            if r.name == own or node not in r.nodes or not r.active(now):
                continue
            whole = sum(self.nodes[n].cpus for n in r.nodes if n in self.nodes)
            if r.core_count and whole and r.core_count < whole:
                continue
            if "MAGNETIC" in r.flags and own is None and reservation_access(r, who):
                continue
            out.append(r)
        return out

    def node_problems(self, part: Partition, who: Identity, now: float,
                      reservation: Optional[str] = None,
                      constraint: Optional[str] = None) -> dict[str, str]:
        """For each node of ``part``: why ``who`` cannot start a new job there ('' = can)."""
        out = {}
        resv = self.reservations.get(reservation) if reservation else None
        for name in part.nodes:
            node = self.nodes.get(name)
            if node is None:
                out[name] = "unknown to Slurm"
            elif not node.usable:
                out[name] = node.describe_state()
            elif constraint and not constraint_matches(constraint, node.features):
                out[name] = f"lacks features {constraint}"
            elif resv is not None and name not in resv.nodes:
                out[name] = f"not in reservation {resv.name}"
            else:
                blocking = self.blocking_reservations(name, who, now, own=reservation)
                if blocking:
                    r = blocking[0]
                    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.end)) if r.end != math.inf else "further notice"
                    out[name] = f"reserved ({r.name}) until {until}"
                else:
                    out[name] = ""
        return out

    def usable_partitions(self, who: Identity, now: float, submit_hosts: Iterable[str] = ()) -> list[str]:
        hosts = list(submit_hosts)
        names = []
        for p in self.partitions.values():
            if partition_access(p, who, hosts) is None and any(
                not v for v in self.node_problems(p, who, now).values()
            ):
                names.append(p.name)
        return names


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobMeta:
    """What query_all learnt about a job beyond JobStatus (for fatal_reason)."""

    user: str
    partition: str
    reservation: str
    features: str
    state_reason: str


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


def job_status(job: dict, node_address: Optional[dict[str, str]] = None) -> JobStatus:
    """One squeue --json job -> JobStatus."""
    job_id = str(job.get("job_id"))
    states = [str(s).upper() for s in as_list(job.get("job_state"))]
    base = states[0] if states else ""
    reason = _reason_text(job)
    owner = job.get("user_name") or None
    nodes = expand_hostlist(str(job.get("nodes") or ""))
    host = None
    if nodes:
        host = (node_address or {}).get(nodes[0], nodes[0])
    if "COMPLETING" in states or base in DONE_STATES:
        ec = job.get("exit_code") or {}
        rc = num(ec.get("return_code"))
        sig = ((ec.get("signal") or {}).get("name")) or ""
        bits = [base] + ([str(job.get("state_reason"))] if job.get("state_reason") not in (None, "", "None") else [])
        detail = f"signal {sig}" if sig else (f"exit code {int(rc)}" if rc is not None else "")
        text = ": ".join(bits) + (f" ({detail})" if detail else "")
        return JobStatus(job_id, DONE, None, text, owner)
    if base == "RUNNING":
        return JobStatus(job_id, RUNNING, host, reason, owner)
    if base in ("SUSPENDED", "STOPPED"):
        return JobStatus(job_id, HELD, host, reason or base.lower(), owner)
    if base in ("REQUEUE_HOLD", "SPECIAL_EXIT") or job.get("state_reason") in HELD_REASONS:
        return JobStatus(job_id, HELD, None, reason or base, owner)
    if base in ("PENDING", "REQUEUED", "REQUEUE_FED", "CONFIGURING", "RESIZING"):
        return JobStatus(job_id, PENDING, None, reason, owner)
    return JobStatus(job_id, UNKNOWN, host, reason or base, owner)


def parse_jobs(data: dict, job_name: Optional[str] = None,
               node_address: Optional[dict[str, str]] = None) -> tuple[dict[str, JobStatus], dict[str, JobMeta]]:
    statuses, metas = {}, {}
    for job in data.get("jobs", []) or []:
        if job_name is not None and job.get("name") != job_name:
            continue
        st = job_status(job, node_address)
        statuses[st.job_id] = st
        metas[st.job_id] = JobMeta(
            user=str(job.get("user_name") or ""),
            partition=str(job.get("partition") or ""),
            reservation=str(job.get("resv_name") or ""),
            features=str(job.get("features") or ""),
            state_reason=str(job.get("state_reason") or ""),
        )
    return statuses, metas


# --------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------
def _check_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not SAFE_PATH_RE.match(path) or "/../" in path + "/":
        raise SubmitError(f"{what} {path!r} is not an acceptable absolute path")
    return path


def _slurm_minutes(seconds: int) -> int:
    return max(1, math.ceil(int(seconds) / 60))


def build_sbatch_argv(
    request: SubmitRequest,
    *,
    partition: str,
    job_name: str = "jupyterhub",
    launcher: str = "/usr/local/bin/appliance-launch",
    job_script: str = JOB_SCRIPT,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The sbatch arguments (after the sbatch path) for one notebook job, validated values only.

    Every option is one ``--name=value`` element, so a value can never be taken for an option,
    and there is no shell anywhere. The positional part is the fixed job script, then the launcher
    and its arguments (env file path and port range, which sbatch hands to the script).
    """
    o = request.options
    if not SLURM_NAME_RE.match(partition or ""):
        raise SubmitError(f"bad partition name {partition!r}")
    if not JOB_NAME_RE.match(job_name):
        raise SubmitError(f"bad job name {job_name!r}")
    cpus, gpus = o.cpus, o.gpus
    if not (isinstance(cpus, int) and not isinstance(cpus, bool) and 1 <= cpus <= 4096):
        raise SubmitError(f"bad cpus {cpus!r}")
    if not (isinstance(gpus, int) and not isinstance(gpus, bool) and 0 <= gpus <= 64):
        raise SubmitError(f"bad gpus {gpus!r}")
    mem = float(o.memory_gb)
    if not (0 < mem <= 65536) or math.isnan(mem):
        raise SubmitError(f"bad memory {o.memory_gb!r}")
    runtime = int(request.runtime_seconds)
    if runtime <= 0:
        raise SubmitError("runtime must be positive")
    home = _check_path(request.home, "home directory")
    env_file = _check_path(request.env_file, "env file")
    if not env_file.startswith(home.rstrip("/") + "/"):
        raise SubmitError("the env file must be in the user's home directory")
    out_dir = os.path.dirname(env_file)
    launcher = _check_path(launcher, "launcher")
    lo, hi = request.port_range
    if not (isinstance(lo, int) and isinstance(hi, int) and 1024 <= lo <= hi <= 65535):
        raise SubmitError(f"bad port range {request.port_range!r}")
    comment = re.sub(r"[^A-Za-z0-9_.@+-]", "_", request.job_name or "")[:128]

    argv = [
        "--parsable",
        "--no-requeue",
        f"--job-name={job_name}",
        f"--partition={partition}",
        f"--time={_slurm_minutes(runtime)}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={cpus}",
        f"--mem={max(1, math.ceil(mem * 1024))}M",
        # sbatch expands %j/%x/%u in file names: double the '%' of a literal path.
        f"--output={out_dir.replace('%', '%%')}/slurm-%j.log",
        f"--chdir={home}",
        "--export=NIL",
        "--propagate=NONE",
    ]
    if comment:
        argv.append(f"--comment={comment}")
    if gpus:
        argv.append(f"--gres=gpu:{gpus}")
    if o.reservation:
        if not SLURM_NAME_RE.match(o.reservation):
            raise SubmitError(f"bad reservation name {o.reservation!r}")
        argv.append(f"--reservation={o.reservation}")
    if o.constraint:
        check_constraint_text(o.constraint)
        argv.append(f"--constraint={o.constraint.replace(' ', '')}")
    for a in extra_args:  # admin-written (traitlet), still one element per option
        if not isinstance(a, str) or not a.startswith("--") or "\n" in a or "\0" in a:
            raise SubmitError(f"bad extra sbatch argument {a!r}")
        argv.append(a)
    argv += [job_script, launcher, f"--env-file={env_file}", f"--port-range={lo}-{hi}"]
    for a in argv:
        if any(ord(c) < 32 or ord(c) == 127 for c in a):
            raise SubmitError("control characters in a submit argument")
    return argv


def _minimal_env(slurm_conf: Optional[str] = None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        pw = pwd.getpwuid(os.getuid())
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    except KeyError:
        pass
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def run_sbatch(submit: dict) -> str:
    """Submit-helper side (runs AS THE USER): run sbatch with the hub-built argv, return the job id.

    ``submit`` = ``{"sbatch": "/usr/bin/sbatch", "slurm_conf": "" | path, "argv": [...],
    "timeout": seconds}``. The environment is minimal (PATH, HOME, USER, LANG, optional SLURM_CONF):
    no secrets and no SBATCH_* variables reach sbatch. Raises SubmitError with sbatch's message.
    """
    argv = submit.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not argv:
        raise SubmitError("bad submit request: argv must be a list of strings")
    if any("\0" in a for a in argv):
        raise SubmitError("bad submit request: NUL in argv")
    sbatch = submit.get("sbatch") or "/usr/bin/sbatch"
    if not os.path.isabs(sbatch):
        raise SubmitError("bad submit request: sbatch must be an absolute path")
    try:
        proc = subprocess.run(
            [sbatch, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=float(submit.get("timeout") or 60),
            env=_minimal_env(submit.get("slurm_conf") or None),
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise SubmitError("sbatch did not answer in time (is slurmctld reachable?)") from None
    except OSError as e:
        raise SubmitError(f"cannot run sbatch: {e}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        msgs = [re.sub(r"^sbatch: error: ", "", ln) for ln in lines if "error" in ln.lower()] or lines
        raise SubmitError("; ".join(msgs)[-1000:] or f"sbatch failed with exit code {proc.returncode}")
    # --parsable: "jobid" or "jobid;cluster"
    first = (proc.stdout.strip().splitlines() or [""])[-1]
    job_id = first.split(";", 1)[0].strip()
    if not JOB_ID_RE.match(job_id):
        raise SubmitError(f"unexpected sbatch output: {proc.stdout.strip()[:200]!r}")
    return job_id


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------
class SlurmScheduler(Scheduler):
    """Slurm backend (see module doc)."""

    name = "slurm"

    sbatch = Unicode("/usr/bin/sbatch", help="Path of sbatch (run as the user by the submit helper).").tag(config=True)
    squeue = Unicode("/usr/bin/squeue", help="Path of squeue (run by the hub).").tag(config=True)
    scancel = Unicode("/usr/bin/scancel", help="Path of scancel (run by the hub as root).").tag(config=True)
    scontrol = Unicode("/usr/bin/scontrol", help="Path of scontrol (partitions, nodes, reservations).").tag(config=True)
    slurm_conf = Unicode(
        "", help="SLURM_CONF for every Slurm command ('' = the default /etc/slurm/slurm.conf)."
    ).tag(config=True)
    notebook_partition = Unicode(
        "jhub", help="Partition of a request that names none (the site's notebook partition)."
    ).tag(config=True)
    default_runtime_hours_per_partition = Dict(
        {"jhub": 168.0},
        help="Notebook runtime in hours per partition: the default AND the most a user may ask "
        "for there. Partitions not listed get fallback_runtime_hours. A request in a reservation "
        "may instead run until the reservation ends. Slurm's own MaxTime always caps it.",
    ).tag(config=True)
    fallback_runtime_hours = Float(
        8.0, help="Notebook runtime (default and maximum) in partitions not listed above."
    ).tag(config=True)
    launcher = Unicode(
        "/usr/local/bin/appliance-launch", help="Path of appliance-launch on the compute nodes."
    ).tag(config=True)
    job_script = Unicode(
        JOB_SCRIPT, help="The fixed batch script (read by sbatch on the hub host, as the user)."
    ).tag(config=True)
    job_name = Unicode(
        "jupyterhub",
        help="Slurm job name of every notebook job of this hub; query_all lists jobs by it. "
        "Give each hub sharing a cluster its own.",
    ).tag(config=True)
    extra_sbatch_args = List(
        Unicode(), default_value=[],
        help="Admin-written sbatch options added to every job, one '--opt=value' per item "
        "(e.g. '--account=notebooks', '--qos=interactive').",
    ).tag(config=True)
    resource_cache_seconds = Float(
        30.0, help="How long partition/node/reservation information is reused."
    ).tag(config=True)
    pending_check_seconds = Float(
        5.0,
        help="While notebook jobs are pending, refresh node information at least this often to "
        "detect partitions without usable nodes.",
    ).tag(config=True)
    use_node_address = Bool(
        True, help="Report a job's host as the node's NodeAddr (else its NodeName)."
    ).tag(config=True)
    submit_hosts = List(
        Unicode(),
        help="Names Slurm knows this hub's host by (for partitions with AllocNodes). "
        "Default: the short and full host name.",
    ).tag(config=True)
    sacctmgr = Unicode(
        "", help="Path of sacctmgr to learn users' Slurm accounts ('' = accounts not checked)."
    ).tag(config=True)
    command_timeout = Float(30.0, help="Seconds a Slurm command may take.").tag(config=True)

    check_max_age = Float(
        2.0, help="Max age (s) of partition/node/reservation data used to accept or refuse a spawn."
    ).tag(config=True)

    @default("submit_hosts")
    def _default_submit_hosts(self):
        short = socket.gethostname().split(".")[0]
        return sorted({short, socket.getfqdn(), socket.gethostname()})

    def __init__(self, clock=time.time, **kw):
        super().__init__(**kw)
        #: seconds since the epoch; tests give captured cluster data its own time
        self.clock = clock
        self._cluster: Optional[ClusterInfo] = None
        self._cluster_lock = asyncio.Lock()
        self._metas: dict[str, JobMeta] = {}
        self._identities: dict[str, tuple[float, Identity]] = {}

    # -- commands -------------------------------------------------------------------------
    async def _run(self, *argv: str) -> str:
        env = _minimal_env(self.slurm_conf or None)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.command_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{os.path.basename(argv[0])} timed out") from None
        if proc.returncode != 0:
            raise RuntimeError(
                f"{os.path.basename(argv[0])} failed: {err.decode(errors='replace').strip()[-500:]}"
            )
        return out.decode()

    async def _json(self, *argv: str) -> dict:
        text = await self._run(*argv)
        data = json.loads(text or "{}")
        errors = [e for e in data.get("errors", []) or [] if e]
        if errors:
            raise RuntimeError(f"{os.path.basename(argv[0])}: {errors[0]}")
        return data

    async def cluster(self, max_age: Optional[float] = None) -> ClusterInfo:
        """Partitions, nodes and reservations (cached ``resource_cache_seconds``)."""
        max_age = self.resource_cache_seconds if max_age is None else max_age
        c = self._cluster
        if c is not None and self.clock() - c.fetched < max_age:
            return c
        async with self._cluster_lock:
            c = self._cluster
            if c is not None and self.clock() - c.fetched < max_age:
                return c
            parts, nodes, resvs = await asyncio.gather(
                self._json(self.scontrol, "show", "partition", "--json"),
                self._json(self.scontrol, "show", "node", "--json"),
                self._json(self.scontrol, "show", "reservation", "--json"),
            )
            c = ClusterInfo(parse_partitions(parts), parse_nodes(nodes),
                            parse_reservations(resvs), self.clock())
            self._cluster = c
            return c

    async def identity(self, user: str) -> Identity:
        hit = self._identities.get(user)
        if hit and self.clock() - hit[0] < self.resource_cache_seconds:
            return hit[1]
        accounts = None
        if self.sacctmgr:
            out = await self._run(self.sacctmgr, "-nP", "show", "assoc", f"user={user}", "format=account")
            accounts = {ln.strip() for ln in out.splitlines() if ln.strip()}
        ident = unix_identity(user, accounts)
        self._identities[user] = (self.clock(), ident)
        return ident

    # -- interface ------------------------------------------------------------------------
    def partition_of(self, options: UserOptions) -> str:
        return options.partition or self.notebook_partition

    def runtime_limit_hours(self, options: UserOptions, cluster: Optional[ClusterInfo] = None,
                            now: Optional[float] = None) -> tuple[float, str]:
        """(hours, why): the default and the maximum runtime of a notebook with these options."""
        cluster = cluster if cluster is not None else self._cluster
        now = self.clock() if now is None else now
        part = self.partition_of(options)
        hours = float(self.default_runtime_hours_per_partition.get(part, self.fallback_runtime_hours))
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

    def runtime_seconds(self, user: str, options: UserOptions, default_hours: float) -> int:
        limit, _ = self.runtime_limit_hours(options)
        hours = options.runtime_hours if options.runtime_hours is not None else limit
        return max(60, int(min(hours, limit) * 3600))

    def build_submit(self, request: SubmitRequest) -> dict[str, Any]:
        argv = build_sbatch_argv(
            request,
            partition=self.partition_of(request.options),
            job_name=self.job_name,
            launcher=self.launcher,
            job_script=self.job_script,
            extra_args=self.extra_sbatch_args,
        )
        return {"sbatch": self.sbatch, "slurm_conf": self.slurm_conf, "argv": argv}

    async def query_all(self) -> dict[str, JobStatus]:
        data = await self._json(self.squeue, "--json", "--states=all", f"--name={self.job_name}")
        addresses = None
        if self.use_node_address and self._cluster is not None:
            addresses = {n.name: n.address for n in self._cluster.nodes.values()}
        statuses, metas = parse_jobs(data, self.job_name, addresses)
        if any(s.state == RUNNING for s in statuses.values()) and self.use_node_address and addresses is None:
            try:
                c = await self.cluster()
                addresses = {n.name: n.address for n in c.nodes.values()}
                statuses, metas = parse_jobs(data, self.job_name, addresses)
            except Exception as e:  # names still work where they resolve
                self.log.warning("slurm: node addresses unavailable: %s", e)
        if any(s.state == PENDING and metas[j].state_reason in NODE_PENDING_REASONS
               for j, s in statuses.items()):
            try:
                await self.cluster(max_age=self.pending_check_seconds)
            except Exception as e:
                self.log.warning("slurm: cluster information unavailable: %s", e)
        self._metas = metas
        return statuses

    async def cancel(self, job_id: str) -> None:
        if not JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"bad job id {job_id!r}")
        try:
            await self._run(self.scancel, job_id)
        except RuntimeError as e:
            # Already gone: nothing to do.
            if re.search(r"Invalid job id|already completing or completed", str(e), re.I):
                return
            raise

    async def describe_resources(self, user: str) -> dict[str, Any]:
        c = await self.cluster()
        who = await self.identity(user)
        now = self.clock()
        parts = []
        for p in sorted(c.partitions.values(), key=lambda p: (p.name != self.notebook_partition, -p.tier, p.name)):
            if partition_access(p, who, self.submit_hosts) is not None:
                continue
            problems = c.node_problems(p, who, now)
            opts = UserOptions(backend="slurm", partition=p.name)
            hours, _ = self.runtime_limit_hours(opts, c, now)
            parts.append({
                "name": p.name,
                "default": p.name == self.notebook_partition,
                "nodes": len(p.nodes),
                "usable_nodes": sum(1 for v in problems.values() if not v),
                "unusable": {n: why for n, why in problems.items() if why},
                "features": c.features(p.nodes),
                "max_gpus_per_node": max((c.nodes[n].gpus for n in p.nodes if n in c.nodes), default=0),
                "max_cpus_per_node": max((c.nodes[n].cpus for n in p.nodes if n in c.nodes), default=0),
                "max_memory_gb_per_node": max((c.nodes[n].memory_mb for n in p.nodes if n in c.nodes), default=0) / 1024,
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
                                      and partition_access(p, who, self.submit_hosts) is None
                                      and (not r.partition or r.partition == p.name)}),
                "start": r.start,
                "end": r.end if r.end != math.inf else None,
                "active": r.active(now),
                "remaining_hours": None if r.end == math.inf else round(max(0.0, r.end - now) / 3600, 2),
            })
        return {
            "backend": "slurm",
            "default_partition": self.notebook_partition,
            "partitions": parts,
            "reservations": resvs,
            "features": c.features(),
        }

    async def check_request(self, user: str, options: UserOptions) -> None:
        # Spawn-time check: nearly fresh data (a node drained a minute ago must count), while the
        # form and describe_resources use the longer cache.
        c = await self.cluster(max_age=self.check_max_age)
        who = await self.identity(user)
        self.check_against(c, who, options, self.clock())

    def _suggest(self, c: ClusterInfo, who: Identity, now: float, exclude: str) -> str:
        others = [p for p in c.usable_partitions(who, now, self.submit_hosts) if p != exclude]
        return f" Try partition {' or '.join(others)}." if others else ""

    def check_against(self, c: ClusterInfo, who: Identity, options: UserOptions, now: float) -> None:
        """The checks of check_request on given cluster information (pure; unit tested)."""
        pname = self.partition_of(options)
        p = c.partitions.get(pname)
        if p is None:
            mine = [q.name for q in c.partitions.values() if partition_access(q, who, self.submit_hosts) is None]
            raise OptionsError("partition", f"there is no partition {pname!r}; you may use: {', '.join(mine) or 'none'}")
        denied = partition_access(p, who, self.submit_hosts)
        if denied:
            raise OptionsError("partition", f"you may not use partition {pname}: {denied}.{self._suggest(c, who, now, pname)}")
        resv = None
        if options.reservation:
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
                        and partition_access(q, who, self.submit_hosts) is None]
                raise OptionsError(
                    "reservation",
                    f"reservation {resv.name} has no nodes in partition {pname}"
                    + (f"; use partition {' or '.join(fits)}" if fits else ""),
                )
        if options.constraint:
            wanted = check_constraint_text(options.constraint)
            here = set(c.features(p.nodes))
            known = set(c.features())
            unknown = [f for f in wanted if f not in known]
            if unknown:
                raise OptionsError("constraint", f"Slurm knows no node feature {', '.join(unknown)}; known: {', '.join(sorted(known))}")
            missing = [f for f in wanted if f not in here]
            if missing and not any(constraint_matches(options.constraint, c.nodes[n].features) for n in p.nodes if n in c.nodes):
                where = sorted({q for n in c.nodes.values() if set(missing) & set(n.features) for q in n.partitions})
                raise OptionsError("constraint", f"no node of partition {pname} has {', '.join(missing)}"
                                   + (f" (found in partition {', '.join(where)})" if where else ""))
        problems = c.node_problems(p, who, now, options.reservation)
        candidates = [n for n, why in problems.items() if not why and n in c.nodes]
        if not candidates:
            detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
            scope = f"reservation {resv.name} in partition {pname}" if resv else f"partition {pname}"
            raise OptionsError("partition", f"no node of {scope} can take jobs now ({detail}).{self._suggest(c, who, now, pname)}")
        if options.constraint and not any(constraint_matches(options.constraint, c.nodes[n].features) for n in candidates):
            raise OptionsError("constraint", f"no usable node of partition {pname} has features {options.constraint}")
        nodes = [c.nodes[n] for n in candidates]
        if options.gpus:
            best = max(n.gpus for n in nodes)
            if best < options.gpus:
                with_gpus = sorted({q for n in c.nodes.values() if n.gpus >= options.gpus for q in n.partitions})
                raise OptionsError("gpus", f"partition {pname} has no node with {options.gpus} GPU(s)"
                                   + (f"; try {' or '.join(with_gpus)}" if with_gpus else ""))
        if options.cpus > max(n.cpus for n in nodes):
            raise OptionsError("cpus", f"nodes of partition {pname} have at most {max(n.cpus for n in nodes)} cores")
        if options.memory_gb * 1024 > max(n.memory_mb for n in nodes):
            raise OptionsError("memory_gb", f"nodes of partition {pname} have at most {max(n.memory_mb for n in nodes) / 1024:.1f} GiB")
        hours, why = self.runtime_limit_hours(options, c, now)
        if hours * 60 < 1:
            raise OptionsError("reservation" if resv else "runtime_hours", f"no time left: {why}")
        if options.runtime_hours is not None and options.runtime_hours > hours + 1e-9:
            raise OptionsError("runtime_hours", f"at most {hours:.2f} h: {why}")

    def fatal_reason(self, status: JobStatus) -> Optional[str]:
        """A pending job that cannot start: partition down, or no usable node for it."""
        if status.state != PENDING:
            return None
        meta = self._metas.get(status.job_id)
        if meta is None:
            return None
        if meta.state_reason in FATAL_PENDING_REASONS:
            return (f"Job {status.job_id} cannot start: {FATAL_PENDING_REASONS[meta.state_reason]} "
                    f"(Slurm: {status.reason or meta.state_reason}).")
        c = self._cluster
        if c is None or meta.state_reason not in NODE_PENDING_REASONS:
            return None
        p = c.partitions.get(meta.partition)
        if p is None:
            return None
        hit = self._identities.get(meta.user)
        who = hit[1] if hit else unix_identity(meta.user)
        now = self.clock()
        constraint = meta.features or None
        if constraint:
            try:
                check_constraint_text(constraint)
            except OptionsError:  # not one of ours: do not judge
                constraint = None
        problems = c.node_problems(p, who, now, meta.reservation or None, constraint)
        if any(not why for why in problems.values()):
            return None
        detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
        return (f"Job {status.job_id} cannot start: no node of partition {p.name} can take jobs "
                f"({detail}).{self._suggest(c, who, now, p.name)}")
