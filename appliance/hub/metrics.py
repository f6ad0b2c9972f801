"""The appliance's Prometheus metrics, exported on ``/hub/metrics`` beside JupyterHub's own.

JupyterHub serves the default ``prometheus_client`` registry on ``/hub/metrics`` (for a token with
``read:metrics``); importing this module adds the appliance's metrics to it. Names follow the
Prometheus conventions (base units in the name, ``_total`` counters); label values are bounded
codes (backend, lane, outcome, cause), never free text or user names.

Two kinds of metric:

* **recorded** by the code that sees the event, through the small functions below
  (:class:`SpawnTimer` for the spawner, :func:`observe_query` for the job watchers and backends,
  :func:`observe_bridge_request` for the credential bridge client, :func:`record_refused` for
  option validation);
* **collected** at scrape time from state the hub already keeps: sessions per backend and
  lane/partition from the shared job watchers' cached job lists (no extra scheduler query), and
  credential states from the bridge's ``states`` op (refreshed in the background, at most every
  ``max_age`` seconds, so a scrape never waits for the bridge).

The list with meanings is in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Mapping, Optional

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: spawn phases, in order (``credential`` only where the backend needs the Kerberos ticket)
PHASES = ("credential", "submit", "queue", "server_start", "probe")
#: spawn outcomes (label ``outcome`` of ``appliance_spawns_total``)
OUTCOMES = ("started", "refused", "held", "failed", "cancelled", "timed_out")
#: job states the sessions gauge reports (those of ``scheduler.base.JobStatus``)
SESSION_STATES = ("pending", "running", "held")
CREDENTIAL_STATES = ("active", "expiring", "final", "retrying", "expired")

# Spawns on the fast lane take 2-5 s, a busy batch queue minutes.
SPAWN_BUCKETS = (0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
QUERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

_CODE_RE = re.compile(r"[^a-z0-9_]+")
MAX_CAUSES = 64  # distinct cause codes kept per metric; more become "other"


def code(value: Any, default: str = "none") -> str:
    """A bounded label value: lower-case ``[a-z0-9_]``, at most 40 characters."""
    text = _CODE_RE.sub("_", str(value if value is not None else "").strip().lower()).strip("_")
    return text[:40] or default


def lane_label(value: Any) -> str:
    """A lane/partition label: scheduler names keep dots and dashes (``lane.mini.test``)."""
    text = re.sub(r"[^A-Za-z0-9_.:-]+", "_", str(value or "")).strip("_")
    return text[:64] or "default"


class ApplianceMetrics:
    """The recorded metrics on one registry (the module-level :data:`METRICS` uses the default one;
    tests make their own)."""

    def __init__(self, registry: Optional[CollectorRegistry] = REGISTRY):
        kw = {"registry": registry}
        self.spawn_duration = Histogram(
            "appliance_spawn_duration_seconds",
            "Spawn request to server reachable (or to failure), per backend, lane and outcome.",
            ["backend", "lane", "outcome"], buckets=SPAWN_BUCKETS, **kw)
        self.spawn_phase = Histogram(
            "appliance_spawn_phase_duration_seconds",
            "Duration of each spawn phase: credential (ticket forwarded), submit (helper ran), "
            "queue (submitted to running), server_start (running to port reported), probe (port "
            "reported to server accepting connections).",
            ["backend", "lane", "phase"], buckets=PHASE_BUCKETS, **kw)
        self.spawns = Counter(
            "appliance_spawns",
            "Spawn attempts by outcome (started, refused, held, failed, cancelled, timed_out) and "
            "cause (the field refused, the scheduler's hold reason code, the failing phase).",
            ["backend", "lane", "outcome", "cause"], **kw)
        self.pending = Histogram(
            "appliance_job_pending_seconds",
            "Time notebook jobs spent pending in the batch queue, observed when they left it "
            "(result: running, held, gone, cancelled).",
            ["backend", "lane", "result"], buckets=SPAWN_BUCKETS, **kw)
        self.query_duration = Histogram(
            "appliance_scheduler_query_duration_seconds",
            "Scheduler queries made by the hub (one shared status query per backend and interval, "
            "resource and cancel calls), by query and result.",
            ["backend", "query", "result"], buckets=QUERY_BUCKETS, **kw)
        self.query_errors = Counter(
            "appliance_scheduler_query_errors",
            "Failed scheduler queries, by query.", ["backend", "query"], **kw)
        self.availability_refreshes = Counter(
            "appliance_availability_refreshes",
            "Refreshes of a backend's shared availability view (each is one round of scheduler "
            "queries, at most one per Availability.refresh_seconds), by result.",
            ["backend", "result"], **kw)
        self.bridge_requests = Histogram(
            "appliance_bridge_request_duration_seconds",
            "Hub requests to the credential bridge (store at login, refresh before a spawn), by "
            "op and result (ok, refused, error).",
            ["op", "result"], buckets=QUERY_BUCKETS, **kw)
        self._causes: dict[str, set] = {}

    def cause(self, metric: str, value: Any) -> str:
        c = code(value)
        seen = self._causes.setdefault(metric, set())
        if c not in seen:
            if len(seen) >= MAX_CAUSES:
                return "other"
            seen.add(c)
        return c


METRICS = ApplianceMetrics()


# ------------------------------------------------------------------------------ recording API
class SpawnTimer:
    """Times one spawn. The spawner makes one at the start of ``start()``::

        t = SpawnTimer(backend, lane)
        with t.phase("submit"):
            ...
        with t.phase("queue"):
            ...
        t.finish("started")        # or t.finish("failed", cause="submit") in the except branch

    :meth:`finish` counts once; later calls are ignored (so an ``except`` and a ``finally`` may
    both call it). Pending (queue) time is tracked for the ``appliance_pending_*`` gauges while
    the ``queue`` phase is open.
    """

    def __init__(self, backend: str, lane: str = "", *, metrics: Optional[ApplianceMetrics] = None,
                 clock: Callable[[], float] = time.monotonic,
                 tracker: Optional["PendingTracker"] = None):
        self.m = metrics or METRICS
        self.backend = code(backend)
        self.lane = lane_label(lane)
        self.clock = clock
        self.started = clock()
        self.phases: dict[str, float] = {}
        self.current: Optional[str] = None
        self.failed_phase: Optional[str] = None  # the phase an exception left
        self.outcome: Optional[str] = None
        self.tracker = tracker if tracker is not None else PENDING

    def set_lane(self, lane: str) -> None:
        self.lane = lane_label(lane)

    @contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"unknown spawn phase {name!r}")
        t0 = self.clock()
        self.current = name
        if name == "queue":
            self.tracker.begin(id(self), self.backend, self.lane, t0)
        try:
            yield self
        except BaseException:
            self.failed_phase = name
            raise
        finally:
            dt = self.clock() - t0
            self.phases[name] = dt
            self.m.spawn_phase.labels(self.backend, self.lane, name).observe(dt)
            if name == "queue":
                self.tracker.end(id(self))
            self.current = None

    def pending_result(self, result: str) -> None:
        """The job left the queue (``running``, ``held``, ``gone``, ``cancelled``)."""
        begun = self.tracker.started(id(self))
        if begun is not None:
            self.m.pending.labels(self.backend, self.lane, code(result)).observe(
                self.clock() - begun)

    def finish(self, outcome: str, cause: Any = "") -> Optional[float]:
        if self.outcome is not None:
            return None
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown spawn outcome {outcome!r}")
        self.outcome = outcome
        if not cause and outcome != "started":
            cause = self.current or self.failed_phase or "other"
        dt = self.clock() - self.started
        self.m.spawn_duration.labels(self.backend, self.lane, outcome).observe(dt)
        self.m.spawns.labels(self.backend, self.lane, outcome,
                             self.m.cause("spawns", cause or "none")).inc()
        self.tracker.end(id(self))
        return dt


def record_refused(backend: str, field: str, lane: str = "",
                   metrics: Optional[ApplianceMetrics] = None) -> None:
    """A request refused by validation (HTTP 400) before anything was submitted."""
    m = metrics or METRICS
    m.spawns.labels(code(backend, "unknown"), lane_label(lane), "refused",
                    m.cause("spawns", field)).inc()


def observe_query(backend: str, query: str, seconds: float, ok: bool = True,
                  metrics: Optional[ApplianceMetrics] = None) -> None:
    m = metrics or METRICS
    b, q = code(backend), code(query)
    m.query_duration.labels(b, q, "ok" if ok else "error").observe(seconds)
    if not ok:
        m.query_errors.labels(b, q).inc()


def record_availability_refresh(backend: str, ok: bool = True,
                                metrics: Optional[ApplianceMetrics] = None) -> None:
    m = metrics or METRICS
    m.availability_refreshes.labels(code(backend), "ok" if ok else "error").inc()


@contextmanager
def time_query(backend: str, query: str, metrics: Optional[ApplianceMetrics] = None,
               clock: Callable[[], float] = time.monotonic):
    """``with time_query("slurm", "squeue"): ...`` observes the duration; an exception counts as an
    error (and propagates)."""
    t0 = clock()
    try:
        yield
    except BaseException:
        observe_query(backend, query, clock() - t0, ok=False, metrics=metrics)
        raise
    observe_query(backend, query, clock() - t0, ok=True, metrics=metrics)


def observe_bridge_request(op: str, seconds: float, result: str = "ok",
                           metrics: Optional[ApplianceMetrics] = None) -> None:
    """``result``: ``ok``, ``refused`` (BridgeRefused) or ``error`` (BridgeError)."""
    m = metrics or METRICS
    m.bridge_requests.labels(code(op), code(result)).observe(seconds)


# ------------------------------------------------------------------------------ pending gauges
class PendingTracker:
    """Spawns whose job is in the queue right now (filled by :class:`SpawnTimer`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._items: dict[int, tuple[str, str, float]] = {}

    def begin(self, key: int, backend: str, lane: str, at: float) -> None:
        self._items[key] = (backend, lane, at)

    def end(self, key: int) -> None:
        self._items.pop(key, None)

    def started(self, key: int) -> Optional[float]:
        item = self._items.get(key)
        return item[2] if item else None

    def collect(self):
        count = GaugeMetricFamily("appliance_pending_spawns",
                                  "Spawns whose job waits in the batch queue now.",
                                  labels=["backend", "lane"])
        oldest = GaugeMetricFamily("appliance_pending_oldest_seconds",
                                   "How long the longest-waiting pending spawn has waited.",
                                   labels=["backend", "lane"])
        now = self.clock()
        groups: dict[tuple[str, str], list[float]] = {}
        for backend, lane, at in list(self._items.values()):
            groups.setdefault((backend, lane), []).append(now - at)
        for key, ages in sorted(groups.items()):
            count.add_metric(list(key), len(ages))
            oldest.add_metric(list(key), max(ages))
        yield count
        yield oldest


PENDING = PendingTracker()


# ------------------------------------------------------------------------------ sessions collector
def job_lane(scheduler: Any, status: Any) -> str:
    """Lane or partition of a job from what the backend already knows: the partition that travels
    with a Slurm status (``status.detail.partition``, from the shared squeue answer), else the
    backend's lane (the HTCondor schedd it submits to)."""
    partition = getattr(getattr(status, "detail", None), "partition", "")
    if partition:
        return lane_label(partition)
    return lane_label(getattr(scheduler, "schedd", "") or getattr(scheduler, "name", ""))


def spawn_lane(scheduler: Any, options: Any) -> str:
    """The lane/partition a spawn goes to: Slurm's partition, else the HTCondor schedd (lane)."""
    partition_of = getattr(scheduler, "partition_of", None)
    if callable(partition_of) and options is not None:
        return partition_of(options)
    return getattr(scheduler, "schedd", "") or getattr(scheduler, "name", "")


class SessionsCollector:
    """Sessions per backend, lane/partition and state, from the watchers' cached job lists.

    ``watchers``: returns ``{backend: JobWatcher}`` (the spawner's shared watchers). Also exports
    each watcher's health: whether its last query worked, the age of its answer, its query count.
    """

    def __init__(self, watchers: Callable[[], Mapping[str, Any]],
                 clock: Callable[[], float] = time.monotonic):
        self.watchers = watchers
        self.clock = clock

    def collect(self):
        sessions = GaugeMetricFamily(
            "appliance_sessions", "Notebook jobs of this hub by backend, lane/partition and state "
            "(from the shared job watcher's last answer).", labels=["backend", "lane", "state"])
        up = GaugeMetricFamily("appliance_scheduler_up",
                               "1 if the backend's last shared status query worked.",
                               labels=["backend"])
        age = GaugeMetricFamily("appliance_scheduler_answer_age_seconds",
                                "Age of the shared status answer the spawners read.",
                                labels=["backend"])
        queries = CounterMetricFamily("appliance_scheduler_status_queries",
                                      "Successful shared status queries.", labels=["backend"])
        now = self.clock()
        for backend, w in sorted(dict(self.watchers()).items()):
            b = code(backend)
            counts: dict[tuple[str, str], int] = {}
            for job_id, st in list(getattr(w, "jobs", {}).items()):
                if st.state not in SESSION_STATES:
                    continue
                key = (job_lane(w.scheduler, st), st.state)
                counts[key] = counts.get(key, 0) + 1
            for (lane, state), n in sorted(counts.items()):
                sessions.add_metric([b, lane, state], n)
            up.add_metric([b], 0 if getattr(w, "last_error", None) else 1)
            if getattr(w, "updated", 0):
                age.add_metric([b], max(0.0, now - w.updated))
            queries.add_metric([b], getattr(w, "queries", 0))
        yield sessions
        yield up
        yield age
        yield queries


# ------------------------------------------------------------------------------ credentials collector
class CredentialCollector:
    """Credential states from the bridge's ``states`` op, plus renewals and pushes seen since the
    hub started (each user's ``last_renewed`` / ``last_pushed`` moving on between two answers).

    ``fetch``: coroutine function returning the ``states`` answer (``BridgeClient().states``).
    A scrape returns the last answer and, if it is older than ``max_age``, starts one refresh in the
    background: the scrape never waits for the bridge.
    """

    def __init__(self, fetch: Callable[[], Any], *, max_age: float = 30.0,
                 expiring_seconds: float = 3600.0, clock: Callable[[], float] = time.time):
        self.fetch = fetch
        self.max_age = max_age
        self.expiring_seconds = expiring_seconds
        self.clock = clock
        self.states: dict[str, dict] = {}
        self.fetched_at: Optional[float] = None
        self.ok = False
        self.renewals = 0
        self.renewal_failures = 0
        self.pushes = {"ok": 0, "error": 0}
        self._task: Optional[asyncio.Task] = None

    async def refresh(self) -> None:
        try:
            states = await self.fetch()
        except Exception:
            self.ok = False
            self.fetched_at = self.clock()
            return
        self._count(self.states, states or {})
        self.states = dict(states or {})
        self.fetched_at = self.clock()
        self.ok = True

    def _count(self, old: Mapping[str, dict], new: Mapping[str, dict]) -> None:
        if self.fetched_at is None:
            return  # first answer: the baseline, nothing "happened" yet
        for user, s in new.items():
            o = old.get(user) or {}
            if (s.get("last_renewed") or 0) > (o.get("last_renewed") or 0):
                self.renewals += 1
            if s.get("state") == "retrying" and (o.get("state") != "retrying"
                                                 or s.get("error") != o.get("error")):
                self.renewal_failures += 1
            if (s.get("last_pushed") or 0) > (o.get("last_pushed") or 0):
                self.pushes["error" if s.get("push_error") else "ok"] += 1

    def _maybe_refresh(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if self.fetched_at is not None and self.clock() - self.fetched_at < self.max_age:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self.refresh())

    def state_of(self, s: Mapping[str, Any], now: float) -> str:
        state = str(s.get("state") or "")
        valid = s.get("valid_until") or 0
        if state in ("active", "final") and valid and valid - now < self.expiring_seconds:
            return "expiring"
        return state if state in CREDENTIAL_STATES else "other"

    def collect(self):
        self._maybe_refresh()
        now = self.clock()
        creds = GaugeMetricFamily(
            "appliance_credentials", "Users' Kerberos credentials held by the bridge, by state "
            "(active; expiring: valid for less than the warning time; final: no longer renewable; "
            "retrying: renewal or credd store failing; expired).", labels=["state"])
        counts = {s: 0 for s in CREDENTIAL_STATES}
        for s in self.states.values():
            k = self.state_of(s, now)
            counts[k] = counts.get(k, 0) + 1
        for k, n in counts.items():
            creds.add_metric([k], n)
        yield creds
        up = GaugeMetricFamily("appliance_bridge_up",
                               "1 if the credential bridge answered the last states request.")
        up.add_metric([], 1 if self.ok else 0)
        yield up
        ren = CounterMetricFamily("appliance_bridge_renewals",
                                  "Ticket renewals by the bridge (seen by the hub).",
                                  labels=["result"])
        ren.add_metric(["ok"], self.renewals)
        ren.add_metric(["failed"], self.renewal_failures)
        yield ren
        push = CounterMetricFamily("appliance_bridge_pushes",
                                   "Re-login tickets pushed into running jobs (seen by the hub).",
                                   labels=["result"])
        for k, n in self.pushes.items():
            push.add_metric([k], n)
        yield push


# ------------------------------------------------------------------------------ installation
_INSTALLED: dict[str, Any] = {}


def install(watchers: Optional[Callable[[], Mapping[str, Any]]] = None,
            bridge_fetch: Optional[Callable[[], Any]] = None,
            registry: CollectorRegistry = REGISTRY, **credential_kw) -> dict[str, Any]:
    """Register the scrape-time collectors once per process (config fragment calls this)."""
    if not _INSTALLED.get("pending"):
        registry.register(PENDING)
        _INSTALLED["pending"] = PENDING
    if watchers is not None and "sessions" not in _INSTALLED:
        _INSTALLED["sessions"] = SessionsCollector(watchers)
        registry.register(_INSTALLED["sessions"])
    if bridge_fetch is not None and "credentials" not in _INSTALLED:
        _INSTALLED["credentials"] = CredentialCollector(bridge_fetch, **credential_kw)
        registry.register(_INSTALLED["credentials"])
    return dict(_INSTALLED)


def names(registry: CollectorRegistry = REGISTRY) -> Iterable[str]:
    """Metric family names in a registry (for docs and tests)."""
    for fam in registry.collect():
        yield fam.name
