"""Slurm backend: Slurm's JSON command line (sbatch, squeue, scancel, scontrol), no pyslurm.

The package, one concern per module (this file holds only the traitlets-configured scheduler):

* ``commands`` runs Slurm's commands from the hub (read-only, plus ``scancel``);
* ``cluster`` is the cluster model (nodes, partitions, reservations) and its JSON parsers;
* ``access`` is the policy: who may use which partition/reservation/node, runtimes, the
  spawn-time check and the form's view, all pure functions of (cluster, identity, now);
* ``jobs`` maps ``squeue --json`` to ``JobStatus`` (with the job's details as ``detail``) and
  decides when a pending job will never start;
* ``sbatch`` builds the sbatch argv from validated values (batch script ``slurm_job.sh``).

Who does what: the hub (root) only *reads* and cancels; the submission happens as the user, in the
submit helper (``appliance.userside.slurm.run_sbatch``, munge vouches for the user's own uid) with
the dict from :meth:`SlurmScheduler.build_submit`. All notebook jobs carry one job name
(:attr:`SlurmScheduler.job_name`): ``query_all`` is one ``squeue --json --states=all
--name=<job_name>``. The spawner's per-job name goes to ``--comment``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Callable, Optional

from traitlets import Bool, Dict, Float, List, Unicode, default

from ....names import SLURM_JOB_ID_RE
from ....options import UserOptions
from ..base import PENDING, RUNNING, JobStatus, Scheduler, SubmitRequest
from ..capacity import CapacityView, check_fits
from . import access, commands, jobs, queue
from .access import Identity, Policy, unix_identity
from .cluster import ClusterInfo, parse_nodes, parse_partitions, parse_reservations
from .jobs import parse_jobs
from .sbatch import JOB_SCRIPT, build_sbatch_argv


class SlurmScheduler(Scheduler):
    """Slurm backend (see module doc)."""

    name = "slurm"
    job_id_re = SLURM_JOB_ID_RE

    squeue = Unicode("/usr/bin/squeue", help="Path of squeue (run by the hub).").tag(config=True)
    scancel = Unicode("/usr/bin/scancel", help="Path of scancel (run by the hub as root).").tag(config=True)
    scontrol = Unicode("/usr/bin/scontrol", help="Path of scontrol (partitions, nodes, reservations).").tag(config=True)
    slurm_conf = Unicode(
        "", help="SLURM_CONF for the hub's Slurm commands ('' = the default /etc/slurm/slurm.conf); "
        "the submit helper's sbatch takes its own from /etc/appliance/submit-helper.json."
    ).tag(config=True)
    notebook_partition = Unicode(
        "jhub", help="Partition of a request that names none (the site's notebook partition)."
    ).tag(config=True)
    default_runtime_hours_per_partition = Dict(
        {"jhub": 168.0},
        help="Notebook runtime in hours per partition: the default AND the most a user may ask "
        "for there. In partitions not listed, the default is BatchSpawner.default_runtime_hours "
        "and the maximum fallback_runtime_hours. A request in a reservation may instead run "
        "until the reservation ends. Slurm's own MaxTime always caps it.",
    ).tag(config=True)
    fallback_runtime_hours = Float(
        8.0,
        help="The most a notebook may run in partitions not listed in "
        "default_runtime_hours_per_partition (their default, BatchSpawner.default_runtime_hours, "
        "is capped to it).",
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
        True, help="Route to a job's node by its NodeAddr (else its NodeName); either must be a "
        "plain host name, and the node one that `scontrol show node` lists."
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

    def __init__(self, clock: Callable[[], float] = time.time, **kw):
        super().__init__(**kw)
        #: seconds since the epoch, read wherever "now" matters (tests give captured data its time)
        self.clock = clock
        self._cluster: Optional[ClusterInfo] = None  # the cached cluster view
        self._cluster_lock = asyncio.Lock()
        self._identities: dict[str, tuple[float, Identity]] = {}
        self._places: dict[str, queue.Place] = {}  # pending notebooks' place in their queue
        self._places_fetched = 0.0

    def policy(self) -> Policy:
        return Policy(
            notebook_partition=self.notebook_partition,
            submit_hosts=tuple(self.submit_hosts),
            runtime_hours=dict(self.default_runtime_hours_per_partition),
            fallback_hours=self.fallback_runtime_hours,
        )

    # -- commands and caches ----------------------------------------------------------------
    async def _run(self, *argv: str) -> str:
        return await commands.run(list(argv), slurm_conf=self.slurm_conf or None,
                                  timeout=self.command_timeout)

    async def _json(self, *argv: str) -> dict:
        return await commands.run_json(list(argv), slurm_conf=self.slurm_conf or None,
                                       timeout=self.command_timeout)

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
            out = await self._run(self.sacctmgr, "-nP", "show", "assoc", f"user={user}",
                                  "format=account")
            accounts = {ln.strip() for ln in out.splitlines() if ln.strip()}
        ident = unix_identity(user, accounts)
        self._identities[user] = (self.clock(), ident)
        return ident

    def _known_identity(self, user: str) -> Identity:
        """The cached identity (whatever its age), else the unix groups alone."""
        hit = self._identities.get(user)
        return hit[1] if hit else unix_identity(user)

    # -- interface ------------------------------------------------------------------------
    def partition_of(self, options: UserOptions) -> str:
        return self.policy().partition_of(options)

    def runtime_limit_hours(self, options: UserOptions, cluster: Optional[ClusterInfo] = None,
                            now: Optional[float] = None) -> tuple[float, str]:
        """(hours, why): the most a notebook with these options may run (access.runtime_limit_hours)."""
        cluster = cluster if cluster is not None else self._cluster
        return access.runtime_limit_hours(self.policy(), options, cluster,
                                          self.clock() if now is None else now)

    def runtime_seconds(self, user: str, options: UserOptions, default_hours: float) -> int:
        hours = access.runtime_hours(self.policy(), options, self._cluster, self.clock(),
                                     default_hours)
        return max(60, int(hours * 3600))

    def build_submit(self, request: SubmitRequest) -> dict[str, Any]:
        argv = build_sbatch_argv(
            request,
            partition=self.partition_of(request.options),
            job_name=self.job_name,
            launcher=self.launcher,
            job_script=self.job_script,
            extra_args=self.extra_sbatch_args,
        )
        # sbatch's path and SLURM_CONF: the helper's root-owned config (appliance.userside.siteconfig)
        return {"argv": argv}

    def _route_names(self) -> Optional[dict[str, str]]:
        """NodeName -> the name a route uses (NodeAddr or NodeName), of the cached node list."""
        if self._cluster is None:
            return None
        if self.use_node_address:
            return self._cluster.addresses()
        return {name: name for name in self._cluster.nodes}

    async def query_all(self) -> dict[str, JobStatus]:
        data = await self._json(self.squeue, "--json", "--states=all", f"--name={self.job_name}")
        statuses = parse_jobs(data, self.job_name, self._route_names())
        if any(s.state == RUNNING and not s.host for s in statuses.values()):
            # a running job on a node the cached list lacks (or no list yet): ask Slurm again
            try:
                await self.cluster(max_age=self.check_max_age)
                statuses = parse_jobs(data, self.job_name, self._route_names())
            except Exception as e:
                self.log.warning("slurm: node list unavailable: %s", e)
        pending = {s.detail.partition for s in statuses.values()
                   if s.state == PENDING and isinstance(s.detail, jobs.JobMeta)}
        if pending:
            await self._refresh_places(pending)
        if any(jobs.needs_nodes(s) for s in statuses.values()):
            # fatal_reason judges these against the cluster view: keep it recent
            try:
                await self.cluster(max_age=self.pending_check_seconds)
            except Exception as e:
                self.log.warning("slurm: cluster information unavailable: %s", e)
        return statuses

    async def _refresh_places(self, partitions: set[str]) -> None:
        """Queue positions of pending jobs in these partitions (one shared squeue, at most every
        pending_check_seconds)."""
        if self.clock() - self._places_fetched < self.pending_check_seconds:
            return
        parts = ",".join(sorted(p for p in partitions if p))
        try:
            data = await self._json(self.squeue, "--json", "--states=PENDING",
                                    f"--partition={parts}")
        except Exception as e:
            self.log.warning("slurm: queue positions unavailable: %s", e)
            return
        self._places = queue.queue_positions(data)
        self._places_fetched = self.clock()

    def waiting(self, status: JobStatus) -> dict[str, Any]:
        meta = status.detail
        if status.state != PENDING or not isinstance(meta, jobs.JobMeta):
            return {}
        out: dict[str, Any] = {"expected_start": meta.expected_start}
        bits = [queue.expected_start_text(meta.expected_start, self.clock())]
        place = self._places.get(status.job_id)
        if place is not None:
            out.update(position=place.position, pending=place.pending, partition=place.partition)
            bits.append(f"position {place.position} of {place.pending} pending in partition "
                        f"{place.partition}")
        out["text"] = "; ".join(bits)
        return out

    async def capacity(self) -> CapacityView:
        return queue.ceilings(await self.cluster())

    def max_runtime_seconds(self, user: str, options: UserOptions, default_max_hours: float) -> int:
        hours, _ = self.runtime_limit_hours(options)
        return int(min(hours, default_max_hours) * 3600)

    async def extend(self, job_id: str, limit_seconds: int) -> None:
        """``scontrol update JobId=N TimeLimit=M`` as the hub (root: Slurm lets only root, the
        SlurmUser or an operator raise a limit; docs/security.md, "Session extension")."""
        if not SLURM_JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"bad job id {job_id!r}")
        minutes = max(1, int(limit_seconds) // 60)
        await self._run(self.scontrol, "update", f"JobId={job_id}", f"TimeLimit={minutes}")

    async def cancel(self, job_id: str) -> None:
        if not SLURM_JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"bad job id {job_id!r}")
        try:
            await self._run(self.scancel, job_id)
        except RuntimeError as e:
            if commands.ALREADY_GONE_RE.search(str(e)):  # already gone: nothing to do
                return
            raise

    async def describe_resources(self, user: str) -> dict[str, Any]:
        c = await self.cluster()
        who = await self.identity(user)
        return access.describe(c, who, self.clock(), self.policy())

    async def check_request(self, user: str, options: UserOptions) -> None:
        # Spawn-time check: nearly fresh data (a node drained a minute ago must count), while the
        # form and describe_resources use the longer cache.
        c = await self.cluster(max_age=self.check_max_age)
        who = await self.identity(user)
        self.check_ceilings(c, who, options)
        self.check_against(c, who, options, self.clock())

    def check_ceilings(self, c: ClusterInfo, who: Identity, options: UserOptions) -> None:
        """What no node of the partition (or reservation) could EVER provide: 400 naming the
        field and the largest value there (pure; capacity.check_fits)."""
        pname = self.partition_of(options)
        p = c.partitions.get(pname)
        if p is None or access.partition_access(p, who, tuple(self.submit_hosts)) is not None:
            return  # check_against names the partition problem
        view = queue.ceilings(c)
        mine = [view.pools[f"partition:{n}"]
                for n in access.may_use(c, who, tuple(self.submit_hosts))]
        check_fits(view.pools[f"partition:{pname}"], options, others=mine)
        resv = view.pool("reservation", options.reservation or "")
        if resv is not None and resv.nodes:
            check_fits(resv, options)

    def check_against(self, c: ClusterInfo, who: Identity, options: UserOptions, now: float) -> None:
        """The checks of check_request on given cluster information (pure; access.check_against)."""
        access.check_against(c, who, options, now, self.policy())

    def fatal_reason(self, status: JobStatus) -> Optional[str]:
        """A pending job that cannot start: partition down, or no usable node for it."""
        return jobs.fatal_reason(status, self._cluster, self._known_identity, self.clock(),
                                 tuple(self.submit_hosts))
