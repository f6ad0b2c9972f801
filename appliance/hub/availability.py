"""The hub's live availability: one cached view per backend, shared by every user and page.

:class:`Availability` (settings ``c.Availability.*``, docs/admin.md) keeps one
:class:`ViewCache` per enabled backend. A request (the spawn page's first render, the page's
refreshes through ``GET /hub/api/batch/availability``) reads the cached view; when it is older
than ``refresh_seconds`` ONE refresh starts and every request arriving meanwhile waits for that
same refresh (at most ``wait_seconds``, then it gets the older view with its age). A failed
refresh is not retried before the next interval either, so the scheduler sees at most one
availability query per backend and interval, however many pages are open, and none while no
page is open. Each refresh counts in ``appliance_availability_refreshes_total``.

What a refresh queries: HTCondor, the lane collector's notebook slot ads (the backend's own
``lane`` cache, refreshed with it); Slurm, ``scontrol show node --json`` and ``squeue --json
--states=RUNNING,PENDING`` (partitions and reservations from the backend's cached view,
``SlurmScheduler.resource_cache_seconds``). The per-user part (what the caller may use, how
many jobs of their size fit) is computed from the cached data (``scheduler.availability``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Any, Awaitable, Callable, Optional

from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

from ..options import OptionsError, validate_options
from . import metrics
from .scheduler import availability as build
from .scheduler.slurm import commands
from .scheduler.slurm.cluster import parse_nodes

LABELS = {"htcondor": "HTCondor", "slurm": "SLURM"}


class ViewCache:
    """One backend's cached view (see module doc). ``clock``: seconds since the epoch."""

    def __init__(self, backend: str, fetch: Callable[[], Awaitable[Any]], *, interval: float,
                 wait: float, clock: Callable[[], float] = time.time, log=None):
        self.backend = backend
        self.fetch = fetch
        self.interval = interval
        self.wait = wait
        self.clock = clock
        self.log = log
        self.data: Any = None
        self.fetched_at: Optional[float] = None  # when the current data arrived
        self.attempted_at = -math.inf  # when the last refresh started
        self.error: Optional[str] = None  # the last refresh's failure (None: it worked)
        self.refreshes = 0
        self._task: Optional[asyncio.Task] = None

    async def _refresh(self) -> None:
        try:
            data = await self.fetch()
        except Exception as e:  # keep the last good view; say why it is old
            self.error = str(e) or e.__class__.__name__
            metrics.record_availability_refresh(self.backend, ok=False)
            if self.log:
                self.log.warning("availability: %s could not be queried: %s", self.backend, e)
            return
        self.data, self.fetched_at, self.error = data, self.clock(), None
        metrics.record_availability_refresh(self.backend, ok=True)

    async def get(self) -> "ViewCache":
        """Start a refresh if the view is due (one at a time), wait for it up to ``wait``."""
        if self._task is None and self.clock() - self.attempted_at >= self.interval:
            self.attempted_at = self.clock()
            self.refreshes += 1
            self._task = asyncio.ensure_future(self._refresh())
            self._task.add_done_callback(self._done)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.wait)
            except asyncio.TimeoutError:
                pass
        return self

    def _done(self, task: asyncio.Task) -> None:
        self._task = None

    def status(self, now: float) -> dict:
        return {"ok": self.error is None and self.fetched_at is not None,
                "error": self.error if self.error or self.fetched_at else "not queried yet",
                "fetched_at": self.fetched_at,
                "age_seconds": None if self.fetched_at is None
                else round(max(0.0, now - self.fetched_at), 1),
                "refresh_seconds": self.interval}


class Availability(LoggingConfigurable):
    """The hub's availability views (one per backend), made by the registry on first use."""

    refresh_seconds = Float(
        5.0, min=1.0,
        help="Seconds a backend's availability view is reused: at most one availability query "
        "of each scheduler per interval for all users and pages (none while no page asks).",
    ).tag(config=True)
    page_refresh_seconds = Float(
        5.0, min=1.0,
        help="How often an open spawn page asks GET /hub/api/batch/availability again.",
    ).tag(config=True)
    wait_seconds = Float(
        3.0, min=0.0,
        help="How long a request waits for a refresh in progress before it answers with the "
        "older view (whose age it shows); a slow scheduler never holds the spawn page longer.",
    ).tag(config=True)
    slurm_jobs = Bool(
        True,
        help="Also query Slurm's running and pending jobs (one squeue --json per refresh) for "
        "the expected start and the pending count; off: the expected start is 'now' or unknown.",
    ).tag(config=True)

    def __init__(self, registry, clock: Callable[[], float] = time.time, **kw):
        super().__init__(**kw)
        self.registry = registry
        self.clock = clock
        self._caches: dict[str, ViewCache] = {}

    def cache(self, backend: str) -> ViewCache:
        c = self._caches.get(backend)
        if c is None:
            fetch = {"htcondor": self._fetch_htcondor, "slurm": self._fetch_slurm}[backend]
            c = self._caches[backend] = ViewCache(
                backend, fetch, interval=self.refresh_seconds, wait=self.wait_seconds,
                clock=self.clock, log=self.log)
        return c

    def backends(self) -> list[str]:
        return [b for b in self.registry.classes if b in ("htcondor", "slurm")]

    # -- the queries (one refresh) --------------------------------------------------------
    async def _fetch_htcondor(self) -> list:
        sched = self.registry.scheduler("htcondor")
        await sched.lane(max_age=self.refresh_seconds)
        return list(sched._slots)

    async def _fetch_slurm(self) -> build.SlurmView:
        sched = self.registry.scheduler("slurm")
        base = await sched.cluster()

        async def query(name: str, *argv: str) -> dict:
            return await commands.run_json(list(argv), slurm_conf=sched.slurm_conf or None,
                                           timeout=sched.command_timeout, query=name)

        calls = [query("availability_nodes", sched.scontrol, "show", "node", "--json")]
        if self.slurm_jobs:
            calls.append(query("availability_jobs", sched.squeue, "--json",
                               "--states=RUNNING,PENDING"))
        answers = await asyncio.gather(*calls)
        nodes = answers[0]
        cluster = dataclasses.replace(base, nodes=parse_nodes(nodes), fetched=self.clock())
        jobs = build.parse_jobs(answers[1]) if len(answers) > 1 else []
        return build.SlurmView(cluster, build.parse_node_use(nodes), jobs)

    # -- one caller's view ---------------------------------------------------------------
    async def view(self, user: str, size: build.Size) -> dict:
        """The JSON answer (schema: availability.schema.json) for ``user`` and a job of ``size``."""
        caches = await asyncio.gather(*(self.cache(b).get() for b in self.backends()))
        now = self.clock()
        out = []
        for c in caches:
            entry = {"backend": c.backend, "label": LABELS.get(c.backend, c.backend),
                     **c.status(now), "pools": []}
            if c.data is not None:
                try:
                    entry["pools"] = await self._pools(c.backend, c.data, user, size, now)
                except Exception as e:  # e.g. the user's identity: say so, keep the rest
                    self.log.warning("availability: %s view for %s failed: %s", c.backend, user, e)
                    entry.update(ok=False, error=str(e))
            out.append(entry)
        return {"user": user, "now": now,
                "request": {"cpus": size.cpus, "memory_gb": size.memory_mb / 1024,
                            "gpus": size.gpus},
                "page_refresh_seconds": self.page_refresh_seconds, "backends": out}

    async def _pools(self, backend: str, data: Any, user: str, size: build.Size,
                     now: float) -> list[dict]:
        sched = self.registry.scheduler(backend)
        if backend == "htcondor":
            return [build.condor_lane(data, size, sched.request_disk_mb, now)]
        who = await sched.identity(user)
        return build.slurm_pools(data, who, now, size, sched.submit_hosts,
                                 first=sched.notebook_partition)


# -- the caller's side: the request's size, the form's panel ----------------------------------
def size_of(args: dict, bounds) -> build.Size:
    """Field strings (query arguments, the form's values) -> the validated size (OptionsError
    naming the field); missing ones take the user_options defaults."""
    data: dict = {"backend": bounds.default_backend or bounds.backends[0]}
    for key, kind in (("cpus", int), ("memory_gb", float), ("gpus", int)):
        raw = args.get(key)
        if raw in (None, ""):
            continue
        try:
            data[key] = kind(raw)
        except (TypeError, ValueError):
            raise OptionsError(key, "must be an integer" if kind is int else "must be a number") \
                from None
    opts = validate_options(data, bounds)
    return build.Size(opts.cpus, int(round(opts.memory_gb * 1024)), opts.gpus or 0)


async def availability_for(spawner, values: dict) -> dict:
    """The view for the spawner's user and the size ``values`` name (OptionsError if bad)."""
    size = size_of(values, spawner.bounds())
    return await spawner.registry.availability().view(spawner.user.name, size)


async def form_availability(spawner, values: dict) -> Optional[dict]:
    """The panel's first data for the spawn form; None (the panel says why) when it cannot be
    made: the form itself never fails because of it."""
    try:
        try:
            return await availability_for(spawner, values)
        except OptionsError:  # a refused attempt's values: show the default size instead
            return await availability_for(spawner, {})
    except Exception as e:
        spawner.log.warning("availability for the spawn form failed: %s", e)
        return None
