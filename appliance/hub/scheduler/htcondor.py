"""HTCondor backend, through the htcondor Python bindings (``htcondor2``).

* Submission happens in the submit helper, as the user (``appliance.userside.htcondor``),
  authenticated with the user's Kerberos ticket (``SEC_CLIENT_AUTHENTICATION_METHODS=KERBEROS`` is
  forced there, so the helper can never use the hub's token). The description is a dict of validated values handed to ``htcondor2.Submit``;
  no user text is pasted into it (env goes to the private env file, never the job ad).
* Status and removal run in the hub as its service identity (an IDTOKEN listed in the schedd's
  ``QUEUE_SUPER_USERS``): one ``Schedd.query`` for all of this hub's notebook jobs per interval.
* Jobs carry ``IsNotebookJob = true`` (the fast-lane negotiator and notebook slots key on it),
  the notebook accounting group, and ``JupyterHubId`` so one schedd can serve several hubs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from traitlets import Bool, Dict, Float, Integer, Unicode, default

from ...names import HTCONDOR_JOB_ID_RE
from ...options import UserOptions
from ...userside.htcondor import locate_schedd_ad
from .. import metrics
from .base import DONE, HELD, PENDING, RUNNING, UNKNOWN, JobStatus, Scheduler, SubmitRequest
from .capacity import CapacityView, check_fits, never_fits
from .lane import SLOT_CONSTRAINT, SLOT_PROJECTION, Occupancy, parse_slots
from .routehost import HostRefused, slot_host

SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*\Z")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+\Z")

# HTCondor JobStatus codes
_STATUS = {1: PENDING, 2: RUNNING, 3: DONE, 4: DONE, 5: HELD, 6: RUNNING, 7: PENDING}
PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "HoldReason", "LastRejMatchReason",
    "Owner", "JupyterHubUser", "NumShadowStarts", "LastHoldReason", "RemoveReason",
    "HoldReasonCode", "HoldReasonSubCode", "JobCurrentStartDate", "AllowedJobDuration",
    "RequestCpus", "RequestMemory", "RequestGpus", "EnteredCurrentStatus",
]


@dataclass(frozen=True)
class CondorMeta:
    """What the job ad said beyond JobStatus (its ``detail``): the request, for fatal_reason."""

    cpus: int
    memory_mb: int
    gpus: int


def _quote_classad_string(value: str) -> str:
    if not SAFE_NAME_RE.match(value):
        raise ValueError(f"unsafe value {value!r}")
    return f'"{value}"'


def build_description(
    request: SubmitRequest,
    *,
    launcher: str,
    hub_id: str,
    accounting_group: str,
    requirements: str = "",
    transfer_files: bool = False,
    send_credential: bool = False,
    request_disk_mb: int = 256,
    extra: Optional[dict[str, str]] = None,
) -> dict[str, str]:
    """The submit description (dict for ``htcondor2.Submit``) from validated values only."""
    o = request.options
    for p in (launcher, request.env_file, request.home):
        if not SAFE_PATH_RE.match(p):
            raise ValueError(f"unsafe path {p!r}")
    lo, hi = request.port_range
    job_dir_rel = os.path.relpath(os.path.dirname(request.env_file), request.home)
    if not SAFE_PATH_RE.match("/" + job_dir_rel) or job_dir_rel.startswith(".."):
        raise ValueError("job dir must be inside the home directory")
    desc = {
        "universe": "vanilla",
        "executable": launcher,
        "transfer_executable": "false",
        # New-style quoted arguments; every piece matched SAFE_PATH_RE or is an integer.
        "arguments": f'"--env-file {request.env_file} --port-range {int(lo)}-{int(hi)}"',
        "initialdir": request.home,
        "should_transfer_files": "IF_NEEDED" if transfer_files else "NO",
        "output": f"{job_dir_rel}/{request.job_name}.out",
        "error": f"{job_dir_rel}/{request.job_name}.err",
        "request_cpus": str(int(o.cpus)),
        "request_memory": f"{int(round(o.memory_gb * 1024))}MB",
        # Scratch space on the node (the job runs in the shared home; its sandbox holds only the
        # ticket). Without it HTCondor asks for 1 GiB per job, and a partitionable notebook slot
        # gets only its share of the node's free disk: on the mini site 14-15 notebooks per node
        # filled it while 6 of 20 CPUs were free ("no match found" for the 29th notebook).
        "request_disk": f"{int(request_disk_mb)}MB",
        "batch_name": request.job_name,
        "+IsNotebookJob": "true",
        "+JupyterHubUser": _quote_classad_string(request.user),
        "+JupyterHubId": _quote_classad_string(hub_id),
        "accounting_group": accounting_group,
        "accounting_group_user": request.user,
        "allowed_job_duration": str(int(request.runtime_seconds)),
        # A notebook is not restartable elsewhere (its one-time env file is gone, the hub routes
        # to the old host): if the job would start a second time, remove it instead.
        "periodic_remove": "NumJobStarts > 1",
    }
    if o.gpus:
        desc["request_gpus"] = str(int(o.gpus))
    if requirements:
        desc["requirements"] = requirements
    if transfer_files:
        desc["transfer_output_files"] = '""'
    if send_credential:
        # The user's Kerberos ticket from the credd (stored there by the credential bridge): the
        # starter puts it in the job's scratch directory as <user>.cc (mode 0600, owned by the
        # user), sets KRB5CCNAME, and copies it again whenever the execute node's credmon renews
        # it. (23.9 has no "send_credential" submit keyword; the job attribute is what counts.)
        # The scratch directory is never transferred back: shared-home jobs transfer nothing, and
        # with file transfer transfer_output_files is empty (above).
        desc["MY.SendCredential"] = "true"
    for k, v in (extra or {}).items():
        desc[k] = v
    return desc


def _num(ad: Any, key: str) -> Optional[float]:
    try:
        value = ad.get(key)
        return float(value) if value is not None else None
    except (TypeError, ValueError):  # an expression, not a number
        return None


def status_from_ad(ad: Any) -> JobStatus:
    """The job ad's state. ``host`` stays None: the owner can edit the job ad (``RemoteHost``
    with condor_qedit), so the host comes from the lane's slot ads (``routehost.slot_host``)."""
    job_id = f"{int(ad['ClusterId'])}.{int(ad.get('ProcId', 0))}"
    code = int(ad.get("JobStatus", 0))
    state = _STATUS.get(code, UNKNOWN)
    host = None
    reason = ""
    ends_at = hold_code = started = None
    end_state = ""
    if state == RUNNING:
        started, limit = _num(ad, "JobCurrentStartDate"), _num(ad, "AllowedJobDuration")
        if started and limit:
            ends_at = started + limit
    elif state == HELD:
        reason = str(ad.get("HoldReason", "") or "held")
        hc = _num(ad, "HoldReasonCode")
        hold_code = int(hc) if hc is not None else None
    elif state == PENDING:
        reason = str(ad.get("LastRejMatchReason", "") or "waiting for a free notebook slot")
    elif state == DONE:
        reason = str(ad.get("RemoveReason", "") or "")
        end_state = "removed" if code == 3 else "completed"
    owner = ad.get("Owner")
    meta = CondorMeta(int(_num(ad, "RequestCpus") or 1), int(_num(ad, "RequestMemory") or 0),
                      int(_num(ad, "RequestGpus") or 0))
    return JobStatus(job_id=job_id, state=state, host=host, reason=reason,
                     owner=str(owner) if owner else None, detail=meta, ends_at=ends_at,
                     started_at=started, code=hold_code, end_state=end_state)


class HTCondorScheduler(Scheduler):
    """HTCondor backend (see module doc)."""

    name = "htcondor"
    job_id_re = HTCONDOR_JOB_ID_RE

    condor_config = Unicode(
        os.environ.get("CONDOR_CONFIG", "/etc/appliance/condor/condor_config"),
        help="HTCondor client config used by the hub (the submit helper takes its own, normally "
        "the same file, from condor_config in /etc/appliance/submit-helper.json).",
    ).tag(config=True)
    collector = Unicode(
        "", help="Collector to locate the notebook schedd in ('' = the config's COLLECTOR_HOST)."
    ).tag(config=True)
    schedd = Unicode(
        "", help="Name of the schedd notebook jobs go to ('' = the collector's only schedd)."
    ).tag(config=True)
    launcher = Unicode(
        "/usr/local/bin/appliance-launch", help="Path of appliance-launch on the execute nodes."
    ).tag(config=True)
    accounting_group = Unicode(
        "group_notebook", help="Accounting group of notebook jobs (keep it outside group quotas)."
    ).tag(config=True)
    requirements = Unicode(
        "", help="Extra 'requirements' expression for notebook jobs (admin-written, not user input)."
    ).tag(config=True)
    transfer_files = Bool(
        False,
        help="Use HTCondor file transfer (sandbox on the node) instead of a shared home. Costs ~1 s.",
    ).tag(config=True)
    send_credential = Bool(
        True,
        help="Give notebook jobs the user's Kerberos ticket (MY.SendCredential; needs the "
        "credential bridge, a credd and a Kerberos credmon on the schedd and execute hosts).",
    ).tag(config=True)
    request_disk_mb = Integer(
        256, min=1,
        help="Scratch disk each notebook job asks for, in MB (request_disk). A partitionable "
        "notebook slot holds only as many notebooks as its share of the node's free disk divided "
        "by this; keep it equal to the lane's JBA_NOTEBOOK_DISK_MB (condor-config/lane).",
    ).tag(config=True)
    extra_submit = Dict(
        {}, help="Extra submit commands added to every notebook job (admin-written)."
    ).tag(config=True)
    hub_id = Unicode(help="Tag identifying this hub's jobs (JupyterHubId attribute).").tag(config=True)
    capacity_cache_seconds = Float(
        60.0, min=1,
        help="How long the lane's slot view (what it can ever provide, and its occupancy) is "
        "reused for spawn checks; one collector query per refresh for all users.",
    ).tag(config=True)
    occupancy_refresh_seconds = Float(
        2.0, min=0.2,
        help="While notebook jobs are pending, refresh the lane's slot view at least this often "
        "(the occupancy the pending page shows, and jobs that no slot can ever hold).",
    ).tag(config=True)

    @default("hub_id")
    def _default_hub_id(self):
        import socket

        return re.sub(r"[^A-Za-z0-9._-]", "_", socket.getfqdn()) or "jupyterhub"

    def __init__(self, clock: Callable[[], float] = time.time, **kw):
        super().__init__(**kw)
        self._schedd = None
        self._htcondor = None
        self.clock = clock
        self._lane: Optional[tuple[CapacityView, Occupancy]] = None
        self._slots: list = []  # the raw slot ads behind self._lane (route hosts come from them)
        self._schedd_name = ""  # Name of the located schedd (slots' GlobalJobId start with it)
        self._hosts: dict[str, str] = {}  # job id -> host, once its slot ad was found and checked
        self._lane_lock = asyncio.Lock()

    def build_submit(self, request: SubmitRequest) -> dict[str, Any]:
        return {
            "collector": self.collector or None,
            "schedd": self.schedd or None,
            "description": build_description(
                request,
                launcher=self.launcher,
                hub_id=self.hub_id,
                accounting_group=self.accounting_group,
                requirements=self.requirements,
                transfer_files=self.transfer_files,
                send_credential=self.send_credential,
                request_disk_mb=self.request_disk_mb,
                extra=self.extra_submit,
            ),
        }

    # -- hub side (service identity) --------------------------------------------------------
    def _bindings(self):
        if self._htcondor is None:
            os.environ.setdefault("CONDOR_CONFIG", self.condor_config)
            # The hub acts only as its service identity (IDTOKEN). With a host keytab present,
            # root's KERBEROS would win and map to an identity without rights.
            os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = "IDTOKENS"
            import htcondor2

            self._htcondor = htcondor2
        return self._htcondor

    def _get_schedd(self, fresh: bool = False):
        if self._schedd is None or fresh:
            htc = self._bindings()
            ad = locate_schedd_ad(htc, self.collector or None, self.schedd or None)
            self._schedd_name = str(ad.get("Name") or "")
            self._schedd = htc.Schedd(ad)
        return self._schedd

    def _query_sync(self) -> dict[str, JobStatus]:
        constraint = f'IsNotebookJob =?= true && JupyterHubId =?= "{self.hub_id}"'
        for attempt in (0, 1):
            try:
                ads = self._get_schedd(fresh=attempt == 1).query(
                    constraint=constraint, projection=PROJECTION
                )
                break
            except Exception:
                if attempt:
                    raise
        return {s.job_id: s for s in (status_from_ad(ad) for ad in ads)}

    async def query_all(self) -> dict[str, JobStatus]:
        with metrics.time_query("htcondor", "query"):
            statuses = await asyncio.to_thread(self._query_sync)
        statuses = await self._with_hosts(statuses)
        if any(s.state == PENDING for s in statuses.values()):
            try:  # occupancy and "can never match" need a recent slot view
                await self.lane(max_age=self.occupancy_refresh_seconds)
            except Exception as e:
                self.log.warning("htcondor: lane slot view unavailable: %s", e)
        return statuses

    async def _with_hosts(self, statuses: dict[str, JobStatus]) -> dict[str, JobStatus]:
        """Running jobs get their host from the slot ad that runs them (``routehost``), never
        from the job ad. A job whose slot is not listed yet (the startd's update lags the
        schedd by ~1 s) stays without a host until a later query; the slot view is refreshed
        for it at most every ``fast_poll_interval``."""
        self._hosts = {j: h for j, h in self._hosts.items() if j in statuses}
        running = [s for s in statuses.values() if s.state == RUNNING]
        if any(s.job_id not in self._hosts for s in running):
            try:
                await self.lane(max_age=self.fast_poll_interval)
            except Exception as e:
                self.log.warning("htcondor: lane slot view unavailable: %s", e)
        out = dict(statuses)
        for s in running:
            host, error = self._hosts.get(s.job_id), ""
            if host is None:
                try:
                    host = slot_host(self._slots, s.job_id, s.owner, self._schedd_name)
                except HostRefused as e:  # the spawner logs it and fails the spawn
                    error = str(e)
                if host:
                    self._hosts[s.job_id] = host
            out[s.job_id] = dataclasses.replace(s, host=host, host_error=error)
        return out

    # -- the lane's slots: what it can ever provide, and how full it is ------------------------
    def _lane_sync(self) -> list:
        htc = self._bindings()
        collector = htc.Collector(self.collector) if self.collector else htc.Collector()
        return collector.query(htc.AdType.Startd, SLOT_CONSTRAINT, SLOT_PROJECTION)

    async def lane(self, max_age: Optional[float] = None) -> tuple[CapacityView, Occupancy]:
        """(ceilings, occupancy) of the notebook lane, cached ``capacity_cache_seconds``."""
        max_age = self.capacity_cache_seconds if max_age is None else max_age
        if self._lane is not None and self.clock() - self._lane[0].fetched < max_age:
            return self._lane
        async with self._lane_lock:
            if self._lane is not None and self.clock() - self._lane[0].fetched < max_age:
                return self._lane
            with metrics.time_query("htcondor", "slots"):
                ads = await asyncio.to_thread(self._lane_sync)
            self._lane = parse_slots(ads, self.clock())
            self._slots = list(ads)
            return self._lane

    async def capacity(self) -> Optional[CapacityView]:
        return (await self.lane())[0]

    async def describe_resources(self, user: str) -> dict[str, Any]:
        view, occ = await self.lane()
        return {"backend": "htcondor", "capacity": view.summary(), "occupancy": occ.as_dict()}

    async def check_request(self, user: str, options: UserOptions) -> None:
        try:
            view, _ = await self.lane()
        except Exception as e:  # unknown: the lane's own policy still refuses what is too big
            self.log.warning("htcondor: lane slot view unavailable, request not checked: %s", e)
            return
        check_fits(view.pools["lane"], options)

    def fatal_reason(self, status: JobStatus) -> Optional[str]:
        """A queued job no notebook slot of the lane can ever hold (the lane changed)."""
        meta = status.detail
        if status.state != PENDING or not isinstance(meta, CondorMeta) or self._lane is None:
            return None
        why = never_fits(self._lane[0].pools.get("lane"), meta.cpus, meta.memory_mb, meta.gpus)
        return f"Job {status.job_id} cannot start: {why}." if why else None

    def waiting(self, status: JobStatus) -> dict[str, Any]:
        if self._lane is None:
            return {}
        occ = self._lane[1]
        return {"occupancy": occ.as_dict(), "text": occ.text()}

    # -- history and extension -----------------------------------------------------------------
    def _history_sync(self, job_id: str) -> list:
        cluster, _, proc = job_id.partition(".")
        return list(self._get_schedd().history(
            f"ClusterId == {int(cluster)} && ProcId == {int(proc or 0)}", PROJECTION, 1))

    async def last_words(self, job_id: str) -> Optional[JobStatus]:
        if not HTCONDOR_JOB_ID_RE.match(job_id or ""):
            return None
        try:
            ads = await asyncio.to_thread(self._history_sync, job_id)
        except Exception as e:
            self.log.warning("htcondor: no history of job %s: %s", job_id, e)
            return None
        return status_from_ad(ads[0]) if ads else None

    def _edit_sync(self, job_id: str, attr: str, value: str) -> None:
        self._get_schedd().edit([job_id], attr, value)

    async def extend(self, job_id: str, limit_seconds: int) -> None:
        """Edit the job's ``AllowedJobDuration`` (as the hub's identity, a queue super user:
        the attribute is protected against everyone else, condor-config/lane/)."""
        if not HTCONDOR_JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"bad job id {job_id!r}")
        with metrics.time_query("htcondor", "edit"):
            await asyncio.to_thread(self._edit_sync, job_id, "AllowedJobDuration",
                                    str(int(limit_seconds)))

    def _cancel_sync(self, job_id: str) -> None:
        htc = self._bindings()
        for attempt in (0, 1):
            try:
                self._get_schedd(fresh=attempt == 1).act(htc.JobAction.Remove, [job_id])
                return
            except Exception:
                if attempt:
                    raise

    async def cancel(self, job_id: str) -> None:
        if not HTCONDOR_JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"bad job id {job_id!r}")
        with metrics.time_query("htcondor", "remove"):
            await asyncio.to_thread(self._cancel_sync, job_id)

    async def forget(self, job_id: str) -> None:
        """condor_rm, then condor_rm -forcex: a removed job whose shadow cannot reach the dead
        node's starter stays in the queue ("X") for its whole job lease otherwise, still counted
        as running by the negotiator's accounting."""
        await self.cancel(job_id)
        if not HTCONDOR_JOB_ID_RE.match(job_id):
            return
        htc = self._bindings()
        with metrics.time_query("htcondor", "remove"):
            await asyncio.to_thread(lambda: self._get_schedd().act(htc.JobAction.RemoveX,
                                                                   [job_id]))
