"""``BatchSpawner``: one spawner for every batch backend.

The spawner owns the JupyterHub side (options, env, state, progress, the port report); everything
scheduler-specific sits behind ``appliance.hub.scheduler.base.Scheduler``. Status comes from one
shared :class:`~appliance.hub.scheduler.watcher.JobWatcher` per backend, never one query per user.

Lifecycle of ``start()``:
1. options were validated by ``apply_user_options`` (HTTP 400 naming the field on bad input);
2. the backend checks what this user may ask for (partitions, reservations, ...);
3. the submit helper runs as the user (``sudo -u USER appliance-submit``), writes the private env
   file (hub API token inside) and submits; secrets travel only on its stdin;
4. progress follows the scheduler's real state (idle/pending reason, running, held with reason);
5. the node launcher reports its port through ``POST /hub/api/batch/port``; the host comes from the
   scheduler. ``start()`` returns ``http://host:port``; the hub then waits for the server to answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import time
import uuid
from typing import Any, Optional

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Dict, Float, Instance, Integer, List, Tuple, Unicode, default
from traitlets.utils.importstring import import_item

from ..options import Bounds, OptionsError, UserOptions, validate_options
from .bridge import CredentialBridge, CredentialUnavailable
from .scheduler.base import (
    DONE,
    HELD,
    PENDING,
    RUNNING,
    JobStatus,
    Scheduler,
    SubmitError,
    SubmitRequest,
)
from .scheduler.watcher import JobWatcher

# One scheduler instance and one watcher per backend for the whole hub process.
_SCHEDULERS: dict[str, Scheduler] = {}
_WATCHERS: dict[str, JobWatcher] = {}


class SpawnError(Exception):
    """A spawn failed for a reason the user must see (JupyterHub shows the message)."""

    jupyterhub_message = None

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


def get_scheduler(name: str, spawner: "BatchSpawner") -> Scheduler:
    sched = _SCHEDULERS.get(name)
    if sched is None:
        cls = spawner.scheduler_classes.get(name)
        if cls is None:
            raise OptionsError("backend", f"{name!r} is not enabled on this hub")
        if isinstance(cls, str):
            cls = import_item(cls)
        sched = cls(config=spawner.config, log=spawner.log)
        _SCHEDULERS[name] = sched
    return sched


def get_watcher(name: str, spawner: "BatchSpawner") -> JobWatcher:
    w = _WATCHERS.get(name)
    if w is None:
        w = JobWatcher(get_scheduler(name, spawner), log=spawner.log)
        _WATCHERS[name] = w
    w.start()
    return w


class BatchSpawner(Spawner):
    """Spawn single-user servers as HTCondor or Slurm jobs (see module doc)."""

    scheduler_classes = Dict(
        {
            "htcondor": "appliance.hub.scheduler.htcondor.HTCondorScheduler",
            "slurm": "appliance.hub.scheduler.slurm.SlurmScheduler",
        },
        help="Backend name -> Scheduler class (or import string). Remove a key to disable it.",
    ).tag(config=True)
    default_backend = Unicode(
        "", help="Backend used when a request names none ('' = the request must name one)."
    ).tag(config=True)
    max_cpus = Integer(8, help="Upper bound for the 'cpus' option.").tag(config=True)
    max_memory_gb = Float(32.0, help="Upper bound for 'memory_gb'.").tag(config=True)
    max_gpus = Integer(0, help="Upper bound for 'gpus' (0: GPUs not offered).").tag(config=True)
    max_runtime_hours = Float(168.0, help="Upper bound for 'runtime_hours'.").tag(config=True)
    default_runtime_hours = Float(
        8.0, help="Runtime when the request names none and the backend has no better default."
    ).tag(config=True)
    reserved_env = List(
        Unicode(),
        default_value=[
            "PATH", "LD_*", "PYTHON*", "JUPYTER*", "JUPYTERHUB_*", "KRB5*", "HOME", "USER",
            "LOGNAME", "SHELL", "_CONDOR_*", "SLURM_*", "BASH_ENV", "ENV", "IFS",
        ],
        help="Environment variable names (glob patterns) users may not set.",
    ).tag(config=True)
    port_range = Tuple(
        Integer(), Integer(), default_value=(40000, 41000),
        help="Ports the node launcher may pick from (inclusive).",
    ).tag(config=True)
    submit_helper_command = List(
        Unicode(),
        default_value=["sudo", "-n", "-u", "{username}", "/opt/jupyterhub/bin/appliance-submit"],
        help="Command that runs the submit helper as the user; '{username}' is replaced.",
    ).tag(config=True)
    job_dir = Unicode(
        ".jupyterhub-batch",
        help="Directory (relative to the user's home) for job env files and job output.",
    ).tag(config=True)
    require_credential = List(
        Unicode(), default_value=["htcondor"],
        help="Backends that need the user's Kerberos ticket (submission and job) through the "
        "credential bridge.",
    ).tag(config=True)
    credential_min_valid = Float(
        60.0,
        help="A spawn needs a stored ticket valid for at least this many more seconds "
        "(otherwise: 'log in again').",
    ).tag(config=True)

    listen_poll_interval = Float(
        0.05, help="Seconds between the spawner's cheap TCP probes of a starting server."
    ).tag(config=True)

    # Runtime state
    job_id = Unicode("")
    backend = Unicode("")
    job_host = Unicode("")
    ccache = Unicode(None, allow_none=True)
    env_path = Unicode("")

    @default("env_keep")
    def _default_env_keep(self):
        # Nothing of the hub's own environment belongs in a job on another machine.
        return ["LANG", "LC_ALL"]

    @default("start_timeout")
    def _default_start_timeout(self):
        return 300

    @default("http_timeout")
    def _default_http_timeout(self):
        return 120

    @default("poll_interval")
    def _default_poll_interval(self):
        return 10

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return BatchSpawner._apply_options

    @default("options_form")
    def _default_options_form(self):
        from .form import render_form

        return render_form

    def __init__(self, **kw):
        super().__init__(**kw)
        self._port_event = asyncio.Event()
        self._reported_port: Optional[int] = None
        self._events: list[dict] = []
        self._events_changed = asyncio.Event()
        self.options: Optional[UserOptions] = None

    # ---------------------------------------------------------------- options
    def bounds(self) -> Bounds:
        return Bounds(
            backends=tuple(self.scheduler_classes),
            default_backend=self.default_backend or None,
            max_cpus=self.max_cpus,
            max_memory_gb=self.max_memory_gb,
            max_gpus=self.max_gpus,
            max_runtime_hours=self.max_runtime_hours,
            default_runtime_hours=self.default_runtime_hours,
            reserved_env=tuple(self.reserved_env),
        )

    @staticmethod
    async def _apply_options(spawner: "BatchSpawner", user_options: dict) -> None:
        try:
            opts = validate_options(user_options, spawner.bounds())
            sched = get_scheduler(opts.backend, spawner)
            await sched.check_request(spawner.user.name, opts)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        spawner.options = opts

    def options_from_form(self, formdata: dict) -> dict:
        from .form import options_from_form

        return options_from_form(formdata)

    # ---------------------------------------------------------------- state
    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state.update(job_id=self.job_id, backend=self.backend, job_host=self.job_host)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_id = state.get("job_id", "")
        self.backend = state.get("backend", "")
        self.job_host = state.get("job_host", "")

    def clear_state(self):
        super().clear_state()
        self.job_id = ""
        self.backend = ""
        self.job_host = ""
        self._reported_port = None

    # ---------------------------------------------------------------- progress
    def _emit(self, message: str, progress: Optional[int] = None) -> None:
        self.log.info("%s: %s", self._log_name, message)
        ev: dict[str, Any] = {"message": message}
        if progress is not None:
            ev["progress"] = progress
        self._events.append(ev)
        self._events_changed.set()

    async def progress(self):
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if not self._spawn_pending:
                break
            self._events_changed.clear()
            try:
                await asyncio.wait_for(self._events_changed.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass

    # ---------------------------------------------------------------- port report
    def port_reported(self, port: int) -> None:
        """Called by the API handler once the launcher reports its port."""
        self._reported_port = port
        self._port_event.set()

    # ---------------------------------------------------------------- start
    def _job_env(self) -> dict[str, str]:
        env = self.get_env()
        opts = self.options
        if opts is not None:
            env.update(opts.env)
            if opts.interface == "notebook":
                env["JUPYTERHUB_DEFAULT_URL"] = "/tree"
            else:
                env["JUPYTERHUB_DEFAULT_URL"] = "/lab"
        return {k: str(v) for k, v in env.items() if v is not None}

    async def _run_helper(self, payload: dict) -> dict:
        cmd = [a.replace("{username}", self.user.name) for a in self.submit_helper_command]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        out, err = await proc.communicate(json.dumps(payload).encode())
        try:
            answer = json.loads(out.decode() or "{}")
        except ValueError:
            answer = {}
        if proc.returncode != 0 or "job_id" not in answer:
            msg = answer.get("error") or err.decode(errors="replace").strip()[-500:] or "no answer"
            raise SubmitError(msg)
        return answer

    async def start(self):
        opts = self.options
        if opts is None:  # e.g. a start without apply_user_options (should not happen)
            await self._apply_options(self, self.user_options or {})
            opts = self.options
        self._events = []
        self._port_event.clear()
        self._reported_port = None
        sched = get_scheduler(opts.backend, self)
        watcher = get_watcher(opts.backend, self)
        try:
            pw = pwd.getpwnam(self.user.name)
        except KeyError:
            raise SpawnError(f"User {self.user.name} has no account on this system.")

        submit_ccache = None
        if opts.backend in self.require_credential:
            self._emit("Forwarding your Kerberos ticket", 5)
            submit_ccache = await self._forward_credential()

        name = f"jupyterhub-{self.user.name}-{self.name or 'default'}-{uuid.uuid4().hex[:8]}"
        env_path = os.path.join(pw.pw_dir, self.job_dir, name + ".json")
        runtime = sched.runtime_seconds(self.user.name, opts, self.default_runtime_hours)
        request = SubmitRequest(
            user=self.user.name,
            uid=pw.pw_uid,
            home=pw.pw_dir,
            options=opts,
            job_name=name,
            env_file=env_path,
            port_range=tuple(self.port_range),
            ccache=submit_ccache,
            runtime_seconds=runtime,
        )
        self.backend = opts.backend
        self.env_path = env_path
        self._emit(f"Submitting to {opts.backend}", 10)
        payload = {
            "backend": opts.backend,
            "ccache": submit_ccache,
            "env_path": env_path,
            "env": self._job_env(),
            "submit": sched.build_submit(request),
        }
        try:
            answer = await self._run_helper(payload)
        except SubmitError as e:
            raise SpawnError(f"Submission to {opts.backend} failed: {e}")
        finally:
            if submit_ccache:
                try:
                    os.unlink(submit_ccache)
                except OSError:
                    pass
        # Any query that starts from now on must list the job (if it still exists).
        t_submit = time.monotonic()
        self.job_id = answer["job_id"]
        self.job_host = ""
        self._emit(f"Job {self.job_id} submitted", 20)
        await self._save()

        with watcher.hurry():
            host = await self._wait_running(watcher, sched, t_submit)
            self.job_host = host
            await self._save()
            self._emit(f"Job {self.job_id} running on {host}; starting Jupyter", 60)
            while not self._port_event.is_set():
                try:
                    await asyncio.wait_for(self._port_event.wait(), timeout=1)
                except asyncio.TimeoutError:
                    st = await watcher.status(self.job_id)
                    if st is None or st.state in (DONE, HELD):
                        raise SpawnError(self._ended_message(st))
            port = self._reported_port
            self._emit(f"Jupyter starting on {host}:{port}", 70)
            await self._wait_listening(watcher, host, port)
        self._emit(f"Jupyter listening on {host}:{port}", 90)
        return f"http://{host}:{port}"

    async def _wait_listening(self, watcher: JobWatcher, host: str, port: int) -> None:
        """Return as soon as the server accepts connections (polled every ``listen_poll_interval``).

        JupyterHub's own readiness probe backs off exponentially and cost ~1.3 s (p95 3 s) per
        spawn in performance/; probing cheaply here first makes its first probe succeed.
        """
        deadline = time.monotonic() + self.http_timeout
        next_job_check = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                pass
            if time.monotonic() > next_job_check:
                next_job_check = time.monotonic() + 1
                st = await watcher.status(self.job_id)
                if st is None or st.state in (DONE, HELD):
                    raise SpawnError(self._ended_message(st))
            await asyncio.sleep(self.listen_poll_interval)
        # Give up quietly: JupyterHub's own probe and http_timeout decide from here.

    async def _forward_credential(self) -> str:
        """The path of a one-time copy of the user's current ticket for this submission
        (deleted after it); no usable ticket: SpawnError "... log in again" before anything is
        submitted. See appliance.hub.bridge.CredentialBridge.forward_credential."""
        try:
            return await CredentialBridge(parent=self).forward_credential(
                self.user.name, self.ccache, min_valid=self.credential_min_valid,
                emit=self._emit)
        except CredentialUnavailable as e:
            raise SpawnError(str(e)) from None

    async def _save(self):
        try:
            self.orm_spawner.state = self.get_state()
            self.db.commit()
        except Exception:  # pragma: no cover - db handling is JupyterHub's
            self.log.debug("could not save state early", exc_info=True)

    def _ended_message(self, st: Optional[JobStatus]) -> str:
        where = f" (job output: ~/{self.job_dir}/)"
        if st is not None and st.state == HELD:
            return f"Job {self.job_id} was held by {self.backend}: {st.reason}"
        if st is not None and st.reason:
            return f"Job {self.job_id} ended before Jupyter started: {st.reason}{where}"
        return f"Job {self.job_id} ended before Jupyter started{where}"

    async def _wait_running(self, watcher: JobWatcher, sched: Scheduler, t_submit: float) -> str:
        last_msg = None
        newer = t_submit
        while True:
            st = await watcher.status(self.job_id, newer_than=newer)
            newer = None
            if st is None or st.state == DONE:
                raise SpawnError(self._ended_message(st))
            if st.state == HELD:
                await self._cancel_quietly(sched)
                raise SpawnError(self._ended_message(st))
            if st.state == RUNNING and st.host:
                return st.host
            fatal = sched.fatal_reason(st)
            if fatal:
                await self._cancel_quietly(sched)
                raise SpawnError(fatal)
            msg = f"Job {self.job_id} waiting in the {sched.name} queue" + (
                f": {st.reason}" if st.reason else ""
            )
            if msg != last_msg:
                self._emit(msg, 40)
                last_msg = msg
            await watcher.wait_update(timeout=5)

    async def _cancel_quietly(self, sched: Scheduler) -> None:
        try:
            await sched.cancel(self.job_id)
        except Exception as e:
            self.log.warning("Could not remove job %s: %s", self.job_id, e)

    # ---------------------------------------------------------------- poll / stop
    async def poll(self):
        if not self.job_id or not self.backend:
            return 0
        watcher = get_watcher(self.backend, self)
        # Right after a hub restart the cache may predate us: wait for one fresh answer.
        newer = self._first_poll_mark() if watcher.updated == 0 else None
        st = await watcher.status(self.job_id, newer_than=newer)
        if st is None or st.state == DONE:
            return 1
        if st.state == HELD:
            self.log.warning("%s: job %s held: %s", self._log_name, self.job_id, st.reason)
            return 1
        return None

    def _first_poll_mark(self) -> float:
        return time.monotonic()

    async def stop(self, now=False):
        if self.job_id and self.backend:
            sched = get_scheduler(self.backend, self)
            await self._cancel_quietly(sched)
            watcher = _WATCHERS.get(self.backend)
            if watcher is not None and not now:
                # Wait (bounded) until the scheduler no longer lists the job as active.
                deadline = time.monotonic() + 15
                mark = time.monotonic()
                while time.monotonic() < deadline:
                    st = await watcher.status(self.job_id, newer_than=mark, timeout=5)
                    if st is None or st.state == DONE:
                        break
                    mark = time.monotonic()
        if self.env_path:
            try:
                os.unlink(self.env_path)
            except OSError:
                pass
        self.job_id = ""
        self.job_host = ""
