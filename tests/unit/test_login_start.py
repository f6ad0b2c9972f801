"""Start on login (appliance/hub/login_start.py, ``BatchSpawner.start_on_login``).

The decision is pure (:func:`decide`); the spawner keeps the mark of a start on login exactly as
long as that server; and in a real JupyterHub (``MockHub``) with our authenticator and a
BatchSpawner whose ``start`` waits for the test (a gate per user), a login through the form
starts the last options in the background (the redirect comes back while the start still
waits), with the login's ticket cache handed to the spawn, and "Choose other options" stops that
server (starting or running) and opens the form. The proxy is a dict, the credential bridge a
socket fake (tests/unit/hub_fakes.py); a tiny HTTP server on loopback answers as the notebook.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest
import pytest_asyncio
import requests
from jupyterhub.tests.utils import AsyncSession, add_user
from jupyterhub.utils import random_port, url_path_join
from tornado.httpserver import HTTPServer
from tornado.httputil import url_concat
from tornado.web import Application
from traitlets.config import Config

import appliance.hub
from appliance.hub import login_start
from appliance.hub.authenticator import KerberosPAMAuthenticator
from appliance.hub.login_start import decide, login_start_handlers
from appliance.hub.outcomes import Outcome
from appliance.hub.registry import Registry
from appliance.hub.spawner import BatchSpawner
from appliance.options import OptionsError
from tests.unit.hub_fakes import (DictProxy, mock_hub, FakeBridge, FakeCluster, hub_config, new_db,
                                  new_spawner, scheduler_class)

pytestmark = pytest.mark.timeout(60)
in_hub = pytest.mark.asyncio(loop_scope="module")
TEMPLATES = os.path.join(os.path.dirname(appliance.hub.__file__), "templates")
CCACHE = "/run/appliance/ccache/krb5cc_2001_test"  # only a name: nothing reads the file here

# ---------------------------------------------------------------- the decision (pure)

GO = dict(enabled=True, has_options=True, server_active=False, last_start_failed=False,
          needs_credential=True, credential_ok=True, spawns_pending=0, spawn_limit=0,
          servers_active=0, server_limit=0)


def test_a_user_with_valid_last_options_and_no_server_is_started():
    assert decide(**GO) == login_start.Decision(True, "")


@pytest.mark.parametrize("change,words", [
    ({"enabled": False}, "start_on_login is off"),
    ({"has_options": False}, "no valid last options"),
    ({"server_active": True}, "already active or pending"),
    ({"last_start_failed": True}, "last start did not work"),
    ({"credential_ok": False}, "Kerberos ticket was not stored"),
    ({"spawn_limit": 3, "spawns_pending": 3}, "concurrent_spawn_limit reached (3 pending)"),
    ({"spawn_limit": 3, "spawns_pending": 7}, "concurrent_spawn_limit reached"),
    ({"server_limit": 10, "servers_active": 10}, "active_server_limit reached (10 active)"),
])
def test_no_start_and_why(change, words):
    d = decide(**{**GO, **change})
    assert d.start is False and words in d.reason


@pytest.mark.parametrize("change", [
    {"needs_credential": False, "credential_ok": False},   # e.g. Slurm: no ticket needed
    {"spawn_limit": 3, "spawns_pending": 2},               # below the limits
    {"server_limit": 10, "servers_active": 9},
    {"spawn_limit": 0, "spawns_pending": 500},             # 0 = no limit
])
def test_starts_within_the_limits_and_without_a_needed_ticket(change):
    assert decide(**{**GO, **change}).start is True


def test_a_failed_or_refused_last_start_counts_as_failed():
    assert {"refused", "failed", "held", "timed_out"} == login_start.START_FAILED
    assert not {"stopped", "culled", "time_limit", "ended"} & login_start.START_FAILED


# ---------------------------------------------------------------- the mark in the spawner


def a_spawner(db=None, **traits) -> BatchSpawner:
    cluster = FakeCluster()
    classes = {"fake": scheduler_class(cluster)}
    config = hub_config(scheduler_classes=classes, default_backend="fake")
    return new_spawner(db or new_db(), Registry(classes, config=config), config=config, **traits)


def test_the_mark_is_kept_in_the_state_and_survives_a_hub_restart():
    db = new_db()
    sp = a_spawner(db)
    assert sp.started_on_login is False and "started_on_login" not in sp.get_state()
    sp.started_on_login = True
    sp.orm_spawner.state = sp.get_state()
    db.commit()
    assert a_spawner(db).started_on_login is True  # a new hub process reads it back


def test_the_mark_lasts_through_the_spawns_start_and_ends_with_its_server():
    sp = a_spawner()
    sp.started_on_login = True
    sp._spawn_pending = True   # JupyterHub's User.spawn clears the state with the spawn pending
    sp.clear_state()
    assert sp.started_on_login is True
    sp._spawn_pending = False  # User.stop clears it with nothing pending
    sp.clear_state()
    assert sp.started_on_login is False and "started_on_login" not in sp.get_state()


def test_the_home_page_view_only_while_that_server_is_active():
    sp = a_spawner()
    sp.last_options = {"backend": "fake", "cpus": 2}
    sp._spawn_pending = True
    assert sp.login_start_view() is None                    # started by the user, not a login
    sp.started_on_login = True
    assert sp.login_start_view() == {"summary": "fake, 2 CPUs, 2 GiB, JupyterLab",
                                     "ready": False}
    sp._spawn_pending = False
    assert sp.login_start_view() is None                    # not active any more


# ---------------------------------------------------------------- in a real hub

GATES: dict[str, asyncio.Event] = {}    # the test lets a user's start return
STARTED: dict[str, asyncio.Event] = {}  # set when a user's start() runs
STARTS: list[dict] = []
STOPS: list[str] = []
CLUSTER = FakeCluster()
NOTEBOOK: dict[str, str] = {}


def event(table: dict, name: str) -> asyncio.Event:
    return table.setdefault(name, asyncio.Event())


class GatedSpawner(BatchSpawner):
    """BatchSpawner up to ``start()`` (options validated and checked by the backend, state,
    the mark); ``start()`` records what it got and waits for the test's gate, then a real HTTP
    server on loopback answers as the notebook."""

    async def start(self):
        STARTS.append({"user": self.user.name, "options": dict(self.user_options or {}),
                       "ccache": self.ccache, "marked": self.started_on_login})
        event(STARTED, self.user.name).set()
        await event(GATES, self.user.name).wait()
        self._running = True
        return NOTEBOOK["url"]

    async def poll(self):
        return None if getattr(self, "_running", False) else 0

    async def stop(self, now=False):
        STOPS.append(self.user.name)
        self._running = False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    cwd = os.getcwd()
    os.chdir(tmp)  # the hub writes its cookie secret and database next to it
    bridge = FakeBridge(str(tmp / "bridge.sock"))
    await bridge.start()
    port = random_port()
    notebook = HTTPServer(Application())  # answers 404 to everything: "up" for JupyterHub
    notebook.listen(port, "127.0.0.1")
    NOTEBOOK["url"] = f"http://127.0.0.1:{port}"
    c = Config()
    c.JupyterHub.proxy_class = DictProxy
    c.JupyterHub.authenticator_class = KerberosPAMAuthenticator
    c.JupyterHub.spawner_class = GatedSpawner
    c.JupyterHub.extra_handlers = list(login_start_handlers)
    c.JupyterHub.template_paths = [TEMPLATES]
    c.JupyterHub.template_vars = {"appliance": True}
    # A spawn request waits this long for the server: a login that awaited its spawn would not
    # come back within the tests' 10 s.
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 3600}
    c.CredentialBridge.socket = bridge.path
    c.BatchSpawner.scheduler_classes = {"fake": scheduler_class(CLUSTER)}
    c.BatchSpawner.default_backend = "fake"
    c.BatchSpawner.require_credential = ["fake"]
    c.BatchSpawner.max_cpus = 6
    c.BatchSpawner.start_on_login = True
    async with mock_hub(c, bridge) as app:
        yield app
    notebook.stop()
    os.chdir(cwd)


@pytest.fixture(autouse=True)
def hub_policy_reset():
    CLUSTER.refuse = None
    yield
    CLUSTER.refuse = None


_n = 0


def new_user(hub, last_options: dict | None = None):
    """A fresh user; ``last_options`` as a form spawn of theirs would have left them."""
    global _n
    _n += 1
    user = add_user(hub.db, hub, name=f"login{_n}")
    user.spawner.last_options = last_options
    return user


async def login(hub, user, ccache: str | None = CCACHE) -> tuple[AsyncSession, str]:
    """Log in through the hub's own login form (PAM replaced; ``ccache`` the login's ticket
    cache, None: PAM made none); the session and where the login redirects to. Fails if the
    login does not answer within 10 s."""
    made = f"FILE:{ccache}" if ccache else None
    hub.authenticator.pam_login = lambda service, name, password: (True, made, "")
    hub.bridge.states[user.name] = {"state": "active", "principal": f"{user.name}@MINI.TEST"}
    s = AsyncSession()
    r = await s.get(hub.hub.url + "login")
    r.raise_for_status()
    r = await asyncio.wait_for(
        s.post(url_concat(hub.hub.url + "login", {"_xsrf": r.cookies["_xsrf"]}),
               data={"username": user.name, "password": "pw"}, allow_redirects=False), 10)
    assert r.status_code == 302, r.text
    return s, r.headers["Location"]


def hub_url(hub, *parts: str) -> str:
    return url_path_join(hub.hub.base_url, *parts)


def starts_of(user) -> list[dict]:
    return [s for s in STARTS if s["user"] == user.name]


async def home(hub, s) -> str:
    r = await s.get(hub.hub.url + "home")
    assert r.status_code == 200, r.status_code
    return r.text


def login_start_form(html: str) -> str:
    """The XSRF token of the home page's "Choose other options" form."""
    m = re.search(r'id="login-start".*?name="_xsrf" value="([^"]+)"', html, re.S)
    assert m, "no 'Choose other options' form on the home page"
    return m.group(1)


async def other_options(hub, s, xsrf: str | None):
    data = {"_xsrf": xsrf} if xsrf is not None else {}
    return await asyncio.wait_for(s.post(hub.hub.url + "batch/other-options", data=data,
                                         allow_redirects=False), 20)


async def cleanup(user) -> None:
    """Whatever server the test left: its start cancelled, then stopped (as the hub would)."""
    sp = user.spawner
    if sp.pending == "spawn" and sp._spawn_future is not None:
        sp._spawn_future.cancel()
        await asyncio.wait([sp._spawn_future], timeout=10)
    if sp.active and not sp.pending:
        await user.stop("")
    assert not sp.active


async def background_spawns_done() -> None:
    if login_start.in_flight:
        await asyncio.wait_for(asyncio.gather(*list(login_start.in_flight),
                                              return_exceptions=True), 10)


@in_hub
async def test_login_starts_the_last_options_in_the_background(hub):
    user = new_user(hub, {"backend": "fake", "cpus": 2})
    s, location = await login(hub, user)   # back within 10 s: the spawn is not awaited
    assert location == hub_url(hub, "home")
    await asyncio.wait_for(event(STARTED, user.name).wait(), 10)
    sp = user.spawner
    assert sp.pending == "spawn"           # still waiting at the gate: the login did not wait
    [start] = starts_of(user)
    # the login's options, its ticket cache (handed over by pre_spawn_start), the mark
    assert start == {"user": user.name, "options": {"backend": "fake", "cpus": 2},
                     "ccache": CCACHE, "marked": True}
    assert CLUSTER.checked[-1][0] == user.name and CLUSTER.checked[-1][1].cpus == 2
    assert sp.orm_spawner.user_options == {"backend": "fake", "cpus": 2}
    html = await home(hub, s)
    assert ("Your server is starting with your last options: fake, 2 CPUs, 2 GiB, JupyterLab"
            in html)
    assert re.search(r'<button type="submit"[^>]*id="login-start-other"[^>]*>Choose other '
                     r'options</button>', html)
    assert 'id="start-again"' not in html  # no "Start again" while a server is active
    await cleanup(user)


@in_hub
async def test_choose_other_options_stops_the_starting_server_and_opens_the_form(hub):
    user = new_user(hub, {"backend": "fake", "cpus": 2})
    s, _ = await login(hub, user)
    await asyncio.wait_for(event(STARTED, user.name).wait(), 10)
    xsrf = login_start_form(await home(hub, s))
    r = await other_options(hub, s, None)   # a cross-site POST has no token
    assert r.status_code == 403
    assert user.spawner.pending == "spawn"
    r = await other_options(hub, s, xsrf)
    assert r.status_code == 302 and r.headers["Location"] == hub_url(hub, "spawn")
    sp = user.spawner
    assert not sp.active and sp.started_on_login is False
    assert "started_on_login" not in sp.orm_spawner.state
    r = await s.get(hub.hub.url + "spawn", allow_redirects=False)
    assert r.status_code == 200                                  # the form, not a redirect
    assert re.search(r'name="cpus"[^>]*value="2"', r.text)       # opened with the last options
    assert 'id="login-start"' not in await home(hub, s)
    await background_spawns_done()


@in_hub
async def test_choose_other_options_stops_the_running_server(hub):
    user = new_user(hub, {"backend": "fake", "cpus": 3})
    s, _ = await login(hub, user)
    await asyncio.wait_for(event(STARTED, user.name).wait(), 10)
    sp = user.spawner
    spawn = sp._spawn_future
    event(GATES, user.name).set()
    await asyncio.wait_for(spawn, 10)
    assert sp.ready and sp.started_on_login is True
    assert sp.orm_spawner.state.get("started_on_login") is True  # saved with the server
    html = await home(hub, s)
    assert "Your server is running with your last options: fake, 3 CPUs" in html
    r = await other_options(hub, s, login_start_form(html))
    assert r.status_code == 302 and r.headers["Location"] == hub_url(hub, "spawn")
    assert STOPS.count(user.name) == 1 and not sp.active and sp.started_on_login is False
    await background_spawns_done()


@in_hub
async def test_a_user_who_never_had_a_server_is_not_affected(hub):
    user = new_user(hub, None)
    s, location = await login(hub, user)
    assert location == hub_url(hub, "spawn")   # JupyterHub's own default: the spawn page
    assert not user.spawner.active and starts_of(user) == []
    assert 'id="login-start"' not in await home(hub, s)


@in_hub
async def test_last_options_the_bounds_no_longer_allow_start_nothing(hub):
    user = new_user(hub, {"backend": "fake", "cpus": 99})  # max_cpus is 6
    _, location = await login(hub, user)
    assert location == hub_url(hub, "spawn")
    assert not user.spawner.active and starts_of(user) == []


@in_hub
async def test_the_setting_off_starts_nothing(hub):
    user = new_user(hub, {"backend": "fake"})
    user.spawner.start_on_login = False
    _, location = await login(hub, user)
    assert location == hub_url(hub, "spawn")
    assert not user.spawner.active and starts_of(user) == []


@in_hub
async def test_a_server_already_starting_gets_no_second_spawn(hub):
    user = new_user(hub, {"backend": "fake"})
    await login(hub, user)
    await asyncio.wait_for(event(STARTED, user.name).wait(), 10)
    _, location = await login(hub, user)   # a second login, e.g. another browser
    assert location == user.url             # JupyterHub's default for an active server
    assert len(starts_of(user)) == 1
    await cleanup(user)
    await background_spawns_done()


@in_hub
async def test_a_login_whose_ticket_was_not_stored_starts_nothing(hub):
    user = new_user(hub, {"backend": "fake"})     # "fake" is in require_credential
    _, location = await login(hub, user, ccache=None)  # PAM made no FILE ticket cache
    assert location == hub_url(hub, "spawn")
    assert not user.spawner.active and starts_of(user) == []
    assert (await user.get_auth_state())["credential"]["ok"] is False


@in_hub
async def test_after_a_failed_last_start_nothing_starts(hub):
    user = new_user(hub, {"backend": "fake"})
    user.spawner.last_outcome = Outcome("held", "held: out of memory", time.time())
    _, location = await login(hub, user)
    assert location == hub_url(hub, "spawn")
    assert not user.spawner.active and starts_of(user) == []


@in_hub
async def test_the_concurrent_spawn_limit_is_respected(hub):
    first, second = new_user(hub, {"backend": "fake"}), new_user(hub, {"backend": "fake"})
    hub.tornado_settings["concurrent_spawn_limit"] = 1
    try:
        await login(hub, first)
        await asyncio.wait_for(event(STARTED, first.name).wait(), 10)  # one spawn pending
        _, location = await login(hub, second)
        assert location == hub_url(hub, "spawn")   # skipped, the login itself works
        assert not second.spawner.active and starts_of(second) == []
    finally:
        hub.tornado_settings.pop("concurrent_spawn_limit", None)
        await cleanup(first)
        await background_spawns_done()


@in_hub
async def test_a_start_the_backend_refuses_ends_with_its_mark(hub):
    user = new_user(hub, {"backend": "fake", "cpus": 2})
    CLUSTER.refuse = OptionsError("cpus", "is more than this user may use")
    _, location = await login(hub, user)
    assert location == hub_url(hub, "home")
    await background_spawns_done()
    sp = user.spawner
    assert not sp.active and sp.started_on_login is False and starts_of(user) == []
    assert sp.last_outcome.kind == "refused" and "cpus" in sp.last_outcome.message


@in_hub
async def test_choose_other_options_never_stops_a_server_the_user_started(hub):
    user = new_user(hub, {"backend": "fake"})
    token = user.new_api_token()
    # her own spawn request (REST API), in a thread of its own: it answers only once the server
    # is up (slow_spawn_timeout), and the sessions' requests share one thread
    request = asyncio.ensure_future(asyncio.to_thread(
        requests.post, hub.hub.url + f"api/users/{user.name}/server",
        data=json.dumps({"backend": "fake", "cpus": 4}),
        headers={"Authorization": f"token {token}"}, timeout=30))
    await asyncio.wait_for(event(STARTED, user.name).wait(), 10)
    s, _ = await login(hub, user)
    html = await home(hub, s)
    assert 'id="login-start"' not in html          # not started by a login: no offer
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', html) or re.search(
        r'"xsrf_token":\s*"([^"]+)"', html)
    r = await other_options(hub, s, xsrf.group(1) if xsrf else s.cookies.get("_xsrf"))
    assert r.status_code == 302 and r.headers["Location"] == hub_url(hub, "spawn")
    assert user.spawner.pending == "spawn" and [st["marked"] for st in starts_of(user)] == [False]
    event(GATES, user.name).set()
    assert (await asyncio.wait_for(request, 10)).status_code == 201  # her server came up
    await cleanup(user)
