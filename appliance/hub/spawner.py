"""``BatchSpawner``: one spawner for every batch backend.

The spawner owns the JupyterHub side (options, env, state, progress, the port report); everything
scheduler-specific sits behind ``appliance.hub.scheduler.base.Scheduler``. Status comes from one
shared ``JobWatcher`` per backend (``appliance.hub.registry``), never one query per user; a
submitted job is followed by ``appliance.hub.job.NotebookJob``.

Lifecycle of ``start()``:
1. options were validated by ``apply_user_options`` (HTTP 400 naming the field on bad input);
2. the backend checks what this user may ask for (partitions, reservations, ...);
3. the submit helper runs as the user (``sudo -u USER appliance-submit``), writes the private env
   file (hub API token inside) and submits; secrets travel only on its stdin;
4. progress follows the scheduler's real state (idle/pending reason, running, held with reason);
5. the node launcher reports its port through ``POST /hub/api/batch/port``; the host comes from the
   scheduler. With internal TLS (``internal_tls_dir``) the hub pins the server's certificate
   (appliance.hub.servertls) and ``start()`` returns ``https://host:port``; the hub then waits for
   the server to answer.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import pwd
import time
import uuid
from typing import Any, Optional
from urllib.parse import urlparse

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Bool, Dict, Float, Instance, Integer, List, TraitError, Tuple, Unicode, default, validate

from ..options import DEFAULT_RESERVED_ENV, Bounds, OptionsError, UserOptions, validate_options
from . import metrics, servertls
from .availability import form_availability
from .bridge import CredentialBridge, CredentialUnavailable
from .form import (PresetError, check_presets, form_context, form_values, matching_preset,
                   options_from_form, render_form, summary)
from .form_limits import field_limits
from .group_kernels import check_mapping, jupyter_path, kernel_dirs, unix_groups
from .job import NotebookJob, SpawnError, Waits
from .endings import SessionEndings
from .outcomes import Outcome
from .registry import Registry, hub_registry
from .scheduler.base import DONE, HELD, PENDING, Scheduler, SubmitError
from .servertls import ServerTLS
from .submission import helper_argv, helper_request, run_submit_helper, submit_request

_BOUNDS = Bounds()  # the validator's defaults (appliance.options), written there once
PORT_MIN, PORT_MAX = 1024, 65535




class BatchSpawner(SessionEndings, Spawner):
    """Spawn single-user servers as HTCondor or Slurm jobs (see module doc)."""

    scheduler_classes = Dict(
        {
            "htcondor": "appliance.hub.scheduler.htcondor.HTCondorScheduler",
            "slurm": "appliance.hub.scheduler.slurm.SlurmScheduler",
        },
        help="Backend name -> Scheduler class (or import string). Remove a key to disable it.",
    ).tag(config=True)
    default_backend = Unicode(
        "", help="Backend (one of scheduler_classes) used when a request names none; "
        "'' = the request must name one.",
    ).tag(config=True)
    submit_helper_command = List(
        Unicode(), minlen=1,
        default_value=["sudo", "-n", "-u", "{username}", "/opt/jupyterhub/bin/appliance-submit"],
        help="Command that runs the submit helper as the user; '{username}' is replaced.",
    ).tag(config=True)
    job_dir = Unicode(
        ".jupyterhub-batch",
        help="Directory inside the user's home (relative to it) for job env files and job output.",
    ).tag(config=True)
    port_range = Tuple(
        Integer(), Integer(), default_value=(40000, 41000),
        help=f"Ports the node launcher may pick from (low, high; inclusive, within "
        f"{PORT_MIN}-{PORT_MAX}). The hub accepts a port report only inside this range.",
    ).tag(config=True)

    max_cpus = Integer(_BOUNDS.max_cpus, min=1, help="Upper bound for 'cpus'.").tag(config=True)
    max_memory_gb = Float(
        _BOUNDS.max_memory_gb, min=0.5, help="Upper bound for 'memory_gb' (GiB, >= 0.5)."
    ).tag(config=True)
    max_gpus = Integer(
        _BOUNDS.max_gpus, min=0, help="Upper bound for 'gpus' (0: GPUs not offered)."
    ).tag(config=True)
    max_runtime_hours = Float(
        _BOUNDS.max_runtime_hours, min=0.25, help="Upper bound for 'runtime_hours' (>= 0.25)."
    ).tag(config=True)
    default_runtime_hours = Float(
        _BOUNDS.default_runtime_hours, min=0.25,
        help="Runtime when the request names none and the backend has no better default "
        "(<= max_runtime_hours).",
    ).tag(config=True)
    group_kernel_paths = Dict(
        {}, help="Extra Jupyter data directories per Unix group, e.g. {'belle2': "
        "['/cvmfs/belle.cern.ch/jupyter']}: added to JUPYTER_PATH in the notebook job of the "
        "group's members (their kernelspecs, in <dir>/kernels/, appear in JupyterLab). "
        "Membership: the hub host's group database. Absolute paths, as seen on the nodes "
        "(docs/admin.md).",
    ).tag(config=True)
    reserved_env = List(
        Unicode(), default_value=list(DEFAULT_RESERVED_ENV),
        help="Environment variable names (glob patterns) users may not set.",
    ).tag(config=True)

    presets = List(
        Dict(), default_value=[],
        help="Presets shown as cards at the top of the spawn form: a list of {'name': str, "
        "'description': str, 'options': {user option: value}} (docs/admin.md). Each preset's "
        "options are validated like a user's request when the hub starts; a chosen preset's "
        "values go through the same validation as any input.",
    ).tag(config=True)

    require_credential = List(
        Unicode(), default_value=["htcondor"],
        help="Backends that need the user's Kerberos ticket (submission and job) through the "
        "credential bridge.",
    ).tag(config=True)
    # On the spawner, not the authenticator: it decides what gets started (the last options,
    # checked like a form spawn) and costs a batch job per login, like the other settings here;
    # the login handler (appliance.hub.login_start) only supplies the moment.
    start_on_login = Bool(
        False,
        help="Start on login: a user who logs in with no server but with last options that are "
        "still valid gets a spawn of those options submitted at once (the login does not wait "
        "for it); the home page says so and offers 'Choose other options', which stops it and "
        "opens the form. Never after a last start that failed or was refused, nor when the "
        "login's Kerberos ticket was not stored (backends in require_credential), nor beyond "
        "the hub's concurrent_spawn_limit / active_server_limit. Costs a batch job per such "
        "login, whether or not the user then works in it (docs/admin.md).",
    ).tag(config=True)
    credential_min_valid = Float(
        60.0, min=0, max=86400,
        help="A spawn needs a stored ticket valid for at least this many more seconds "
        "(otherwise: 'log in again').",
    ).tag(config=True)

    listen_poll_interval = Float(
        0.05, min=0.001, max=5,
        help="Seconds between the spawner's cheap TCP probes of a starting server.",
    ).tag(config=True)
    check_interval = Float(
        1.0, min=0.01, max=60,
        help="Seconds between checks that a starting job still exists while waiting for its port "
        "report and for its server to listen (also the longest single TCP probe).",
    ).tag(config=True)
    status_timeout = Float(
        5.0, min=0.1, max=300,
        help="Longest wait for one new answer of the shared status query (while a job is queued, "
        "and in stop()).",
    ).tag(config=True)
    stop_timeout = Float(
        15.0, min=0, max=600,
        help="stop() waits at most this long, after removing the job, until the scheduler no longer "
        "lists it as active (0: do not wait).",
    ).tag(config=True)

    internal_tls_dir = Unicode(
        "", help="Directory of the internal CAs and certificates (appliance.internaltls; made by "
        "appliance.init). Set: every server serves TLS with a certificate issued for its user's "
        "own host at each spawn, CHP and the hub verify it, and the hub pins it before routing. "
        "'' = plain HTTP routes (nothing then proves who answers on the reported port).",
    ).tag(config=True)
    server_cert_node_names = List(
        Unicode(), default_value=[],
        help="Node host names or '*.<domain>' patterns in every server certificate, for "
        "JupyterHub's own host check of the route (CHP checks the user's host). The shipped "
        "config sets them from APPLIANCE_NODE_NAMES (default: '*.' + the domain of the hub's "
        "cluster-side name). Never a pattern covering users' hosts.",
    ).tag(config=True)

    registry = Instance(
        Registry, help="Not a setting: the hub's schedulers and watchers, shared by its spawners "
        "(appliance.hub.registry; made from scheduler_classes on first use).",
    )

    # Runtime state
    job_id = Unicode("")
    backend = Unicode("")
    job_host = Unicode("")
    ccache = Unicode(None, allow_none=True)
    env_path = Unicode("")

    @validate("group_kernel_paths")
    def _check_group_kernel_paths(self, proposal):
        try:
            return check_mapping(proposal["value"])
        except ValueError as e:
            raise TraitError(f"BatchSpawner.group_kernel_paths: {e}") from None

    @validate("port_range")
    def _check_port_range(self, proposal):
        lo, hi = proposal["value"]
        if not PORT_MIN <= lo <= hi <= PORT_MAX:
            raise TraitError(f"BatchSpawner.port_range: ({lo}, {hi}) must be (low, high) with "
                             f"{PORT_MIN} <= low <= high <= {PORT_MAX}")
        return proposal["value"]

    @validate("scheduler_classes", "default_backend")
    def _check_backends(self, proposal):
        classes = proposal["value"] if proposal["trait"].name == "scheduler_classes" \
            else self.scheduler_classes
        default = proposal["value"] if proposal["trait"].name == "default_backend" \
            else self.default_backend
        if not classes:
            raise TraitError("BatchSpawner.scheduler_classes: at least one backend must be enabled")
        if default and default not in classes:
            raise TraitError(f"BatchSpawner.default_backend: {default!r} is not one of "
                             f"scheduler_classes ({', '.join(classes)})")
        return proposal["value"]

    @validate("default_runtime_hours", "max_runtime_hours")
    def _check_runtimes(self, proposal):
        value, name = proposal["value"], proposal["trait"].name
        default = value if name == "default_runtime_hours" else self.default_runtime_hours
        maximum = value if name == "max_runtime_hours" else self.max_runtime_hours
        if default > maximum:
            raise TraitError(f"BatchSpawner.default_runtime_hours ({default:g}) is above "
                             f"max_runtime_hours ({maximum:g})")
        return value

    @validate("job_dir")
    def _check_job_dir(self, proposal):
        path = proposal["value"]
        if not path or path.startswith("/") or posixpath.normpath(path).split("/")[0] == "..":
            raise TraitError(f"BatchSpawner.job_dir: {path!r} must be a path inside the home "
                             "directory, relative to it")
        return path

    @default("registry")
    def _default_registry(self):
        return hub_registry(self.user.settings, self.scheduler_classes, config=self.config,
                            log=self.log)

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
        return BatchSpawner._render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return BatchSpawner._options_from_form

    def __init__(self, **kw):
        super().__init__(**kw)
        self._port_event = asyncio.Event()
        self._timer: Optional[metrics.SpawnTimer] = None  # the current spawn's (metrics)
        self._reported_port: Optional[int] = None
        self._events: list[dict] = []
        self._events_changed = asyncio.Event()
        self.options: Optional[UserOptions] = None
        self._runtime_seconds = 0
        self._submitted_here = False
        # the user's last accepted options (user_options JSON; kept in the spawner's state, in the
        # hub's database) and the form data of the attempt being made now (with its refusal)
        self.last_options: Optional[dict] = None
        self._attempt: Optional[tuple[dict, Optional[OptionsError]]] = None
        # this server was started by the login (start_on_login), not by a request of the user:
        # kept in the state until that server stops (clear_state)
        self.started_on_login = False
        self._init_endings()
        self._presets = self.checked_presets()  # once: the presets and bounds are config
        self._tls: Optional[ServerTLS] = None
        self._issued = None  # this spawn's server certificate (appliance.internaltls.IssuedServer)

    def checked_presets(self) -> list[dict]:
        """``presets``, validated against the bounds (TraitError naming preset and field)."""
        try:
            return check_presets(self.presets, self.bounds())
        except PresetError as e:
            raise TraitError(f"BatchSpawner.presets: {e}") from None

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
            sched = spawner.registry.scheduler(opts.backend)
            await sched.check_request(spawner.user.name, opts)
        except OptionsError as e:
            backend = (user_options or {}).get("backend") or spawner.default_backend or "unknown"
            metrics.record_refused(str(backend), e.field)
            spawner.record(Outcome("refused", f"Refused before submission: {e}", time.time(),
                                   backend=str(backend), extra={"field": e.field}))
            if spawner._attempt is not None:  # the form shows the message next to the field
                spawner._attempt = (spawner._attempt[0], e)
            await spawner._save()
            raise web.HTTPError(400, str(e)) from None
        spawner.options = opts
        spawner.last_options = dict(user_options or {})
        spawner._attempt = None

    # ---------------------------------------------------------------- the spawn form
    @staticmethod
    def _options_from_form(formdata: dict, spawner: "BatchSpawner") -> dict:
        """Form data (or query arguments) -> user_options, the chosen preset applied; the
        attempt is kept so that a refused one reopens the form with its values."""
        data = {k: v for k, v in formdata.items() if k != "_xsrf"}
        spawner._attempt = (data, None)
        try:
            return options_from_form(data, spawner._presets, spawner.bounds())
        except OptionsError as e:
            spawner._attempt = (data, e)
            raise

    def options_from_query(self, query_data):
        """JupyterHub's query-string spawning (``/hub/spawn?backend=slurm&cpus=2``): like the
        form, but never ``env``: a URL ends up in logs and browser history."""
        if "env" in query_data:
            self._attempt = ({k: v for k, v in query_data.items() if k != "env"},
                             OptionsError("env", "is not accepted in a URL (URLs are logged); "
                                          "set it in the form"))
            raise self._attempt[1]
        return self._options_from_form(query_data, self)

    def last_choice(self) -> Optional[dict]:
        """The user's last accepted options if they are still valid here: {"summary": words,
        "fields": [(form field, value)]} for the home page's "Start again" form; else None."""
        if not self.last_options:
            return None
        bounds = self.bounds()
        try:
            opts = validate_options(self.last_options, bounds)
        except OptionsError:
            return None
        values = form_values(self.last_options, bounds)
        if opts.backend != "slurm":
            for key in ("partition", "reservation", "constraint"):
                values.pop(key)
        fields = [(k, v) for k, v in values.items() if v != ""]
        return {"summary": summary(opts.__dict__), "fields": [("preset", "")] + fields}

    def login_start_view(self) -> Optional[dict]:
        """For the home page while the server the login started (start_on_login) is active:
        {"summary": its options in words, "ready": bool}; else None."""
        if not (self.started_on_login and self.active):
            return None
        choice = self.last_choice()  # the options of this spawn: apply_user_options set them
        return {"summary": choice["summary"] if choice else "your last options",
                "ready": bool(self.ready)}

    @staticmethod
    async def _render_options_form(spawner: "BatchSpawner") -> str:
        """The spawn page form (templates/spawn_form.html, overridable via template_paths)."""
        bounds = spawner.bounds()
        slurm = None
        if "slurm" in bounds.backends:
            try:
                slurm = await spawner.registry.scheduler("slurm").describe_resources(
                    spawner.user.name)
            except Exception as e:  # the form must still render; the message tells why
                spawner.log.warning("Slurm resources unavailable: %s", e)
                slurm = {"error": str(e)}
        lane_gpus = None
        if "htcondor" in bounds.backends:
            try:
                lane = (await spawner.registry.scheduler("htcondor").capacity()).pool("lane")
                lane_gpus = lane.max_gpus if lane is not None else None
            except Exception as e:  # unknown: the form offers the bound, the server decides
                spawner.log.warning("HTCondor lane capacity unavailable: %s", e)
        template_paths = spawner.user.settings.get("template_path") or ()
        limits = field_limits(bounds, lane_gpus, slurm)
        context = spawner._form_context(bounds, slurm, limits)
        context["availability"] = await form_availability(spawner, context["values"])
        return render_form(context, template_paths)

    def _form_context(self, bounds: Bounds, slurm: Optional[dict],
                      limits: Optional[dict] = None) -> dict:
        """What the form shows: a refused attempt (its values, the message next to the field),
        else the last accepted options, else the defaults with the first preset chosen."""
        presets = self._presets
        attempt, self._attempt = self._attempt, None
        last = None
        if self.last_options:
            try:
                last = validate_options(self.last_options, bounds).__dict__
            except OptionsError:  # the bounds changed since: start from the defaults
                last = None
        if attempt is not None:
            data, err = attempt
            values = {k: (v[0] if isinstance(v, list) and v else str(v or ""))
                      for k, v in data.items() if k in form_values(None, bounds)}
            values = {k: v.replace("\r\n", "\n") for k, v in values.items()}
            chosen = data.get("preset", [""])
            chosen = chosen[0] if isinstance(chosen, list) and chosen else str(chosen or "")
            errors = {err.field: err.message} if err is not None else {}
            return form_context(bounds, slurm, presets, values, chosen, errors, last, limits)
        if last is not None:
            return form_context(bounds, slurm, presets, form_values(self.last_options, bounds),
                                matching_preset(self.last_options, presets, bounds) or "",
                                last=last, limits=limits)
        return form_context(bounds, slurm, presets, limits=limits)

    # ---------------------------------------------------------------- state
    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state.update(job_id=self.job_id, backend=self.backend, job_host=self.job_host,
                         env_path=self.env_path)
        if self.last_outcome is not None:
            state["last_outcome"] = self.last_outcome.to_state()
        if self.last_options:
            state["last_options"] = self.last_options
        if self.started_on_login:
            state["started_on_login"] = True
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_id = state.get("job_id", "")
        self.backend = state.get("backend", "")
        self.job_host = state.get("job_host", "")
        self.env_path = state.get("env_path", "")
        self.last_outcome = Outcome.from_state(state.get("last_outcome")) or self.last_outcome
        if isinstance(state.get("last_options"), dict):
            self.last_options = state["last_options"]
        self.started_on_login = state.get("started_on_login") is True

    def clear_state(self):
        # The last outcome stays: it is what the user sees after the server is gone; so do the
        # last options (the next form opens with them).
        super().clear_state()
        self._unfollow()
        # JupyterHub clears the state at the start of a spawn too, with that spawn already
        # pending (spawn_single_user sets it first), and at the end of every stop, with nothing
        # pending: the mark of a start on login lasts exactly as long as its server.
        if not self._spawn_pending:
            self.started_on_login = False
        self.job_id = ""
        self.backend = ""
        self.job_host = ""
        self._reported_port = None

    # ---------------------------------------------------------------- progress
    def _emit(self, message: str, progress: Optional[int] = None,
              detail: Optional[dict] = None) -> None:
        self.log.info("%s: %s", self._log_name, message)
        ev: dict[str, Any] = {"message": message}
        if progress is not None:
            ev["progress"] = progress
        if detail:
            ev["batch"] = detail  # job id, state, reason, occupancy / expected start (pending page)
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
                await asyncio.wait_for(self._events_changed.wait(), timeout=self.check_interval)
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
            env["JUPYTERHUB_DEFAULT_URL"] = "/tree" if opts.interface == "notebook" else "/lab"
        dirs = kernel_dirs(unix_groups(self.user.name), self.group_kernel_paths)
        if dirs:
            env["JUPYTER_PATH"] = jupyter_path(dirs, env.get("JUPYTER_PATH", ""))
        if self._runtime_seconds:
            # the launcher turns it into JOB_END_TIME (+ a file) when the job starts
            env["APPLIANCE_RUNTIME_SECONDS"] = str(int(self._runtime_seconds))
        return {k: str(v) for k, v in env.items() if v is not None}

    async def start(self):
        if self.options is None:  # e.g. a start without apply_user_options (should not happen)
            await self._apply_options(self, self.user_options or {})
        opts = self.options
        self._events = []
        self._port_event.clear()
        self._reported_port = None
        self._outcome_final = False
        self.cull_notice = None
        sched = self.registry.scheduler(opts.backend)
        watcher = self.registry.watcher(opts.backend)
        timer = self._timer = metrics.SpawnTimer(opts.backend, metrics.spawn_lane(sched, opts))
        try:
            url = await self._start_job(sched, watcher, opts, timer)
        except asyncio.CancelledError:
            # JupyterHub cancels a pending start when the user presses Stop or at start_timeout,
            # and then calls stop(), which records why. A hub shutting down cancels it too, and
            # calls nothing: the restarted hub's poll() ends that spawn (_interrupted).
            raise
        except Exception as e:
            st = watcher.jobs.get(self.job_id) if self.job_id else None
            if st is not None and st.state == HELD:
                timer.finish("held", cause="held")
            else:
                timer.finish("failed")
            await self._start_failed(e, opts.backend, st)
            raise
        timer.finish("started")
        self._started(watcher)
        return url

    async def _start_job(self, sched: Scheduler, watcher, opts: UserOptions,
                         timer: metrics.SpawnTimer) -> str:
        submitted = await self._submit(sched, opts, timer)
        job = self._job(sched, watcher)
        with watcher.hurry():
            with timer.phase("queue"):
                try:
                    host = await job.running_host(submitted)
                except Exception:
                    st = watcher.jobs.get(self.job_id)
                    timer.pending_result("held" if st is not None and st.state == HELD else "gone")
                    raise
                timer.pending_result("running")
            self.job_host = host
            await self._save()
            self._emit(f"Job {self.job_id} running on {host}; starting Jupyter", 60)
            with timer.phase("server_start"):
                await job.while_alive(self._port_event)
            port = self._reported_port
            self._emit(f"Jupyter starting on {host}:{port}", 70)
            with timer.phase("probe"):
                await job.listening(host, port, timeout=self.http_timeout)
                if self._issued is not None:
                    await self._tls.check(host, port, self._issued, self._log_name,
                                          timeout=self.check_interval * 5)
        self._emit(f"Jupyter listening on {host}:{port}", 90)
        return f"{'https' if self._issued is not None else 'http'}://{host}:{port}"

    def server_ssl_context(self):
        """For the hub's own requests to this server that carry the user's credentials (the
        idle check's kernel list): TLS that only her own server's certificate passes; None
        without internal TLS or for a server on plain HTTP (started by an earlier release)."""
        if not self.internal_tls_dir or self.server is None or self.server.proto != "https":
            return None
        host = urlparse(self.user.host).hostname
        return servertls.authority(self.internal_tls_dir).user_context(host)

    def _server_tls_env(self) -> dict[str, str]:
        """A certificate for this spawn (internal_tls_dir set), as env for the job."""
        self._issued = None
        if not self.internal_tls_dir:
            return {}
        if self._tls is None:
            self._tls = ServerTLS(self.internal_tls_dir, self.server_cert_node_names, self.log)
        host = urlparse(self.user.host).hostname if self.user.settings.get("subdomain_host") \
            else None
        if not host:
            raise SpawnError("Internal TLS needs JupyterHub's subdomain_host (an origin per user); "
                             "ask the admin.")
        self._issued = self._tls.issue(host, days=self.max_runtime_hours / 24 + 1)
        return self._tls.env(self._issued)

    def _job(self, sched: Scheduler, watcher) -> NotebookJob:
        waits = Waits(check_interval=self.check_interval, status_timeout=self.status_timeout,
                      listen_poll_interval=self.listen_poll_interval)
        return NotebookJob(self.job_id, self.backend, sched, watcher, owner=self.user.name,
                           job_dir=self.job_dir, waits=waits, emit=self._emit, log=self.log)

    async def _submit(self, sched: Scheduler, opts: UserOptions,
                      timer: metrics.SpawnTimer) -> float:
        """Submit as the user; returns the monotonic time after which any status query started
        lists the job (if it still exists)."""
        try:
            pw = pwd.getpwnam(self.user.name)
        except KeyError:
            raise SpawnError(f"User {self.user.name} has no account on this system.") from None
        submit_ccache = None
        if opts.backend in self.require_credential:
            self._emit("Forwarding your Kerberos ticket", 5)
            with timer.phase("credential"):
                submit_ccache = await self._forward_credential()
        runtime = self._runtime_seconds = sched.runtime_seconds(self.user.name, opts,
                                                                self.default_runtime_hours)
        request = submit_request(pw, self.name, uuid.uuid4().hex[:8], job_dir=self.job_dir,
                                 options=opts, port_range=self.port_range, ccache=submit_ccache,
                                 runtime_seconds=runtime)
        self.backend = opts.backend
        self.env_path = request.env_file
        self._emit(f"Submitting to {opts.backend}", 10)
        payload = helper_request(request, {**self._job_env(), **self._server_tls_env()},
                                 sched.build_submit(request))
        try:
            with timer.phase("submit"):
                answer = await run_submit_helper(
                    helper_argv(self.submit_helper_command, self.user.name), payload)
        except SubmitError as e:
            raise SpawnError(f"Submission to {opts.backend} failed: {e}") from None
        finally:
            if submit_ccache:
                try:
                    os.unlink(submit_ccache)
                except OSError:
                    pass
        t_submit = time.monotonic()
        job_id = answer["job_id"]
        if not isinstance(job_id, str) or not sched.job_id_re.match(job_id):
            # the helper runs as the user: its answer is the user's word, checked like input
            self.log.warning("%s: submit helper answered a malformed job id %r", self._log_name,
                             job_id)
            raise SpawnError(f"Submission to {opts.backend} failed: the submit helper answered "
                             f"a malformed job_id {str(job_id)[:40]!r}")
        # Whose job it is, the scheduler says: NotebookJob.own() checks every status it acts on.
        self._submitted_here = True  # this hub process follows the job (poll: _interrupted)
        self.job_id = job_id
        self.job_host = ""
        self._emit(f"Job {self.job_id} submitted", 20)
        await self._save()
        return t_submit

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

    # ---------------------------------------------------------------- poll / stop
    async def poll(self):
        if not self.job_id or not self.backend:
            return 0
        watcher = self.registry.watcher(self.backend)
        # Right after a hub restart the cache may predate us: wait for one fresh answer.
        newer = time.monotonic() if watcher.updated == 0 else None
        st = await watcher.status(self.job_id, newer_than=newer)
        if st is not None and st.owner != self.user.name:
            self.log.warning("%s: %s job %s belongs to %r: treated as gone, not removed",
                             self._log_name, self.backend, self.job_id, st.owner)
            st = None
        if not (self.job_host or self._spawn_pending or self._submitted_here
                or self._outcome_final):
            # submitted by an earlier hub process, never seen running, and no start() follows
            # it: the hub restarted during the spawn. End it with a message instead of a
            # server that never answers.
            await self._interrupted(watcher, st)
            self._remove_env_file()
            return 1
        lost = st is not None and st.state == PENDING and bool(self.job_host) \
            and not self._spawn_pending
        if st is not None and st.state not in (DONE, HELD) and not lost:
            if self._spawn_pending:
                return None
            self._follow(watcher)
            silent = await self.unreachable_too_long()
            if silent is None:
                return None
            await self._lost_unreachable(watcher, silent)
            self._remove_env_file()
            return 1
        if not self._outcome_final:
            await self._ended_by_itself(watcher, st)
        self._remove_env_file()  # stop() is not called for a server that is gone
        return 1

    def _remove_env_file(self) -> None:
        """The job's private env file (hub API token inside) if the launcher did not consume it."""
        if self.env_path:
            try:
                os.unlink(self.env_path)
            except OSError:
                pass

    def _pending_stopped(self, timer: metrics.SpawnTimer) -> None:
        timed_out = time.monotonic() - timer.started >= self.start_timeout - 1
        if timer.current == "queue":
            timer.pending_result("cancelled")
        timer.finish("timed_out" if timed_out else "cancelled")
        self._stopped_pending(timed_out)

    async def stop(self, now=False):
        timer = self._timer
        if timer is not None and timer.outcome is None:
            self._pending_stopped(timer)  # a start JupyterHub gave up on without cancelling it
        self._stopped()
        if self.job_id and self.backend:
            # the watcher (started if need be): removal needs the scheduler's word on the owner
            job = self._job(self.registry.scheduler(self.backend),
                            self.registry.watcher(self.backend))
            if await job.cancel() and not now:
                await job.gone(timeout=self.stop_timeout)
        self._remove_env_file()
        self.job_id = ""
        self.job_host = ""
