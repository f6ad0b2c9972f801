"""appliance.credd_bridge.statefile and Bridge.restore: the bridge's records survive a restart,
encrypted with a key from the state volume; corrupted or foreign files are refused (logged,
moved aside), never a crash. Real files; the bridge's clock, renewer and credd are injected."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from cryptography.fernet import Fernet

from appliance import ccache
from appliance.credd_bridge.bridge import Bridge
from appliance.credd_bridge.records import UserRecord
from appliance.credd_bridge.statefile import StateFile, StateRefused

from .test_bridge import T0, UIDS, Clock, FakeRenewer, FlakyStore, put_cache
from .test_ccache import REALM, SECRET


@pytest.fixture
def paths(tmp_path):
    ccdir = tmp_path / "ccache"
    ccdir.mkdir()
    return tmp_path / "state" / "state", tmp_path / "secrets" / "key", ccdir


def make_bridge(paths, clock=None, store=None):
    state, key, ccdir = paths
    clock = clock or Clock()
    b = Bridge(store or FlakyStore(), realm=REALM, uid_for=UIDS.__getitem__,
               ccache_dir=str(ccdir), clock=clock, renewer=FakeRenewer(clock),
               state_file=StateFile(str(state), str(key), clock=clock), push_running=False)
    return b


def test_store_writes_an_encrypted_private_state_and_a_private_key(paths):
    state, key, ccdir = paths
    b = make_bridge(paths)
    b.store("alice", put_cache(ccdir))
    assert b.flush()
    for path, dmode in ((state, 0o700), (key, 0o700)):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == dmode
    raw = state.read_bytes()
    assert SECRET not in raw and b"alice" not in raw  # nothing in clear, not even names
    plain = json.loads(Fernet(key.read_bytes()).decrypt(raw))
    assert plain["format"] == "appliance.credd_bridge.state" and plain["version"] == 1
    assert [u["user"] for u in plain["users"]] == ["alice"]


def test_a_restarted_bridge_goes_on_renewing_and_refreshing(paths):
    clock = Clock()
    b = make_bridge(paths, clock)
    b.store("alice", put_cache(paths[2]))
    assert b.flush()
    before = b.state("alice")
    # restart: a new process with the same files
    store2 = FlakyStore()
    b2 = make_bridge(paths, clock, store2)
    assert b2.restore() == 1
    assert b2.state("alice") == before
    clock.t = T0 + 300
    assert b2.run_due() == ["alice"]  # renewed on schedule after the restart
    assert b2.flush()
    st = b2.state("alice")
    assert st["last_renewed"] == T0 + 300 and st["valid_until"] == T0 + 900
    assert ccache.parse(store2.creds["alice"]).tgt.endtime == T0 + 900  # re-stored
    # the renewal was saved too: a third start knows it
    b3 = make_bridge(paths, clock)
    b3.restore()
    assert b3.state("alice")["valid_until"] == T0 + 900
    state, path = b3.refresh("alice")
    assert b3.flush()
    assert state["principal"] == f"alice@{REALM}" and path is None
    # generations go on: a new login after the restart replaces the restored record
    b3.store("alice", put_cache(paths[2], name="krb5cc_2001_new", now=T0 + 310))
    assert b3.flush()
    assert b3._users["alice"].generation == 2
    assert b3.forget("alice")
    assert b3.flush()
    b4 = make_bridge(paths, clock)
    assert b4.restore() == 0 and b4.state("alice") is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "foreign", "plain_json",
                                    "wrong_format", "group_readable"])
def test_a_corrupted_or_foreign_state_is_refused_with_a_clear_line(paths, damage, caplog):
    state, key, ccdir = paths
    b = make_bridge(paths)
    b.store("alice", put_cache(ccdir))
    assert b.flush()
    raw = state.read_bytes()
    if damage == "garbage":
        state.write_bytes(b"\x00garbage" * 10)
    elif damage == "truncated":
        state.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped":
        state.write_bytes(raw[:-10] + bytes([raw[-10] ^ 1]) + raw[-9:])
    elif damage == "foreign":  # another appliance's (valid) state, another key
        state.write_bytes(Fernet(Fernet.generate_key()).encrypt(Fernet(key.read_bytes())
                                                                .decrypt(raw)))
    elif damage == "plain_json":
        state.write_bytes(json.dumps({"users": []}).encode())
    elif damage == "wrong_format":
        state.write_bytes(Fernet(key.read_bytes()).encrypt(b'{"format": "other", "users": []}'))
    elif damage == "group_readable":
        os.chmod(state, 0o640)
    b2 = make_bridge(paths)
    with caplog.at_level(logging.ERROR, logger="appliance.credd_bridge"):
        assert b2.restore() == 0
    assert b2.states() == {}
    line = caplog.records[-1].getMessage()
    assert f"state file {state} refused" in line and "users must log in again" in line
    assert ("not readable with this appliance's key" in line) == (
        damage in ("garbage", "truncated", "flipped", "foreign", "plain_json"))
    assert "SECRET" not in caplog.text
    aside = [p for p in state.parent.iterdir() if p.name.startswith("state.refused-")]
    assert len(aside) == 1 and not state.exists()
    # the bridge works on: a new login is stored and saved again
    b2.store("alice", put_cache(ccdir, name="krb5cc_2001_again"))
    assert b2.flush()
    assert make_bridge(paths).restore() == 1


def test_a_record_that_does_not_fit_is_skipped_the_others_restored(paths, caplog):
    state, key, ccdir = paths
    b = make_bridge(paths)
    b.store("alice", put_cache(ccdir))
    assert b.flush()
    b.store("bob", put_cache(ccdir, name="krb5cc_2002_b", uid=2002, principal=f"bob@{REALM}"))
    assert b.flush()
    f = Fernet(key.read_bytes())
    doc = json.loads(f.decrypt(state.read_bytes()))
    for u in doc["users"]:
        if u["user"] == "bob":
            u["principal"] = f"alice@{REALM}"  # ticket of another principal
    doc["users"].append({"user": "carol"})
    state.write_bytes(f.encrypt(json.dumps(doc).encode()))
    b2 = make_bridge(paths)
    with caplog.at_level(logging.WARNING, logger="appliance.credd_bridge"):
        assert b2.restore() == 1
    assert list(b2.states()) == ["alice"]
    assert "record of 'bob' skipped" in caplog.text and "record of 'carol' skipped" in caplog.text


def test_an_unusable_key_disables_saving_but_not_the_bridge(paths, caplog):
    state, key, ccdir = paths
    key.parent.mkdir(mode=0o700)
    key.write_bytes(b"not a key")
    os.chmod(key, 0o600)
    b = make_bridge(paths)
    with caplog.at_level(logging.ERROR, logger="appliance.credd_bridge"):
        b.store("alice", put_cache(ccdir))  # stored in the credd all the same
        assert b.flush()
    assert b.state("alice")["state"] == "active"
    assert "could not save the credential state" in caplog.text
    assert "does not hold a Fernet key" in caplog.text
    assert not state.exists()
    with pytest.raises(StateRefused):
        StateFile(str(state), str(key)).save([])


def test_user_record_round_trip_and_type_checks():
    rec = UserRecord(user="alice", principal=f"alice@{REALM}", ccache=b"\x05\x04x",
                     valid_until=T0, pushed_to=["exec1"], pending_store=True)
    assert UserRecord.from_saved(rec.saved()) == rec
    for bad in ({"valid_until": "soon"}, {"pending_store": 1}, {"state": "odd"},
                {"ccache": "***"}, {"pushed_to": [1]}, {"failures": True}):
        with pytest.raises(ValueError):
            UserRecord.from_saved({**rec.saved(), **bad})


def test_push_results_are_saved_too(paths):
    from .test_bridge_refresh import PushingStore, _wait

    state, key, ccdir = paths
    clock = Clock()
    b = Bridge(PushingStore(), realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir),
               clock=clock, renewer=FakeRenewer(clock), push_retry_for=0,
               state_file=StateFile(str(state), str(key), clock=clock))
    b.store("alice", put_cache(ccdir))
    assert b.flush()
    assert _wait(lambda: b.state("alice")["last_pushed"] is not None)
    b.close()
    assert _wait(lambda: (b2 := make_bridge(paths)).restore() == 1 and
                 b2.state("alice")["pushed_to"] == ["exec1.mini.test"])


class SlowStateFile(StateFile):
    """A state file on a disk so busy that every save takes 0.3 s."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.saves = 0

    def save(self, records):
        import time

        time.sleep(0.3)
        self.saves += 1
        super().save(records)


def test_saving_runs_off_the_request_path_and_coalesces(paths):
    import time

    state, key, ccdir = paths
    clock = Clock()
    slow = SlowStateFile(str(state), str(key), clock=clock)
    b = Bridge(FlakyStore(), realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir),
               clock=clock, renewer=FakeRenewer(clock), state_file=slow, push_running=False)
    t = time.monotonic()
    for i in range(5):
        b.store("alice", put_cache(ccdir, name=f"krb5cc_2001_{i}"))
    assert time.monotonic() - t < 0.3 * 2  # five logins did not wait for five slow saves
    assert b.flush(timeout=5)
    assert 1 <= slow.saves <= 3  # changes during a save were coalesced into the next one
    b2 = make_bridge(paths, clock)
    assert b2.restore() == 1 and b2._users["alice"].generation == 5  # the last change is saved
    b.store("bob", put_cache(ccdir, name="krb5cc_2002_x", uid=2002, principal=f"bob@{REALM}"))
    b.close()  # a stopping bridge saves what is pending
    assert make_bridge(paths, clock).restore() == 2
