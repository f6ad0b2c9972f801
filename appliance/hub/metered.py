"""Interim: ``MeteredBatchSpawner`` records the spawn metrics of :mod:`appliance.hub.metrics` from
outside ``BatchSpawner``, by wrapping its steps.

This exists only until the restructuring (issue 8) is merged and the calls are wired into
``appliance/hub/spawner.py`` itself (the hook list is in docs/operations.md, "Wiring"); then this
module and the ``spawner_class`` line that selects it are deleted. It relies on the step methods of
today's spawner (``_forward_credential``, ``_run_helper``, ``_wait_running``, ``_wait_listening``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from tornado import web
from traitlets import default

from . import metrics
from .scheduler.base import HELD
from .spawner import BatchSpawner, SpawnError, get_scheduler


def spawn_lane(spawner: BatchSpawner, backend: str, options) -> str:
    """The lane/partition a spawn goes to: Slurm's partition, the HTCondor schedd (lane)."""
    try:
        sched = get_scheduler(backend, spawner)
    except Exception:
        return ""
    partition_of = getattr(sched, "partition_of", None)
    if callable(partition_of) and options is not None:
        return partition_of(options)
    return getattr(sched, "schedd", "") or backend


class MeteredBatchSpawner(BatchSpawner):
    _mtimer: Optional[metrics.SpawnTimer] = None
    _m_running_at: Optional[float] = None

    @staticmethod
    async def _apply_options_metered(spawner, user_options):
        try:
            await BatchSpawner._apply_options(spawner, user_options)
        except web.HTTPError as e:
            if e.status_code == 400:  # OptionsError: the message starts with the field name
                field = str(e.log_message or "").split(":", 1)[0]
                backend = (user_options or {}).get("backend") or spawner.default_backend
                metrics.record_refused(backend or "unknown", field)
            raise

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return MeteredBatchSpawner._apply_options_metered

    async def start(self):
        opts = self.options
        backend = opts.backend if opts is not None else (self.default_backend or "unknown")
        t = metrics.SpawnTimer(backend, spawn_lane(self, backend, opts))
        self._mtimer = t
        try:
            url = await super().start()
        except asyncio.CancelledError:
            t.finish("cancelled")
            raise
        except Exception as e:
            st = None
            watcher = _watcher(backend)
            if watcher is not None and self.job_id:
                st = watcher.jobs.get(self.job_id)
            if st is not None and st.state == HELD:
                t.finish("held", cause="held")
            else:
                t.finish("failed", cause="" if isinstance(e, SpawnError) else "error")
            raise
        t.finish("started")
        return url

    async def _forward_credential(self):
        t = self._mtimer
        if t is None:
            return await super()._forward_credential()
        with t.phase("credential"):
            return await super()._forward_credential()

    async def _run_helper(self, payload):
        t = self._mtimer
        if t is None:
            return await super()._run_helper(payload)
        with t.phase("submit"):
            return await super()._run_helper(payload)

    async def _wait_running(self, watcher, sched, t_submit):
        t = self._mtimer
        if t is None:
            return await super()._wait_running(watcher, sched, t_submit)
        with t.phase("queue"):
            try:
                host = await super()._wait_running(watcher, sched, t_submit)
            except Exception:
                st = watcher.jobs.get(self.job_id)
                t.pending_result("held" if st is not None and st.state == HELD else "gone")
                raise
            t.pending_result("running")
        self._m_running_at = time.monotonic()
        t.current = "server_start"
        return host

    async def _wait_listening(self, watcher, host, port):
        t = self._mtimer
        if t is None:
            return await super()._wait_listening(watcher, host, port)
        if self._m_running_at is not None:
            t.m.spawn_phase.labels(t.backend, t.lane, "server_start").observe(
                time.monotonic() - self._m_running_at)
        with t.phase("probe"):
            return await super()._wait_listening(watcher, host, port)

    async def stop(self, now=False):
        t = self._mtimer
        if t is not None and t.outcome is None and self._spawn_pending:
            # JupyterHub stops a pending spawn when the user cancels it or start_timeout passed.
            timed_out = time.monotonic() - t.started >= self.start_timeout - 1
            if t.current == "queue":
                t.pending_result("cancelled")
            t.finish("timed_out" if timed_out else "cancelled")
        return await super().stop(now=now)


def _watcher(backend: str):
    from .spawner import _WATCHERS

    return _WATCHERS.get(backend)
