"""Per-account login back-off (issue 10): appliance.hub.login_backoff on its own, then inside
KerberosPAMAuthenticator with PAM and the clock replaced (tests/unit/test_authenticator.py)."""

from __future__ import annotations

import asyncio

import pytest
from tornado.web import HTTPError

from appliance.hub.login_backoff import LoginBackoff

from .test_authenticator import authenticator


class Clock:
    def __init__(self):
        self.now = 500.0

    def __call__(self):
        return self.now


def backoff(**kw):
    clock = Clock()
    args = dict(after=3, base=10.0, maximum=60.0, forget=3600.0, max_accounts=100, clock=clock)
    args.update(kw)
    return LoginBackoff(**args), clock


def fail(b, name, n=1):
    for _ in range(n):
        assert b.begin(name) == 0
        b.end(name, False)


def test_the_first_failures_are_free_then_the_wait_doubles_up_to_the_maximum():
    b, clock = backoff()
    fail(b, "alice", 2)
    assert b.begin("alice") == 0
    b.end("alice", False)  # the 3rd failure: locked for 10 s
    waits = []
    for _ in range(6):
        wait = b.begin("alice")
        waits.append(wait)
        clock.now += wait  # wait it out, then fail again
        fail(b, "alice")
    assert waits == [10, 20, 40, 60, 60, 60]


def test_retry_after_counts_down_and_is_never_zero_while_locked():
    b, clock = backoff()
    fail(b, "alice", 3)
    assert b.begin("alice") == 10
    clock.now += 9.2
    assert b.begin("alice") == 1
    clock.now += 0.8
    assert b.begin("alice") == 0


def test_a_success_forgets_the_failures():
    b, clock = backoff()
    fail(b, "alice", 2)
    assert b.begin("alice") == 0
    b.end("alice", True)
    fail(b, "alice", 2)
    assert b.begin("alice") == 0  # only 2 failures since the success


def test_another_account_is_not_slowed():
    b, _ = backoff()
    fail(b, "alice", 3)
    assert b.begin("alice") > 0
    assert b.begin("bob") == 0


def test_parallel_attempts_cannot_slip_past_the_threshold():
    b, _ = backoff()
    assert [b.begin("alice") for _ in range(5)] == [0, 0, 0, 10, 10]
    for _ in range(3):
        b.end("alice", False)
    assert b.begin("alice") == 10


def test_failures_are_forgotten_after_a_quiet_period_but_not_while_locked():
    b, clock = backoff(maximum=7200.0, base=5000.0)
    fail(b, "alice", 3)
    clock.now += 4000  # quiet for longer than "forget", but still locked
    assert b.begin("alice") == 1000
    clock.now += 1001
    assert b.begin("alice") == 0  # lock over, and 5001 s since the last failure: forgotten
    b.end("alice", False)
    assert b.begin("alice") == 0  # one failure counted, not four


def test_the_state_is_bounded_and_locked_accounts_are_kept_longest():
    b, clock = backoff(max_accounts=100)
    fail(b, "target", 3)
    for i in range(500):
        clock.now += 0.01
        fail(b, f"spray{i}")
    assert b.tracked() <= 100
    assert b.begin("target") > 0


# -- inside the authenticator -----------------------------------------------------------------

WRONG = (False, None, "Authentication failure")
UNKNOWN = (False, None, "User not known to the underlying authentication module")


async def attempt(auth, user, password="guess"):
    try:
        return 200, await auth.authenticate(None, {"username": user, "password": password}), {}
    except HTTPError as e:
        return e.status_code, e.log_message, getattr(e, "headers", {})


@pytest.mark.asyncio
async def test_after_k_failures_the_account_gets_429_with_retry_after_without_pam():
    auth, clock = authenticator(pam_result=WRONG, login_backoff_after=3, login_backoff_seconds=30.0)
    for _ in range(3):
        assert await auth.authenticate(None, {"username": "bench18", "password": "x"}) is None
    calls = len(auth.pam_login.calls)
    status, message, headers = await attempt(auth, "bench18")
    # 30 s from the start of the failed attempt, which took the 1 s failure floor
    assert status == 429 and headers == {"Retry-After": "29"}
    assert message == "Too many failed logins for this account. Wait 29 seconds, then try again."
    assert len(auth.pam_login.calls) == calls  # no password checked while locked
    # even the right password waits (or the lock would tell the guesser which one was right)
    auth.pam_login.result = (True, "FILE:/run/cc/krb5cc_2118_x", "")
    assert (await attempt(auth, "bench18", "right"))[0] == 429
    clock.now += 30
    status, out, _ = await attempt(auth, "bench18", "right")
    assert status == 200 and out["name"] == "bench18"


@pytest.mark.asyncio
async def test_unknown_users_and_wrong_passwords_get_identical_answers():
    results = {}
    for name, pam in (("wrong", WRONG), ("unknown", UNKNOWN)):
        auth, clock = authenticator(pam_result=pam, login_backoff_after=2, failure_floor_seconds=1.0)
        seen = []
        for _ in range(4):
            t0 = clock.now
            status, message, headers = await attempt(auth, "someone")
            seen.append((status, message, headers, round(clock.now - t0, 6)))
        results[name] = seen
    assert results["wrong"] == results["unknown"]
    assert [s[0] for s in results["wrong"]] == [200, 200, 429, 429]  # 200 here: None, then 403
    assert results["wrong"][0][1] is None and results["wrong"][0][3] == 1.0  # the failure floor


@pytest.mark.asyncio
async def test_a_locked_account_does_not_slow_another_user():
    auth, clock = authenticator(pam_result=WRONG, login_backoff_after=2)
    for _ in range(2):
        await attempt(auth, "bench18")
    assert (await attempt(auth, "bench18"))[0] == 429
    auth.pam_login.result = (True, "FILE:/run/cc/krb5cc_2001_x", "")
    t0 = clock.now
    status, out, _ = await attempt(auth, "alice", "alice-pass-1")
    assert status == 200 and out["name"] == "alice" and clock.now - t0 == pytest.approx(0.2)


@pytest.mark.asyncio
async def test_a_success_resets_the_account():
    auth, _ = authenticator(pam_result=WRONG, login_backoff_after=3)
    for _ in range(2):
        await attempt(auth, "alice")
    auth.pam_login.result = (True, "FILE:/run/cc/krb5cc_2001_x", "")
    assert (await attempt(auth, "alice", "right"))[0] == 200
    auth.pam_login.result = WRONG
    assert [(await attempt(auth, "alice"))[0] for _ in range(4)] == [200, 200, 200, 429]


@pytest.mark.asyncio
async def test_names_are_counted_after_normalization():
    auth, _ = authenticator(pam_result=WRONG, login_backoff_after=2)
    await attempt(auth, "Alice")
    await attempt(auth, "ALICE")
    assert (await attempt(auth, "alice"))[0] == 429


@pytest.mark.asyncio
async def test_a_pam_error_counts_as_a_failure():
    auth, _ = authenticator(login_backoff_after=1)

    def broken(service, username, password):
        raise RuntimeError("pam module crashed")

    auth.pam_login = broken
    with pytest.raises(RuntimeError):
        await auth.authenticate(None, {"username": "alice", "password": "x"})
    assert (await attempt(auth, "alice"))[0] == 429


@pytest.mark.asyncio
async def test_parallel_guesses_are_held_to_the_threshold():
    auth, _ = authenticator(pam_result=WRONG, login_backoff_after=3, failure_floor_seconds=0.0)
    gate = asyncio.Event()
    real = auth.pam_login

    async def slow_thread(fn, *args):
        await gate.wait()
        return fn(*args)

    import appliance.hub.authenticator as mod
    orig = mod.asyncio.to_thread
    mod.asyncio.to_thread = slow_thread
    try:
        tasks = [asyncio.ensure_future(attempt(auth, "bench18")) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        codes = [t[0] for t in await asyncio.gather(*tasks)]
    finally:
        mod.asyncio.to_thread = orig
    assert codes.count(200) == 3 and codes.count(429) == 7 and len(real.calls) == 3


def test_the_settings_are_traitlets_with_bounds():
    from traitlets import TraitError
    from traitlets.config import Config
    from appliance.hub.authenticator import KerberosPAMAuthenticator
    a = KerberosPAMAuthenticator(config=Config())
    assert (a.login_backoff_after, a.login_backoff_seconds, a.login_backoff_max_seconds) == \
        (5, 10.0, 600.0)
    for name, bad in (("login_backoff_after", 0), ("login_backoff_seconds", 0.0)):
        c = Config()
        c.KerberosPAMAuthenticator[name] = bad
        with pytest.raises(TraitError, match=name):
            KerberosPAMAuthenticator(config=c)


@pytest.mark.asyncio
async def test_retry_after_does_not_depend_on_how_long_pam_took():
    answers = []
    for takes in (0.05, 0.9):  # e.g. PAM answering fast for an unknown user, slowly for a known
        auth, clock = authenticator(pam_result=WRONG, takes=takes, login_backoff_after=1,
                                    failure_floor_seconds=1.0)
        await attempt(auth, "someone")
        clock.now += 0.3
        answers.append(await attempt(auth, "someone"))
    assert answers[0] == answers[1] and answers[0][2] == {"Retry-After": "9"}


def test_an_attempt_whose_password_could_not_be_checked_neither_counts_nor_forgets():
    b, clock = backoff()
    fail(b, "alice", 2)
    for _ in range(5):  # the KDC does not answer: nothing was checked
        assert b.begin("alice") == 0
        b.end("alice", False, checked=False)
    assert b.begin("alice") == 0  # still only 2 failures: the third is allowed ...
    b.end("alice", False)
    assert b.begin("alice") > 0  # ... and locks


@pytest.mark.asyncio
async def test_a_kdc_outage_does_not_lock_accounts_out():
    """Logins while no KDC answers get the 503 every time, and none counts as a failure."""
    auth, clock = authenticator(
        pam_result=(False, None, "Authentication service cannot retrieve authentication info", 9),
        takes=0.1, login_backoff_after=2)
    for _ in range(4):
        with pytest.raises(HTTPError) as e:
            await auth.authenticate(None, {"username": "alice", "password": "pw"})
        assert e.value.status_code == 503
