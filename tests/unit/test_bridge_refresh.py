"""The bridge's ``refresh`` (re-store before a spawn, submit ccache) and the HTCondor store's
freshness confirmation (with a fake htcondor module)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from appliance import ccache
from appliance.credd_bridge.bridge import Bridge, BridgeRefused, CreddStoreFailed
from appliance.credd_bridge.credstore import HTCondorCredStore

from .test_bridge import T0, UIDS, Clock, FakeRenewer, FlakyStore, put_cache
from .test_ccache import REALM


@pytest.fixture
def env(tmp_path):
    ccdir = tmp_path / "ccache"
    ccdir.mkdir()
    submit = tmp_path / "submit"
    clock = Clock()
    store = FlakyStore()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir), clock=clock,
               renewer=FakeRenewer(clock), submit_dir=str(submit))
    return b, store, clock, ccdir, submit


def test_refresh_without_credential_says_log_in_again(env):
    b, store, *_ = env
    with pytest.raises(BridgeRefused) as e:
        b.refresh("alice")
    assert e.value.code == "no_credential"
    assert store.puts == 0


def test_refresh_restores_current_copy(env):
    b, store, clock, ccdir, _ = env
    b.store("alice", put_cache(ccdir))
    assert store.puts == 1
    clock.t = T0 + 100
    state, path = b.refresh("alice")
    assert store.puts == 2 and path is None
    assert state["last_forwarded"] == T0 + 100
    assert ccache.parse(store.creds["alice"]).principal == ccache.parse(b._users["alice"].ccache).principal


def test_refresh_sends_the_renewed_copy(env):
    b, store, clock, ccdir, _ = env
    b.store("alice", put_cache(ccdir))
    clock.t = T0 + 300
    b.run_due()  # renewed: valid until T0 + 900
    store.creds.clear()
    clock.t = T0 + 400
    state, _ = b.refresh("alice")
    assert state["valid_until"] == T0 + 900
    assert ccache.parse(store.creds["alice"]).tgt.endtime == T0 + 900


def test_refresh_refuses_expired_or_nearly_expired(env):
    b, store, clock, ccdir, _ = env
    b.store("alice", put_cache(ccdir))
    b.renewer.fail = ccache.RenewError("Cannot contact any KDC")
    clock.t = T0 + 560  # renewal failed so far; 40 s left < min_valid 60
    with pytest.raises(BridgeRefused) as e:
        b.refresh("alice")
    assert e.value.code == "expired" and "expires at" in e.value.message
    state, _ = b.refresh("alice", min_valid=10)  # with a smaller margin it is still usable
    assert state["valid_until"] == T0 + 600
    clock.t = T0 + 601
    b.run_due()
    assert b.state("alice")["state"] == "expired"
    with pytest.raises(BridgeRefused):
        b.refresh("alice", min_valid=0)


def test_refresh_credd_down_keeps_state_and_reports(env):
    b, store, clock, ccdir, _ = env
    b.store("alice", put_cache(ccdir))
    store.down = True
    with pytest.raises(CreddStoreFailed) as e:
        b.refresh("alice")
    assert e.value.state["state"] == "retrying" and "credd unreachable" in e.value.state["error"]
    store.down = False
    state, _ = b.refresh("alice")
    assert state["state"] == "active" and state["error"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_refresh_writes_private_submit_ccache(env):
    b, store, clock, ccdir, submit = env
    b.store("alice", put_cache(ccdir))
    _, path = b.refresh("alice", write_ccache=True)
    assert os.path.dirname(path) == str(submit)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 2001 and stat.S_IMODE(st.st_mode) == 0o600
    with open(path, "rb") as f:
        assert f.read() == b._users["alice"].ccache
    assert stat.S_IMODE(os.stat(submit).st_mode) == 0o711
    _, path2 = b.refresh("alice", write_ccache=True)
    assert path2 != path  # one file per submission
    # left-over files are swept after submit_max_age
    old = time.time() - 3600
    os.utime(path, (old, old))
    b.refresh("alice", write_ccache=True)
    assert not os.path.exists(path) and os.path.exists(path2)


def test_refresh_without_submit_dir_refuses_ccache(tmp_path):
    ccdir = tmp_path / "cc"
    ccdir.mkdir()
    b = Bridge(FlakyStore(), realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir),
               clock=Clock(), renewer=FakeRenewer(Clock()))
    b.store("alice", put_cache(ccdir))
    with pytest.raises(BridgeRefused):
        b.refresh("alice", write_ccache=True)


# ---------------------------------------------------------------------------
# HTCondorCredStore against a fake htcondor module


class FakeCredd:
    """Behaves like the 23.9 credd + appliance credmon: add writes .cred at once; the credmon
    makes .cc ``lag`` seconds later; query returns the .cc mtime in whole seconds."""

    _addr = "<lane:9618>"

    def __init__(self, world):
        self.w = world

    def add_user_cred(self, credtype, data, user):
        if self.w.fail_add:
            raise RuntimeError("Communication error")
        self.w.adds.append((credtype, user, data))
        at = time.time() + self.w.lag
        if self.w.cc_at is not None and int(at) <= int(self.w.cc_at):
            at = int(self.w.cc_at) + 1  # the credmon: a later whole second than the last .cc
        self.w.cc_at = at

    def query_user_cred(self, credtype, user):
        self.w.queries += 1
        if self.w.cc_at is None:
            return None
        if time.time() >= self.w.cc_at:
            return int(self.w.cc_at)
        return self.w.old_mtime

    def delete_user_cred(self, credtype, user):
        self.w.cc_at = None


class FakeHTCondor:
    class CredType:
        Kerberos = 32

    class DaemonType:
        Credd = "Credd"
        Schedd = "Schedd"

    class AdTypes:
        Startd = "Startd"

    def __init__(self, lag=0.2, old_mtime=None):
        self.adds = []
        self.queries = 0
        self.lag = lag
        self.cc_at = None
        self.old_mtime = old_mtime
        self.fail_add = False
        self.located = 0
        self.param = {"UID_DOMAIN": "mini.test"}
        self.credds = ["lane.mini.test"]
        world = self

        class Collector:
            def locate(self, dtype, name):
                world.located += 1
                return {"Name": name}

            def locateAll(self, dtype):
                world.located += 1
                return [{"Name": n} for n in world.credds]

            def query(self, adtype, constraint, projection):  # slot ads of the running jobs
                return [{"Name": h, "Machine": h.split("@")[1], "JobId": f"{i + 1}.0",
                         "GlobalJobId": f"lane.mini.test#{i + 1}.0#1", "RemoteUser":
                         "alice@mini.test"} for i, h in enumerate(getattr(world, "job_hosts", []))]

        self.Collector = Collector
        self.Credd = lambda ad=None: FakeCredd(world)


def test_credstore_waits_for_the_credmon():
    mod = FakeHTCondor(lag=0.3, old_mtime=int(time.time()) - 50)
    s = HTCondorCredStore("lane.mini.test", module=mod, poll=0.02)
    t = time.monotonic()
    s.put("alice", b"ticket")
    took = time.monotonic() - t
    assert 0.25 <= took < 2, took  # did not accept the old .cc mtime the credd answers first
    assert mod.adds == [(32, "alice@mini.test", b"ticket")]
    assert mod.queries >= 2


def test_credstore_times_out_when_credmon_never_confirms():
    mod = FakeHTCondor(lag=60, old_mtime=int(time.time()) - 50)
    s = HTCondorCredStore(module=mod, confirm_timeout=0.3, poll=0.02)
    with pytest.raises(RuntimeError, match="did not confirm"):
        s.put("alice", b"ticket")


def test_credstore_user_template_and_relocate_on_error():
    mod = FakeHTCondor(lag=0)
    s = HTCondorCredStore("lane.mini.test", user_template="{user}@other.test", module=mod)
    s.put("bob", b"x")
    assert mod.adds[-1][1] == "bob@other.test"
    assert mod.located == 1
    mod.fail_add = True
    with pytest.raises(RuntimeError):
        s.put("bob", b"x")
    assert mod.located == 2  # looked the credd up again before giving up


def test_credstore_finds_the_credd():
    mod = FakeHTCondor(lag=0)
    HTCondorCredStore(module=mod).put("alice", b"x")  # the collector's only credd
    mod.credds = ["a", "b"]
    with pytest.raises(RuntimeError, match="2 credds"):
        HTCondorCredStore(module=mod).put("alice", b"x")
    mod.param["CREDD_HOST"] = "a"
    HTCondorCredStore(module=mod).put("alice", b"x")


# ---------------------------------------------------------------------------
# a new login's ticket goes to the nodes running the user's jobs


class PushingStore(FlakyStore):
    def __init__(self):
        super().__init__()
        self.pushed = []
        self.hosts = ["exec1.mini.test"]

    def push_running(self, user, data, hosts=None):
        self.pushed.append((user, data))
        if hosts is not None:
            return [h for h in self.hosts if h in hosts], {h: "no credd on this node"
                                                            for h in hosts if h not in self.hosts}
        return list(self.hosts), {"exec9.mini.test": "no credd on this node"}


def _wait(cond, timeout=5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def pushing_bridge(tmp_path, store, **kw):
    ccdir = tmp_path / "cc"
    ccdir.mkdir()
    clock = Clock()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir), clock=clock,
               renewer=FakeRenewer(clock), **kw)
    return b, ccdir


def test_new_login_is_pushed_to_running_jobs(tmp_path):
    store = PushingStore()
    b, ccdir = pushing_bridge(tmp_path, store)
    b.store("alice", put_cache(ccdir))
    assert _wait(lambda: b.state("alice")["last_pushed"] is not None)
    st = b.state("alice")
    assert st["pushed_to"] == ["exec1.mini.test"] and "exec9" in st["push_error"]
    assert store.pushed == [("alice", store.creds["alice"])]
    b.refresh("alice")  # a spawn re-stores, but pushes nothing: running jobs have this login
    time.sleep(0.05)
    assert len(store.pushed) == 1


def test_push_can_be_switched_off(tmp_path):
    ccdir = tmp_path / "cc"
    ccdir.mkdir()
    store = PushingStore()
    b = Bridge(store, realm=REALM, uid_for=UIDS.__getitem__, ccache_dir=str(ccdir),
               clock=Clock(), renewer=FakeRenewer(Clock()), push_running=False)
    b.store("alice", put_cache(ccdir))
    time.sleep(0.05)
    assert store.pushed == [] and b.state("alice")["pushed_to"] == []


class FakeSchedd:
    def __init__(self, world):
        self.w = world

    def query(self, constraint, projection):
        self.w.constraints.append(constraint)
        return [{"ClusterId": i + 1, "ProcId": 0} for i in range(len(self.w.job_hosts))]


def test_credstore_push_running_stores_on_each_job_node():
    mod = FakeHTCondor(lag=0)
    mod.job_hosts = ["slot1_1@exec1.mini.test", "slot1_2@exec1.mini.test",
                     "slot1_1@exec2.mini.test"]
    mod.constraints = []
    mod.Schedd = lambda ad: FakeSchedd(mod)
    s = HTCondorCredStore("lane.mini.test", module=mod)
    done, errors = s.push_running("alice", b"new-ticket")
    assert done == ["exec1.mini.test", "exec2.mini.test"] and errors == {}
    assert [a[1] for a in mod.adds] == ["alice@mini.test", "alice@mini.test"]
    assert mod.constraints == [
        'Owner == "alice" && JobStatus == 2 && SendCredential =?= true']
    with pytest.raises(ValueError):
        s.push_running('alice" || true || "', b"x")


def test_credstore_stores_without_credd_wait_when_bindings_allow():
    """With htcondor2's store call the bridge skips the credd's own 1-s polling for the first
    .cc (mode without the wait flag) and confirms through its own 50 ms queries instead."""
    mod = FakeHTCondor(lag=0.1)
    calls = []

    def store(addr, user, data, mode, service, handle, refresh):
        calls.append((addr, user, mode))
        if mode == 2 | 32:  # query
            if mod.cc_at is None or time.time() < mod.cc_at:
                return 6  # SUCCESS_PENDING
            return int(mod.cc_at)
        mod.cc_at = time.time() + mod.lag
        return 6

    mod._credd_do_store_cred = store
    s = HTCondorCredStore("lane.mini.test", module=mod, poll=0.02)
    s.put("alice", b"t")
    # a query (2 | Kerberos: the .cc mtime before), add | Kerberos, then queries, never with
    # the 0x80 wait flag
    assert calls[0] == ("<lane:9618>", "alice@mini.test", 34)
    assert calls[1] == ("<lane:9618>", "alice@mini.test", 32)
    assert len(calls) >= 4 and {c[2] for c in calls[2:]} == {34}
    assert mod.adds == [] and mod.queries == 0  # Credd's own (waiting) calls not used


class LateCreddStore(PushingStore):
    """exec2's credd appears in the collector only for the third attempt."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def push_running(self, user, data, hosts=None):
        self.calls.append(hosts)
        if len(self.calls) < 3:
            return ["exec1.mini.test"] if hosts is None else [], {
                "exec2.mini.test": "the collector lists no credd named exec2.mini.test"}
        return [h for h in (hosts or ["exec1.mini.test", "exec2.mini.test"])], {}


def test_push_retries_the_nodes_it_missed_until_they_are_reached(tmp_path):
    store = LateCreddStore()
    b, ccdir = pushing_bridge(tmp_path, store, push_retry_min=0.01, push_retry_max=0.02)
    b.store("alice", put_cache(ccdir))
    assert _wait(lambda: len(store.calls) == 3)
    assert store.calls == [None, ["exec2.mini.test"], ["exec2.mini.test"]]
    assert _wait(lambda: b.state("alice")["push_error"] is None)
    assert b.state("alice")["pushed_to"] == ["exec1.mini.test", "exec2.mini.test"]


def test_push_retries_stop_for_a_newer_login_and_at_the_time_limit(tmp_path):
    store = PushingStore()  # exec9 never answers
    b, ccdir = pushing_bridge(tmp_path, store, push_retry_min=0.01, push_retry_max=0.01,
                              push_retry_for=0.1)
    b.store("alice", put_cache(ccdir))
    time.sleep(0.3)
    n = len(store.pushed)
    assert 2 <= n <= 12, n  # retried, then gave up within push_retry_for
    time.sleep(0.1)
    assert len(store.pushed) == n
    assert "exec9" in b.state("alice")["push_error"]
    b.push_retry_for = 60
    b.store("alice", put_cache(ccdir, name="krb5cc_2001_2"))
    b.store("alice", put_cache(ccdir, name="krb5cc_2001_3"))  # newer login: the older push stops
    time.sleep(0.1)
    b.close()
    time.sleep(0.05)
    m = len(store.pushed)
    time.sleep(0.1)
    assert len(store.pushed) == m  # close() stops the retries
