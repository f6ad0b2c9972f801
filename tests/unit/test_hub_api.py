"""The appliance's hub API handlers in a real JupyterHub (``jupyterhub.tests.mocking.MockHub``)
with our authenticator and spawner, talked to over HTTP with real tokens
(``jupyterhub.tests.utils.api_request``). Only the proxy (a dict) and the credential bridge (a
unix socket speaking its JSON-lines protocol) are stand-ins; no server is spawned."""

from __future__ import annotations

import json
import os
import time

import pytest
import pytest_asyncio
from jupyterhub.tests.utils import add_user, api_request
from traitlets.config import Config

from appliance.hub.authenticator import KerberosPAMAuthenticator
from appliance.hub.handlers import default_handlers
from appliance.hub.spawner import BatchSpawner
from tests.unit.hub_fakes import DictProxy, FakeBridge, mock_hub

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]
SERVICE_TOKEN = "token-of-a-hub-service-not-a-user"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    cwd = os.getcwd()
    os.chdir(tmp)  # the hub writes its cookie secret and database next to it
    bridge = FakeBridge(str(tmp / "bridge.sock"))
    await bridge.start()
    c = Config()
    c.JupyterHub.proxy_class = DictProxy
    c.JupyterHub.authenticator_class = KerberosPAMAuthenticator
    c.JupyterHub.spawner_class = BatchSpawner
    c.JupyterHub.extra_handlers = list(default_handlers)
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.services = [{"name": "monitor", "api_token": SERVICE_TOKEN}]
    c.CredentialBridge.socket = bridge.path
    c.BatchSpawner.port_range = (40000, 40100)
    c.BatchSpawner.max_cpus = 6
    async with mock_hub(c, bridge) as app:
        yield app
    os.chdir(cwd)


_n = 0


def new_user(hub, *servers: str):
    """A fresh user (with these named servers besides the default one)."""
    global _n
    _n += 1
    user = add_user(hub.db, hub, name=f"user{_n}")
    for name in servers:
        user._new_orm_spawner(name, name)
    return user


def starting(user, name: str = ""):
    """The user's server ``name`` as JupyterHub has it while it starts: pending, with its token."""
    spawner = user.spawners[name]
    spawner.api_token = user.new_api_token(note=f"server {name!r}")
    spawner._spawn_pending = True
    return spawner


async def report(hub, token, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return await api_request(hub, "batch", "port", method="post", bypass_proxy=True, data=data,
                             headers={"Authorization": f"token {token}"} if token else {},
                             noauth=token is None)


# ---------------------------------------------------------------- POST /hub/api/batch/port

async def test_port_report_with_the_servers_own_token(hub):
    user = new_user(hub)
    sp = starting(user)
    r = await report(hub, sp.api_token, {"port": 40042})
    assert r.status_code == 204, r.text
    assert sp._reported_port == 40042 and sp._port_event.is_set()


async def test_port_report_lands_only_in_the_server_whose_token_it_is(hub):
    user = new_user(hub, "second")
    default_server, second = starting(user, ""), starting(user, "second")
    r = await report(hub, second.api_token, {"port": 40050})
    assert r.status_code == 204, r.text
    assert second._reported_port == 40050 and default_server._reported_port is None


async def test_another_users_server_token_cannot_report_for_this_user(hub):
    alice, bob = new_user(hub), new_user(hub)
    alice_sp, bob_sp = starting(alice), starting(bob)
    r = await report(hub, bob_sp.api_token, {"port": 40001})
    assert r.status_code == 204
    assert bob_sp._reported_port == 40001 and alice_sp._reported_port is None


async def test_a_users_own_non_server_token_is_refused(hub):
    user = new_user(hub)
    sp = starting(user)
    r = await report(hub, user.new_api_token(note="personal"), {"port": 40001})
    assert r.status_code == 403
    assert "does not belong to a starting server" in r.json()["message"]
    assert sp._reported_port is None


async def test_a_service_token_is_refused(hub):
    r = await report(hub, SERVICE_TOKEN, {"port": 40001})
    assert r.status_code == 403 and "not a server token" in r.json()["message"]


async def test_no_token_is_refused(hub):
    r = await report(hub, None, {"port": 40001})
    assert r.status_code == 403


async def test_a_server_that_is_not_starting_is_refused(hub):
    user = new_user(hub)
    sp = starting(user)
    sp._spawn_pending = False
    r = await report(hub, sp.api_token, {"port": 40001})
    assert r.status_code == 409 and "not starting" in r.json()["message"]
    assert sp._reported_port is None


@pytest.mark.parametrize("port", [39999, 40101, 0, 65536, -1])
async def test_port_out_of_range_is_refused(hub, port):
    user = new_user(hub)
    sp = starting(user)
    r = await report(hub, sp.api_token, {"port": port})
    assert r.status_code == 400 and r.json()["message"] == "port must be in 40000-40100"
    assert sp._reported_port is None


@pytest.mark.parametrize("body,message", [
    (b"port=40001", "body must be JSON"),
    (b"{", "body must be JSON"),
    ([40001], "port must be an integer"),
    ({}, "port must be an integer"),
    ({"port": "40001"}, "port must be an integer"),
    ({"port": 40001, "host": "10.1.2.3"}, "only 'port' may be reported, not host"),
    ({"port": 40001.0}, "port must be an integer"),
    ({"port": True}, "port must be an integer"),
    ({"port": None}, "port must be an integer"),
])
async def test_malformed_body_is_refused(hub, body, message):
    user = new_user(hub)
    sp = starting(user)
    r = await report(hub, sp.api_token, body)
    assert r.status_code == 400 and r.json()["message"] == message
    assert sp._reported_port is None


# ---------------------------------------------------------------- GET /hub/api/batch/options-schema

async def test_options_schema_follows_the_hubs_settings(hub):
    user = new_user(hub)
    r = await api_request(hub, "batch", "options-schema", bypass_proxy=True,
                          headers={"Authorization": f"token {user.new_api_token()}"})
    assert r.status_code == 200, r.text
    schema = r.json()
    assert schema["properties"]["cpus"]["maximum"] == 6
    assert schema["properties"]["backend"]["enum"] == ["htcondor", "slurm"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("path", ["options-schema", "credential"])
async def test_get_without_login_is_403_not_a_redirect(hub, path):
    r = await api_request(hub, "batch", path, bypass_proxy=True, noauth=True,
                          allow_redirects=False)
    assert r.status_code == 403 and r.json()["message"] == "a token or login is required"


# ---------------------------------------------------------------- GET /hub/api/batch/credential

async def credential(hub, user, query=""):
    return await api_request(hub, "batch", "credential" + query, bypass_proxy=True,
                             headers={"Authorization": f"token {user.new_api_token()}"})


async def test_credential_is_the_current_users_own(hub):
    alice, bob = new_user(hub), new_user(hub)
    now = time.time()  # input data only: the handler compares with its own clock
    hub.bridge.states[alice.name] = {
        "state": "active", "principal": f"{alice.name}@MINI.TEST", "valid_until": now + 3600,
        "renew_until": now + 7 * 86400, "last_forwarded": now - 60, "error": None}
    hub.bridge.states[bob.name] = {"state": "active", "principal": "bob-secret@MINI.TEST",
                                   "valid_until": now + 3600, "renew_until": now + 7 * 86400}
    r = await credential(hub, alice, f"?user={bob.name}")  # a parameter changes nothing
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["user"] == alice.name and view["principal"] == f"{alice.name}@MINI.TEST"
    assert view["usable"] is True and view["warning"] is None
    assert "bob-secret" not in r.text and "ccache" not in r.text
    assert hub.bridge.requests[-1] == {"op": "state", "user": alice.name}


async def test_credential_shows_the_login_problem_from_auth_state(hub):
    user = new_user(hub)
    await user.save_auth_state({"ccache": None, "credential": {
        "ok": False, "error": "not_renewable", "message": "ticket is not renewable"}})
    r = await credential(hub, user)
    view = r.json()
    assert view["state"] == "none" and view["usable"] is False
    assert "ticket is not renewable" in view["warning"] and "log in again" in view["warning"]


async def test_credential_warning_uses_the_authenticators_setting(hub):
    user = new_user(hub)
    now = time.time()
    hub.bridge.states[user.name] = {"state": "active", "principal": "p@MINI.TEST",
                                    "valid_until": now + 3600, "renew_until": now + 2 * 86400}
    assert (await credential(hub, user)).json()["warning"] is None  # 2 days > 1 day default
    hub.authenticator.credential_warn_seconds = 3 * 86400
    try:
        assert "renewed only until" in (await credential(hub, user)).json()["warning"]
    finally:
        hub.authenticator.credential_warn_seconds = 86400


async def test_credential_when_the_bridge_is_down(hub, tmp_path):
    user = new_user(hub)
    hub.authenticator.config.CredentialBridge.socket = str(tmp_path / "nobody-listens.sock")
    try:
        r = await credential(hub, user)
    finally:
        hub.authenticator.config.CredentialBridge.socket = hub.bridge.path
    assert r.status_code == 200
    view = r.json()
    assert "cannot talk to" in view["bridge_error"]
    assert view["warning"].startswith("The credential service is not reachable")


async def test_credential_is_only_for_users(hub):
    r = await api_request(hub, "batch", "credential", bypass_proxy=True,
                          headers={"Authorization": f"token {SERVICE_TOKEN}"})
    assert r.status_code == 403 and "only users" in r.json()["message"]


# ---------------------------------------------------------------- logout: credentials end

async def hub_login(hub, name):
    """Log ``name`` in through the hub's own login form (PAM replaced); the session."""
    from jupyterhub.tests.utils import AsyncSession
    from tornado.httputil import url_concat

    hub.authenticator.pam_login = lambda service, user, password: (True, None, "")
    s = AsyncSession()
    r = await s.get(hub.hub.url + "login")
    r.raise_for_status()
    r = await s.post(url_concat(hub.hub.url + "login", {"_xsrf": r.cookies["_xsrf"]}),
                     data={"username": name, "password": "pw"}, allow_redirects=False)
    assert r.status_code == 302, r.text
    return s


def ends(hub, name):
    return [r for r in hub.bridge.requests if r.get("op") == "end" and r.get("user") == name]


async def test_logout_without_a_server_ends_the_credential(hub):
    user = new_user(hub)
    s = await hub_login(hub, user.name)
    await user.save_auth_state({"ccache": "/run/appliance/ccache/krb5cc_1_x", "principal": "p"})
    r = await s.get(hub.hub.url + "logout", allow_redirects=False)
    assert r.status_code in (200, 302), r.status_code
    assert len(ends(hub, user.name)) == 1
    state = await user.get_auth_state()
    assert state["logged_out"] is True and state["ccache"] is None


async def test_logout_with_a_server_keeps_it_until_the_last_server_stops(hub):
    user = new_user(hub, "second")
    s = await hub_login(hub, user.name)
    first, second = starting(user), starting(user, "second")
    await s.get(hub.hub.url + "logout", allow_redirects=False)
    assert ends(hub, user.name) == []                      # kept for the servers
    assert (await user.get_auth_state())["logged_out"] is True
    second._spawn_pending = False
    await hub.authenticator.post_spawn_stop(user, second)  # the first server still runs
    assert ends(hub, user.name) == []
    first._spawn_pending = False
    await hub.authenticator.post_spawn_stop(user, first)   # the last one stopped
    assert len(ends(hub, user.name)) == 1
    assert (await user.get_auth_state())["ccache"] is None


async def test_a_server_stopping_for_a_logged_in_user_keeps_the_credential(hub):
    user = new_user(hub)
    await hub_login(hub, user.name)
    sp = starting(user)
    sp._spawn_pending = False
    await hub.authenticator.post_spawn_stop(user, sp)
    assert ends(hub, user.name) == []


async def test_a_new_login_after_logout_keeps_the_credential_when_the_server_stops(hub):
    user = new_user(hub)
    s = await hub_login(hub, user.name)
    sp = starting(user)
    await s.get(hub.hub.url + "logout", allow_redirects=False)
    await hub_login(hub, user.name)                        # a fresh login: a fresh auth_state
    sp._spawn_pending = False
    await hub.authenticator.post_spawn_stop(user, sp)
    assert ends(hub, user.name) == []


# ---------------------------------------------------------------- POST /hub/login

async def _login_post(hub, username: str, password: str):
    """The login form as a browser sends it (its _xsrf cookie and field)."""
    import re as _re

    from jupyterhub.tests.utils import async_requests

    url = hub.hub.url + "login"  # straight to the hub (the proxy here is a dict)
    page = await async_requests.get(url)
    xsrf = _re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    return await async_requests.post(url, data={"username": username, "password": password,
                                                "_xsrf": xsrf},
                                     cookies=page.cookies, allow_redirects=False)


@pytest.mark.parametrize("code,status,words", [
    (9, 503, "Kerberos login service (KDC) does not answer"),   # PAM_AUTHINFO_UNAVAIL
    (7, 403, "Invalid username or password"),                   # PAM_AUTH_ERR: wrong password
    (10, 403, "Invalid username or password"),                  # PAM_USER_UNKNOWN
])
async def test_login_page_tells_a_kdc_outage_from_a_wrong_password(hub, code, status, words):
    auth = hub.authenticator
    saved = auth.pam_login, auth.failure_floor_seconds
    auth.pam_login = lambda service, user, password: (False, None, "pam says no", code)
    auth.failure_floor_seconds = 0
    try:
        r = await _login_post(hub, "alice", "whatever")
    finally:
        auth.pam_login, auth.failure_floor_seconds = saved
    assert r.status_code == status
    assert 'class="login_error"' in r.text and words in r.text, r.text[-2000:]
    assert "whatever" not in r.text


async def test_a_database_outage_is_a_503_that_says_so_not_a_logout(hub, monkeypatch):
    """The user lookup fails on the database (PostgreSQL stopped): JupyterHub alone would go on
    anonymously (403 "Missing or invalid credentials"); the appliance answers 503 and why."""
    from jupyterhub import orm
    from sqlalchemy.exc import OperationalError

    from appliance.hub import database

    database.explain_unavailable_database()
    user = new_user(hub)
    token = user.new_api_token()

    def down(*a, **kw):
        raise OperationalError("SELECT api_tokens", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(orm.APIToken, "find", classmethod(down))
    r = await api_request(hub, "users", user.name, bypass_proxy=True,
                          headers={"Authorization": f"token {token}"})
    assert r.status_code == 503, r.text
    assert r.json()["message"] == database.UNAVAILABLE
    monkeypatch.undo()
    r = await api_request(hub, "users", user.name, bypass_proxy=True,
                          headers={"Authorization": f"token {token}"})
    assert r.status_code == 200  # back: nothing else changed
