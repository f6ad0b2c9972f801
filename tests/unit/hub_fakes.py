"""Fakes for the hub's unit tests: a scheduler that follows the ``Scheduler`` interface on a
scripted cluster, the submit helper as a fake command, spawners built the way JupyterHub's
``User`` builds them (a real in-memory hub database, no running hub), and for tests against a
real ``MockHub``: a proxy on a dict and the credential bridge's socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import sys
from pathlib import Path
from typing import Callable, Optional

from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.proxy import Proxy
from jupyterhub.user import User
from traitlets import default
from traitlets.config import Config

from appliance.hub.registry import Registry
from appliance.hub.scheduler.base import DONE, RUNNING, JobStatus, Scheduler
from appliance.hub.spawner import BatchSpawner
from appliance.options import OptionsError

FAKE_HELPER = str(Path(__file__).with_name("fake_submit_helper.py"))
#: an account that exists wherever the tests run (the spawner looks the user up with pwd)
ACCOUNT = pwd.getpwuid(os.getuid()).pw_name


class FakeCluster:
    """The jobs the fake scheduler's queries see; tests move them from state to state.

    ``cancel`` removes a job (unless ``ignore_cancel``). ``on_running(job_id)`` runs once, when a
    query first shows a job running: the node launcher's port report.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.queries = 0
        self.cancelled: list[str] = []
        self.ignore_cancel = False
        self.requests: list = []  # SubmitRequests the backend built submissions from
        self.checked: list = []  # (user, options) of check_request calls
        self.refuse: Optional[OptionsError] = None  # check_request raises this
        self.fatal: dict[str, str] = {}  # pending reason -> fatal message
        self.resources: dict | Exception = {}
        self.on_running: Optional[Callable[[str], None]] = None
        self._reported: set[str] = set()
        self._queried = asyncio.Event()

    def set(self, job_id: str, state: str, host: Optional[str] = None, reason: str = "",
            owner: str = ACCOUNT, host_error: str = "") -> None:
        """The scheduler's record of a job; ``owner`` as the scheduler lists it."""
        self.jobs[job_id] = JobStatus(job_id, state, host, reason, owner, host_error=host_error)

    async def queried(self, n: int) -> None:
        """Return once ``n`` more queries were answered."""
        target = self.queries + n
        while self.queries < target:
            self._queried.clear()
            await self._queried.wait()

    def query(self) -> dict[str, JobStatus]:
        self.queries += 1
        self._queried.set()
        for job_id, status in self.jobs.items():
            if status.state == RUNNING and job_id not in self._reported and self.on_running:
                self._reported.add(job_id)
                self.on_running(job_id)
        # a finished job is listed only with a reason (as Slurm lists it for MinJobAge)
        return {job_id: st for job_id, st in self.jobs.items() if st.state != DONE or st.reason}

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        if not self.ignore_cancel:
            self.jobs.pop(job_id, None)


class FakeScheduler(Scheduler):
    """Follows the Scheduler interface (appliance/hub/scheduler/base.py) on a FakeCluster."""

    name = "fake"
    cluster: FakeCluster  # set on a per-test subclass (see scheduler_class)

    def build_submit(self, request):
        self.cluster.requests.append(request)
        return {"job_name": request.job_name, "cpus": request.options.cpus}

    async def query_all(self):
        return self.cluster.query()

    async def cancel(self, job_id):
        self.cluster.cancel(job_id)

    def fatal_reason(self, status):
        return self.cluster.fatal.get(status.reason)

    async def describe_resources(self, user):
        if isinstance(self.cluster.resources, Exception):
            raise self.cluster.resources
        return self.cluster.resources

    async def check_request(self, user, options):
        self.cluster.checked.append((user, options))
        if self.cluster.refuse is not None:
            raise self.cluster.refuse


def scheduler_class(cluster: FakeCluster, name: str = "fake") -> type:
    """A FakeScheduler subclass bound to this cluster: every instance (a restarted hub's too)
    sees the same jobs."""
    return type("FakeScheduler", (FakeScheduler,), {"cluster": cluster, "name": name})


def helper_command(record: Path, answer: dict, exit_code: int = 0, stderr: str = "") -> list[str]:
    """The submit helper replaced by a fake command that records its request and answers."""
    return [sys.executable, FAKE_HELPER, str(record), json.dumps(answer), str(exit_code), stderr,
            "{username}"]


def hub_config(**spawner_settings) -> Config:
    c = Config()
    c.FakeScheduler.poll_interval = 5.0
    c.FakeScheduler.fast_poll_interval = 0.01
    for key, value in spawner_settings.items():
        c.BatchSpawner[key] = value
    return c


def new_db():
    return orm.new_session_factory("sqlite:///:memory:")()


def new_spawner(db, registry: Registry, *, name: str = ACCOUNT, config: Optional[Config] = None,
                **traits) -> BatchSpawner:
    """A BatchSpawner for user ``name``, made by JupyterHub's own ``User._new_spawner``."""
    orm_user = db.query(orm.User).filter(orm.User.name == name).first()
    if orm_user is None:
        orm_user = orm.User(name=name)
        db.add(orm_user)
        db.commit()
    user = User(orm_user, {"config": config or hub_config()}, db=db)
    traits.setdefault("hub", Hub())
    traits.setdefault("api_token", "hub-api-token-of-this-server")
    return user._new_spawner("", spawner_class=BatchSpawner, registry=registry, **traits)


class DictProxy(Proxy):
    """JupyterHub's Proxy interface on a dict, so the hub needs no configurable-http-proxy."""

    @default("should_start")
    def _no_process(self):
        return False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.routes: dict[str, dict] = {}

    async def add_route(self, routespec, target, data):
        self.routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec):
        self.routes.pop(routespec, None)

    async def get_all_routes(self):
        return dict(self.routes)


class FakeBridge:
    """The credential bridge's socket: one JSON request line in, one JSON answer line out."""

    def __init__(self, path: str):
        self.path = path
        self.requests: list[dict] = []
        self.states: dict[str, dict] = {}

    async def start(self):
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader, writer):
        request = json.loads(await reader.readline())
        self.requests.append(request)
        answer = {"ok": True, "state": self.states.get(request.get("user"))}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def mock_hub(c: Config, bridge: "FakeBridge"):
    """A started MockHub with config ``c`` and the fake credential bridge, with its own
    auth-state key; stopped and cleared again at the end."""
    from jupyterhub import crypto
    from jupyterhub.tests.mocking import MockHub

    keeper = crypto.CryptKeeper.instance()
    keys_before = keeper.keys
    keeper.keys = [os.urandom(32)]
    app = MockHub.instance(config=c)
    try:
        await app.initialize([])
        await app.start()
        app.bridge = bridge
        yield app
    finally:
        app.log.handlers = []
        MockHub.clear_instance()
        await app.stop()
        bridge.server.close()
        keeper.keys = keys_before
