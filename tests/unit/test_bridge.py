"""appliance.credd_bridge.bridge: refusals with real files, storing, state, renewal scheduling."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from appliance import ccache
from appliance.credd_bridge import bridge as bridge_mod
from appliance.credd_bridge.bridge import Bridge, BridgeRefused, CreddStoreFailed
from appliance.credd_bridge.server import renewal_loop
from appliance.credd_bridge.credstore import MemoryCredStore
from appliance.privfile import Refusal
from appliance.renewal import RenewalPolicy

from .test_ccache import REALM, SECRET, kdc, pykrb5, synth, write_file  # noqa: F401 (fixtures)

T0 = 1_800_000_000
UIDS = {"alice": 2001, "bob": 2002}


class Clock:
    def __init__(self, t: float = T0 + 1):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FlakyStore(MemoryCredStore):
    """A credd that can be switched off."""

    def __init__(self):
        super().__init__()
        self.down = False

    def put(self, user, data):
        if self.down:
            raise ConnectionError("credd unreachable")
        super().put(user, data)


class FakeRenewer:
    """Renews synthetic caches: same principal/authtime/renew-till, endtime = now + life."""

    def __init__(self, clock: Clock, life: int = 600):
        self.clock = clock
        self.life = life
        self.calls = 0
        self.fail: Exception | None = None

    def __call__(self, data: bytes) -> bytes:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        tgt = ccache.parse(data).tgt
        now = int(self.clock())
        end = min(now + self.life, tgt.renew_till)
        return ccache.serialize(tgt.client, [ccache._pack_entry(
            tgt.client, tgt.server, authtime=tgt.authtime, starttime=now, endtime=end,
            renew_till=tgt.renew_till, flags=int(tgt.flags), key=SECRET + b"-renewed",
            ticket=SECRET + b"-renewed")])


@pytest.fixture
def ccdir(tmp_path):
    d = tmp_path / "ccache"
    d.mkdir()
    return d


@pytest.fixture
def env(ccdir):
    clock = Clock()
    store = FlakyStore()
    renewer = FakeRenewer(clock)
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir), clock=clock,
               renewer=renewer, policy=RenewalPolicy(retry_min=30, retry_max=600))
    return b, store, clock, renewer, ccdir


def put_cache(ccdir, name="krb5cc_2001_abc", *, uid=2001, mode=0o600, **kw):
    kw.setdefault("now", T0)
    return write_file(os.path.join(ccdir, name), synth(**kw), uid=uid, gid=uid, mode=mode)


# ---------------------------------------------------------------------------
# storing and refusing


def test_store_ok_stores_minimal_cache_and_reports_state(env):
    b, store, clock, _, ccdir = env
    path = put_cache(ccdir)
    state = b.store("alice", path)
    assert state["state"] == "active"
    assert state["principal"] == f"alice@{REALM}"
    assert state["valid_until"] == T0 + 600
    assert state["renew_until"] == T0 + 3600
    assert state["last_forwarded"] == int(clock.t)
    assert state["next_action"] == T0 + 300
    assert state["error"] is None
    stored = ccache.parse(store.creds["alice"])
    assert [str(c.server) for c in stored.credentials] == [f"krbtgt/{REALM}@{REALM}"]
    assert b.state("alice") == state
    assert b.states() == {"alice": state}


def test_store_accepts_file_prefix(env):
    b, store, _, _, ccdir = env
    b.store("alice", "FILE:" + put_cache(ccdir))
    assert "alice" in store.creds


def _refused(b, store, user, path):
    with pytest.raises(Refusal) as e:
        b.store(user, path)
    assert store.creds == {} and store.puts == 0
    assert b.state(user) is None
    return e.value.code


def test_refuses_symlink(env):
    b, store, _, _, ccdir = env
    target = put_cache(ccdir)
    os.symlink(target, ccdir / "krb5cc_2001_link")
    assert _refused(b, store, "alice", str(ccdir / "krb5cc_2001_link")) == "symlink"


def test_refuses_hardlink(env):
    b, store, _, _, ccdir = env
    target = put_cache(ccdir)
    os.link(target, ccdir / "krb5cc_2001_second")
    assert _refused(b, store, "alice", target) == "hardlink"


def test_refuses_file_of_other_user(env):
    b, store, _, _, ccdir = env
    path = put_cache(ccdir, uid=UIDS["bob"])  # alice's ticket, but bob's file
    assert _refused(b, store, "alice", path) == "wrong_owner"


def test_refuses_root_owned_file(env):
    b, store, _, _, ccdir = env
    assert _refused(b, store, "alice", put_cache(ccdir, uid=0)) == "wrong_owner"


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o660, 0o606])
def test_refuses_group_or_world_access(env, mode):
    b, store, _, _, ccdir = env
    assert _refused(b, store, "alice", put_cache(ccdir, mode=mode)) == "bad_mode"


def test_refuses_other_principal(env):
    b, store, _, _, ccdir = env
    path = put_cache(ccdir, principal=f"bob@{REALM}")  # alice's file, bob's ticket
    assert _refused(b, store, "alice", path) == "wrong_principal"


def test_refuses_principal_from_other_realm(env):
    b, store, _, _, ccdir = env
    path = put_cache(ccdir, principal="alice@EVIL.REALM")
    assert _refused(b, store, "alice", path) == "wrong_principal"


def test_refuses_not_renewable(env):
    b, store, _, _, ccdir = env
    assert _refused(b, store, "alice", put_cache(ccdir, renew=None)) == "not_renewable"


def test_refuses_expired(env):
    b, store, clock, _, ccdir = env
    path = put_cache(ccdir)
    clock.t = T0 + 600
    assert _refused(b, store, "alice", path) == "expired"


def test_refuses_no_tgt_and_garbage(env):
    b, store, _, _, ccdir = env
    assert _refused(b, store, "alice", put_cache(ccdir, with_tgt=False)) == "no_tgt"
    junk = write_file(ccdir / "junk", b"\x05\x04\x00\x00garbage", uid=2001)
    assert _refused(b, store, "alice", junk) == "malformed"


@pytest.mark.parametrize(
    "path",
    [
        "relative/krb5cc",
        "/somewhere/else/krb5cc_2001",
        "KEYRING:persistent:2001",
        "KCM:2001",
        "DIR:/run/user/2001/krb5cc",
    ],
)
def test_refuses_bad_paths(env, path):
    b, store, _, _, ccdir = env
    assert _refused(b, store, "alice", path) == "bad_path"


def test_refuses_valid_cache_outside_ccache_dir(env, tmp_path):
    b, store, _, _, ccdir = env
    other = tmp_path / "home-alice"
    other.mkdir()
    path = put_cache(other)  # a perfectly good cache, but not where PAM puts them
    assert _refused(b, store, "alice", path) == "bad_path"


def test_refuses_other_ccache_types_by_name(env):
    b, store, _, _, ccdir = env
    with pytest.raises(Refusal) as e:
        b.store("alice", "MEMORY:/x")
    assert e.value.code == "bad_path" and "FILE" in e.value.message


def test_refuses_dotdot_and_unnormalised_paths(env):
    b, store, _, _, ccdir = env
    put_cache(ccdir)
    assert _refused(b, store, "alice", f"{ccdir}/../ccache/krb5cc_2001_abc") == "bad_path"
    assert _refused(b, store, "alice", f"{ccdir}//krb5cc_2001_abc") == "bad_path"


def test_refuses_unknown_and_invalid_users(env):
    b, store, _, _, ccdir = env
    path = put_cache(ccdir)
    assert _refused(b, store, "mallory", path) == "unknown_user"
    assert _refused(b, store, "../alice", path) == "bad_request"
    assert _refused(b, store, "", path) == "bad_request"


def test_principal_map_overrides_realm(ccdir):
    store = MemoryCredStore()
    b = Bridge(store, realm=REALM, principal_map={"alice": "a.smith@OTHER.REALM"},
               uid_for=UIDS.__getitem__, ccache_dir=str(ccdir), clock=Clock())
    path = put_cache(ccdir)
    with pytest.raises(Refusal) as e:
        b.store("alice", path)
    assert e.value.code == "wrong_principal"
    ok = put_cache(ccdir, name="krb5cc_2001_m", principal="a.smith@OTHER.REALM")
    assert b.store("alice", ok)["principal"] == "a.smith@OTHER.REALM"


def test_refusal_keeps_existing_state(env):
    b, store, _, _, ccdir = env
    first = b.store("alice", put_cache(ccdir))
    bad = put_cache(ccdir, name="krb5cc_2001_bad", principal=f"bob@{REALM}")
    with pytest.raises(Refusal):
        b.store("alice", bad)
    assert b.state("alice") == first
    assert store.puts == 1


def test_ccache_dir_none_allows_any_absolute_path(tmp_path):
    store = MemoryCredStore()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=None, clock=Clock())
    sub = tmp_path / "x"
    sub.mkdir()
    b.store("alice", put_cache(sub))
    assert "alice" in store.creds


def test_nothing_secret_in_logs_or_state(env, caplog):
    b, store, clock, renewer, ccdir = env
    caplog.set_level(logging.DEBUG)
    b.store("alice", put_cache(ccdir))
    clock.t = T0 + 300
    b.run_due()
    renewer.fail = RuntimeError("KDC unreachable")
    clock.t = T0 + 800
    b.run_due()
    with pytest.raises(Refusal):
        b.store("alice", put_cache(ccdir, name="krb5cc_2001_b", principal=f"bob@{REALM}"))
    blob = caplog.text + json.dumps(b.states())
    assert "alice" in caplog.text  # the log does say what happened
    assert "SECRET" not in blob
    assert "SECRET" not in repr(b._users["alice"])


# ---------------------------------------------------------------------------
# renewal and state transitions (injected clock and renewer)


def test_nothing_due_before_renewal_time(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    clock.t = T0 + 299
    assert b.run_due() == []
    assert renewer.calls == 0
    assert b.next_wakeup() == T0 + 300


def test_renewal_restores_and_reschedules(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    first = store.creds["alice"]
    clock.t = T0 + 300
    assert b.run_due() == ["alice"]
    assert renewer.calls == 1
    s = b.state("alice")
    assert s["state"] == "active"
    assert s["valid_until"] == T0 + 900
    assert s["last_renewed"] == T0 + 300 and s["last_forwarded"] == T0 + 300
    assert s["next_action"] == T0 + 600
    assert store.puts == 2 and store.creds["alice"] != first
    assert ccache.parse(store.creds["alice"]).tgt.endtime == T0 + 900


def test_renewal_reaches_renew_till_then_final_then_expired(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir, renew=900))  # renewable for 15 min only
    clock.t = T0 + 300
    b.run_due()
    s = b.state("alice")
    assert s["valid_until"] == T0 + 900  # capped at renew-till
    assert s["state"] == "final"
    assert s["next_action"] == T0 + 900
    clock.t = T0 + 899
    assert b.run_due() == []
    clock.t = T0 + 900
    b.run_due()
    s = b.state("alice")
    assert s["state"] == "expired" and s["next_action"] is None
    assert renewer.calls == 1
    assert b.next_wakeup() is None


def test_kdc_down_retries_with_backoff_then_recovers(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir, life=3600, renew=86400))  # renew at T0+1800
    renewer.fail = ccache.RenewError("Cannot contact any KDC for realm 'BRIDGE.TEST'")
    clock.t = T0 + 1800
    expected_delays = [30, 60, 120, 240, 480, 600, 600]
    for delay in expected_delays:
        b.run_due()
        s = b.state("alice")
        assert s["state"] == "retrying"
        assert "Cannot contact any KDC" in s["error"]
        assert s["next_action"] == clock.t + delay
        assert s["valid_until"] == T0 + 3600  # old ticket still valid
        clock.t = s["next_action"] - 1
        assert b.run_due() == []  # not before the backoff ends
        clock.t = s["next_action"]
        if clock.t >= T0 + 3600 - 600:
            break
    assert store.puts == 1  # nothing re-stored while failing
    renewer.fail = None
    b.run_due()
    s = b.state("alice")
    assert s["state"] == "active" and s["error"] is None
    assert s["valid_until"] == int(clock.t) + 600
    assert store.puts == 2


def test_kdc_down_until_expiry_ends_expired(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    renewer.fail = ccache.RenewError("KDC down")
    clock.t = T0 + 300
    for _ in range(20):
        if not b.due():
            break
        b.run_due()
        s = b.state("alice")
        if s["state"] == "expired":
            break
        assert s["next_action"] <= T0 + 600  # never scheduled past the end
        clock.t = s["next_action"]
    assert b.state("alice")["state"] == "expired"


def test_credd_down_at_store_is_reported_and_retried(env):
    b, store, clock, renewer, ccdir = env
    store.down = True
    with pytest.raises(CreddStoreFailed) as e:
        b.store("alice", put_cache(ccdir))
    assert e.value.state["state"] == "retrying"
    assert "credd unreachable" in e.value.state["error"]
    assert e.value.state["next_action"] == int(clock.t) + 30
    assert e.value.state["last_forwarded"] is None
    store.down = False
    clock.t += 30
    b.run_due()
    s = b.state("alice")
    assert s["state"] == "active" and s["last_forwarded"] == int(clock.t)
    assert renewer.calls == 0  # only the store was retried
    assert "alice" in store.creds


def test_credd_down_after_renewal_keeps_renewed_ticket(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    store.down = True
    clock.t = T0 + 300
    b.run_due()
    s = b.state("alice")
    assert s["state"] == "retrying" and "credd" in s["error"]
    assert s["valid_until"] == T0 + 900  # renewed copy kept
    store.down = False
    clock.t = s["next_action"]
    b.run_due()
    assert renewer.calls == 1  # not renewed twice
    assert b.state("alice")["state"] == "active"
    assert ccache.parse(store.creds["alice"]).tgt.endtime == T0 + 900


def test_new_login_during_renewal_wins(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    newer = put_cache(ccdir, name="krb5cc_2001_new", now=T0 + 290, life=3600, renew=86400)
    real = FakeRenewer(clock)

    def renew_while_user_logs_in(data):
        b.store("alice", newer)  # the hub hands over a new login meanwhile
        return real(data)

    b.renewer = renew_while_user_logs_in
    clock.t = T0 + 300
    b.run_due()
    s = b.state("alice")
    assert s["valid_until"] == T0 + 290 + 3600  # the new login's ticket, not the renewed old one
    assert ccache.parse(store.creds["alice"]).tgt.endtime == T0 + 290 + 3600


def test_forget_stops_renewal(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    assert b.forget("alice") is True
    assert b.forget("alice") is False
    clock.t = T0 + 300
    assert b.run_due() == []
    assert b.state("alice") is None
    assert "alice" in store.creds  # the credd copy is left alone


def test_unexpected_renewer_bug_does_not_crash(env):
    b, store, clock, renewer, ccdir = env
    b.store("alice", put_cache(ccdir))
    renewer.fail = ZeroDivisionError("bug")
    clock.t = T0 + 300
    b.run_due()
    assert b.state("alice")["state"] == "retrying"


def test_renewal_loop_wakes_on_time_and_on_change(env):
    b, store, clock, renewer, ccdir = env

    async def scenario():
        wake = asyncio.Event()
        b.on_change = wake.set
        stop = asyncio.Event()
        task = asyncio.create_task(renewal_loop(b, wake, max_sleep=0.05, stop=stop))
        await asyncio.sleep(0.02)
        b.store("alice", put_cache(ccdir))
        await asyncio.sleep(0.1)
        assert renewer.calls == 0
        clock.t = T0 + 300  # time passes: the loop must renew by itself
        for _ in range(100):
            if renewer.calls:
                break
            await asyncio.sleep(0.02)
        stop.set()
        wake.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert renewer.calls == 1
    assert b.state("alice")["valid_until"] == T0 + 900


def test_parse_principal_map():
    assert bridge_mod.parse_principal_map(["a=a@R,b=bee@S", " c = c@T "]) == {
        "a": "a@R", "b": "bee@S", "c": "c@T"}
    with pytest.raises(ValueError):
        bridge_mod.parse_principal_map(["nonsense"])


def test_bridge_refused_is_a_refusal():
    assert issubclass(BridgeRefused, Refusal)


# ---------------------------------------------------------------------------
# the same with real caches from a real KDC and the real renewer


@pytest.mark.kdc
def test_real_kdc_store_and_renew(kdc, pykrb5, ccdir):
    store = MemoryCredStore()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir))
    path = kdc.kinit("alice", ccdir / "krb5cc_2001_real", lifetime="10m", renew="1h")
    os.chown(path, 2001, 2001)
    s = b.store("alice", path)
    assert s["state"] == "active" and s["valid_until"] - s["next_action"] == 300
    # force the renewal now: the real KDC must extend the ticket
    b._users["alice"].next_action = 0
    import time as _t
    _t.sleep(1.1)
    before = s["valid_until"]
    b.policy = RenewalPolicy(fraction=0.0)  # make it due now
    b.run_due()
    s2 = b.state("alice")
    assert s2["state"] == "active", s2
    assert s2["valid_until"] > before
    assert s2["last_renewed"] is not None
    assert ccache.parse(store.creds["alice"]).tgt.endtime == s2["valid_until"]


@pytest.mark.kdc
def test_real_kdc_refusals(kdc, ccdir):
    store = MemoryCredStore()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir))
    bobs = kdc.kinit("bob", ccdir / "krb5cc_2001_bob")
    os.chown(bobs, 2001, 2001)  # bob's ticket in a file alice owns
    nonrenew = kdc.kinit("alice", ccdir / "krb5cc_2001_nr", renew=None)
    os.chown(nonrenew, 2001, 2001)
    grp = kdc.kinit("alice", ccdir / "krb5cc_2001_grp")
    os.chown(grp, 2001, 2001)
    os.chmod(grp, 0o640)
    for path, code in [(bobs, "wrong_principal"), (nonrenew, "not_renewable"), (grp, "bad_mode")]:
        with pytest.raises(Refusal) as e:
            b.store("alice", path)
        assert e.value.code == code
    assert store.puts == 0
