"""KerberosPAMAuthenticator's logic with PAM, the clock and the bridge hand-over replaced by fakes."""

from __future__ import annotations

import os
import pwd

import pytest
from traitlets import TraitError
from traitlets.config import Config

from appliance.hub.authenticator import KerberosPAMAuthenticator, ccache_file

ME = pwd.getpwuid(os.getuid()).pw_name


class Clock:
    """A monotonic clock that only moves when PAM "works" or the authenticator sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakePAM:
    def __init__(self, clock: Clock, result=(True, "FILE:/run/cc/krb5cc_2001_x", ""), takes=0.2):
        self.clock, self.result, self.takes = clock, result, takes
        self.calls: list[tuple] = []

    def __call__(self, service, username, password):
        self.calls.append((service, username, password))
        self.clock.now += self.takes
        return self.result


def authenticator(pam_result=(True, "FILE:/run/cc/krb5cc_2001_x", ""), takes=0.2,
                  handed=None, **settings):
    c = Config()
    for key, value in settings.items():
        c.KerberosPAMAuthenticator[key] = value
    auth = KerberosPAMAuthenticator(config=c)
    clock = Clock()
    auth.monotonic, auth.sleep = clock.monotonic, clock.sleep
    auth.pam_login = FakePAM(clock, pam_result, takes)
    auth.handed = []

    async def hand_over(username, path):
        auth.handed.append((username, path))
        return dict(handed or {"ok": True, "state": "active", "principal": f"{username}@MINI.TEST",
                               "error": None, "message": None, "seconds": 0.01})

    auth.hand_over = hand_over
    return auth, clock


@pytest.mark.asyncio
async def test_login_hands_the_ticket_cache_over_into_auth_state():
    auth, clock = authenticator()
    out = await auth.authenticate(None, {"username": "alice", "password": "alice-pass-1"})
    assert auth.pam_login.calls == [("jupyterhub", "alice", "alice-pass-1")]
    assert auth.handed == [("alice", "/run/cc/krb5cc_2001_x")]
    assert out["name"] == "alice"
    state = out["auth_state"]
    assert state["ccache"] == "/run/cc/krb5cc_2001_x" and state["principal"] == "alice@MINI.TEST"
    assert state["credential"]["ok"] is True and isinstance(state["login_time"], float)
    assert clock.slept == []  # success is never delayed


@pytest.mark.asyncio
async def test_refused_hand_over_still_logs_in_and_says_why():
    refusal = {"ok": False, "error": "not_renewable", "message": "ticket is not renewable",
               "seconds": 0.02}
    auth, _ = authenticator(handed=refusal)
    out = await auth.authenticate(None, {"username": "bob", "password": "pw"})
    assert out["name"] == "bob"
    assert out["auth_state"]["credential"] == refusal and out["auth_state"]["principal"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize("ccache", ["KEYRING:persistent:2001", None, ""])
async def test_login_without_a_file_ticket_cache(ccache):
    auth, _ = authenticator(pam_result=(True, ccache, ""))
    out = await auth.authenticate(None, {"username": "carol", "password": "pw"})
    assert auth.handed == []
    cred = out["auth_state"]["credential"]
    assert cred["ok"] is False and cred["error"] == "no_ccache" and "ccache=" in cred["message"]
    assert out["auth_state"]["ccache"] is None


@pytest.mark.asyncio
async def test_username_is_normalized_before_pam():
    auth, _ = authenticator()
    out = await auth.authenticate(None, {"username": "Alice", "password": "pw"})
    assert auth.pam_login.calls[0][1] == "alice" and out["name"] == "alice"


@pytest.mark.asyncio
async def test_pam_service_is_a_setting():
    auth, _ = authenticator(service="jupyterhub-site")
    await auth.authenticate(None, {"username": "alice", "password": "pw"})
    assert auth.pam_login.calls[0][0] == "jupyterhub-site"


@pytest.mark.asyncio
@pytest.mark.parametrize("takes,sleep", [(0.25, 0.75), (0.0, 1.0), (1.5, None)])
async def test_failed_login_takes_at_least_the_floor(takes, sleep):
    auth, clock = authenticator(pam_result=(False, None, "Authentication failure"), takes=takes)
    assert await auth.authenticate(None, {"username": "alice", "password": "wrong"}) is None
    assert clock.slept == ([] if sleep is None else [pytest.approx(sleep)])
    assert auth.handed == []


@pytest.mark.asyncio
@pytest.mark.parametrize("data", [
    {"username": "", "password": "pw"},
    {"username": "alice", "password": ""},
    {"username": "alice"},
    {"username": ["alice"], "password": "pw"},
    {"username": "alice", "password": 12345},
    {"username": "a" * 65, "password": "pw"},
    {"username": "alice", "password": "p" * 1025},
    None,
])
async def test_invalid_input_never_reaches_pam_and_takes_the_floor(data):
    auth, clock = authenticator()
    assert await auth.authenticate(None, data) is None
    assert auth.pam_login.calls == [] and clock.slept == [1.0]


@pytest.mark.asyncio
async def test_username_pattern_is_enforced():
    auth, clock = authenticator(username_pattern=r"^[a-z][a-z0-9]*$", failure_floor_seconds=2.0)
    assert await auth.authenticate(None, {"username": "al-ice", "password": "pw"}) is None
    assert auth.pam_login.calls == [] and clock.slept == [2.0]
    assert (await auth.authenticate(None, {"username": "alice2", "password": "pw"}))["name"] \
        == "alice2"


def test_failure_floor_is_validated():
    c = Config()
    c.KerberosPAMAuthenticator.failure_floor_seconds = -1.0
    with pytest.raises(TraitError, match="failure_floor_seconds"):
        KerberosPAMAuthenticator(config=c)


@pytest.mark.asyncio
async def test_pre_spawn_start_gives_the_spawner_the_login_cache():
    auth, _ = authenticator()

    class User:
        async def get_auth_state(self):
            return {"ccache": "/run/cc/krb5cc_2001_x"}

    class Spawner:
        ccache = None

    spawner = Spawner()
    await auth.pre_spawn_start(User(), spawner)
    assert spawner.ccache == "/run/cc/krb5cc_2001_x"


def test_ccache_file_names():
    assert ccache_file("FILE:/run/cc/krb5cc_1") == "/run/cc/krb5cc_1"
    assert ccache_file("/tmp/krb5cc_1") == "/tmp/krb5cc_1"
    assert ccache_file("KEYRING:persistent:1") is None and ccache_file("KCM:") is None
    assert ccache_file(None) is None and ccache_file("") is None


def test_check_user_exists():
    auth = KerberosPAMAuthenticator()
    assert auth.check_user_exists(ME) is True
    assert auth.check_user_exists("no-such-user-x7") is False


@pytest.mark.asyncio
async def test_unreachable_kdc_is_a_503_with_its_own_message_after_the_floor():
    from tornado import web

    auth, clock = authenticator(
        pam_result=(False, None, "Authentication service cannot retrieve authentication info", 9),
        takes=0.1)
    with pytest.raises(web.HTTPError) as e:
        await auth.authenticate(None, {"username": "alice", "password": "pw"})
    assert e.value.status_code == 503 and "KDC" in e.value.log_message
    assert "try again in a few minutes" in e.value.log_message
    assert clock.slept == [pytest.approx(0.9)] and auth.handed == []


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [7, 10, None])
async def test_other_pam_failures_stay_a_plain_refusal(code):
    auth, _ = authenticator(pam_result=(False, None, "Authentication failure", code))
    assert await auth.authenticate(None, {"username": "alice", "password": "wrong"}) is None
