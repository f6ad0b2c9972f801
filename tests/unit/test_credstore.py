"""appliance.credd_bridge.credstore against a fake pool that behaves like htcondor2 25.x and the
23.9 credds where it matters for the push of a re-login's ticket to running jobs:

* ``Collector.locate(Credd, name)`` returns ``None`` when the collector lists no credd of that
  name (a node's credd whose collector update failed, or that is down), and ``Credd(None)`` is
  the DEFAULT credd (``CREDD_HOST``: the lane);
* every credd has its own directory: ADD writes ``<user>.cred``, the credmon makes ``.cc`` a
  moment later; QUERY answers the ``.cc`` mtime in whole seconds.

This is the cause of the re-login push race (issue 15): the push to a node whose credd was not
(yet) in the collector went to the lane's credd, and the lane's fresh ``.cc`` "confirmed" it.
"""

from __future__ import annotations

import threading
import time

import pytest

from appliance.credd_bridge.credstore import HTCondorCredStore


class Node:
    def __init__(self, name: str, lag: float = 0.05):
        self.name = name
        self.lag = lag
        self.cred: dict[str, bytes] = {}
        self.cc: dict[str, tuple[bytes, float]] = {}
        self.adds: list[str] = []

    def add(self, user: str, data: bytes) -> None:
        self.adds.append(user)
        self.cred[user] = data
        t = threading.Timer(self.lag, self._credmon, args=(user, data))
        t.daemon = True
        t.start()

    def _credmon(self, user, data):
        self.cc[user] = (data, time.time())

    def query(self, user: str):
        if user in self.cc:
            return int(self.cc[user][1])
        return 6 if user in self.cred else None  # SUCCESS_PENDING: .cred, no .cc yet


class Pool:
    """A fake ``htcondor2`` module: one lane credd (CREDD_HOST) and execute-node credds."""

    class CredType:
        Kerberos = 32

    class DaemonType:
        Credd = "Credd"
        Schedd = "Schedd"

    class AdTypes:
        Startd = "Startd"

    def __init__(self):
        self.param = {"UID_DOMAIN": "mini.test", "CREDD_HOST": "lane.mini.test"}
        self.nodes = {n: Node(n) for n in ("lane.mini.test", "exec1.mini.test", "exec2.mini.test")}
        self.advertised = set(self.nodes)
        self.job_hosts: list[str] = []  # slot names of the user's running jobs 1.0, 2.0, ...
        self.job_owner = "alice"
        self.remote_host = None  # what the job ads' RemoteHost say (the owner may edit it)
        pool = self

        class Collector:
            def locate(self, dtype, name=None):
                if dtype == Pool.DaemonType.Schedd:
                    return {"Name": name or "lane.mini.test", "MyAddress": "<schedd>"}
                name = name or pool.param["CREDD_HOST"]
                if name not in pool.advertised:
                    return None  # what htcondor2 25.x does for an unknown name
                return {"Name": name, "MyAddress": f"<{name}>"}

            def locateAll(self, dtype):
                return [{"Name": n, "MyAddress": f"<{n}>"} for n in sorted(pool.advertised)]

            def query(self, adtype, constraint, projection):
                # the startds' slot ads: the record the hub and the bridge read the host from
                assert adtype == Pool.AdTypes.Startd
                return [{"Name": h, "Machine": h.split("@")[1], "JobId": f"{i + 1}.0",
                         "GlobalJobId": f"lane.mini.test#{i + 1}.0#1700000000",
                         "RemoteUser": f"{pool.job_owner}@mini.test"}
                        for i, h in enumerate(pool.job_hosts)]

        class Credd:
            def __init__(self, ad=None):
                if ad is None:  # the default credd, as htcondor2.Credd(None)
                    ad = Collector().locate(Pool.DaemonType.Credd)
                self._addr = ad["MyAddress"]
                self.node = pool.nodes[ad["Name"]]

            def add_user_cred(self, credtype, data, user):
                self.node.add(user, data)

            def query_user_cred(self, credtype, user):
                return self.node.query(user)

        class Schedd:
            def __init__(self, ad):
                pass

            def query(self, constraint, projection):
                return [{"ClusterId": i + 1, "ProcId": 0,
                         "RemoteHost": pool.remote_host or h}
                        for i, h in enumerate(pool.job_hosts)]

        self.Collector, self.Credd, self.Schedd = Collector, Credd, Schedd


def test_push_reaches_the_nodes_own_credd():
    pool = Pool()
    pool.job_hosts = ["slot1_1@exec1.mini.test"]
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01)
    done, errors = s.push_running("alice", b"new")
    assert (done, errors) == (["exec1.mini.test"], {})
    assert pool.nodes["exec1.mini.test"].cred["alice@mini.test"] == b"new"
    assert pool.nodes["lane.mini.test"].adds == []


def test_push_follows_the_slot_not_the_editable_job_ad():
    """The job's owner can condor_qedit RemoteHost; the bridge reads the startd's slot ad."""
    pool = Pool()
    pool.job_hosts = ["slot1_1@exec1.mini.test"]
    pool.remote_host = "slot1_1@exec2.mini.test"  # edited by the owner
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01)
    assert s.push_running("alice", b"new") == (["exec1.mini.test"], {})
    assert pool.nodes["exec2.mini.test"].adds == []


def test_a_slot_running_the_job_for_someone_else_gets_nothing():
    pool = Pool()
    pool.job_hosts = ["slot1_1@exec1.mini.test"]
    pool.job_owner = "mallory"
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01)
    assert s.push_running("alice", b"new") == ([], {})
    assert pool.nodes["exec1.mini.test"].adds == []


def test_push_to_a_node_whose_credd_the_collector_does_not_list_is_an_error_not_the_lane():
    """The reproduction of the race: exec1's credd is missing from the collector (its first
    update failed at start; CREDD_UPDATE_INTERVAL is 5 min by default)."""
    pool = Pool()
    pool.advertised.discard("exec1.mini.test")
    pool.job_hosts = ["slot1_1@exec1.mini.test"]
    lane = pool.nodes["lane.mini.test"]
    lane.add("alice@mini.test", b"new")  # the login's own store, a moment before the push
    time.sleep(0.1)
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=0.5)
    done, errors = s.push_running("alice", b"new")
    assert done == []
    assert "exec1.mini.test" in errors and "collector" in errors["exec1.mini.test"]
    assert lane.adds == ["alice@mini.test"]  # nothing misdirected to the lane
    assert pool.nodes["exec1.mini.test"].cred == {}


def test_a_located_credd_of_another_name_is_refused():
    pool = Pool()
    pool.job_hosts = ["slot1_1@exec1.mini.test"]
    real_locate = pool.Collector.locate
    pool.Collector.locate = lambda self, dtype, name=None: real_locate(
        self, dtype, "exec2.mini.test" if name == "exec1.mini.test" else name)
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01)
    done, errors = s.push_running("alice", b"new")
    assert done == [] and "exec2.mini.test" in errors["exec1.mini.test"]
    assert pool.nodes["exec2.mini.test"].adds == []


def test_the_main_credd_must_be_listed_too():
    pool = Pool()
    pool.advertised.discard("lane.mini.test")
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=0.3)
    with pytest.raises(RuntimeError, match="lists no credd named lane.mini.test"):
        s.put("alice", b"x")


def test_push_only_to_the_given_hosts_that_still_run_jobs():
    pool = Pool()
    pool.job_hosts = ["slot1_1@exec1.mini.test", "slot1_1@exec2.mini.test"]
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01)
    done, errors = s.push_running("alice", b"new", hosts=["exec2.mini.test", "exec9.mini.test"])
    assert (done, errors) == (["exec2.mini.test"], {})
    assert pool.nodes["exec1.mini.test"].adds == []


# ---------------------------------------------------------------- a .cc dated ahead of the clock
class AheadNode(Node):
    """A credd as 23.9's ``store_cred`` is with SEC_CREDENTIAL_REFRESH_INTERVAL = 0: an ADD while
    the ``.cc`` mtime is in the future is skipped (answered with that mtime, nothing written).
    Its credmon dates every new ``.cc`` into the whole second after the old one, as ours does."""

    def add(self, user: str, data: bytes):
        if user in self.cc and int(time.time()) - int(self.cc[user][1]) < 0:  # whole seconds
            self.adds.append(f"skipped {user}")
            return int(self.cc[user][1])
        super().add(user, data)
        return 1  # SUCCESS

    def _credmon(self, user, data):
        old = self.cc.get(user)
        now = time.time()
        self.cc[user] = (data, max(now, int(old[1]) + 1) if old else now)


def ahead_pool(direct: bool) -> tuple[Pool, AheadNode]:
    pool = Pool()
    lane = pool.nodes["lane.mini.test"] = AheadNode("lane.mini.test", lag=0.02)
    if direct:  # htcondor2's own call, which answers a skipped store with the .cc mtime
        def store(addr, user, data, mode, *rest):
            node = pool.nodes[addr.strip("<>")]
            return node.query(user) if data is None else node.add(user, data)
        pool._credd_do_store_cred = store
    return pool, lane


@pytest.mark.parametrize("direct", [False, True], ids=["add_user_cred", "direct store"])
def test_a_store_while_the_cc_is_dated_ahead_is_not_lost(direct):
    """A renewal's .cc dated into the next second, then a re-login's store in that second: the
    new ticket must reach the credd (it was silently dropped before: make test, issue 15)."""
    pool, lane = ahead_pool(direct)
    user = "alice@mini.test"
    lane.cc[user] = (b"renewed", time.time() + 0.6)  # the credmon's mark: ahead of the clock
    lane.cred[user] = b"renewed"
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=3)
    s.put("alice", b"relogin")
    assert lane.cred[user] == b"relogin"
    assert lane.cc[user][0] == b"relogin"  # confirmed only once the credmon had the new one


def test_a_store_the_credd_skipped_after_all_is_repeated():
    """The credmon dated .cc ahead between the bridge's look and its store (a renewal pass of
    its own): the credd answers with the mtime, the store is made again after it."""
    pool, lane = ahead_pool(direct=True)
    user = "alice@mini.test"
    lane.cc[user] = (b"old", time.time() - 5)
    lane.cred[user] = b"old"
    real = pool._credd_do_store_cred

    def racing(addr, u, data, mode, *rest):
        if data is not None and not lane.adds:  # the credmon's own renewal, just before
            lane.cc[u] = (b"renewed", int(time.time()) + 1)
        return real(addr, u, data, mode, *rest)

    pool._credd_do_store_cred = racing
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=3)
    s.put("alice", b"relogin")
    assert lane.adds == [f"skipped {user}", user]
    assert lane.cred[user] == b"relogin" and lane.cc[user][0] == b"relogin"


def test_a_credd_whose_cc_never_moves_is_an_error():
    pool, lane = ahead_pool(direct=True)
    lane._credmon = lambda user, data: None  # a credmon that is not running
    user = "alice@mini.test"
    lane.cc[user] = (b"old", time.time() - 5)
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=0.3)
    with pytest.raises(RuntimeError, match="did not confirm"):
        s.put("alice", b"new")
    assert lane.cred[user] == b"new"


def test_a_store_whose_credmon_wakeup_is_lost_is_made_again():
    """The credd wrote the store but its credmon never looked (the wakeup lost): after
    ``restore_after`` the bridge stores again, and that store is confirmed."""
    pool, lane = ahead_pool(direct=True)
    user = "alice@mini.test"
    lane.cc[user] = (b"old", time.time() - 5)
    lane.cred[user] = b"old"
    real_credmon, lost = lane._credmon, []

    def once_deaf(u, data):
        if not lost:
            lost.append(u)  # the first wakeup goes nowhere
            return
        real_credmon(u, data)
    lane._credmon = once_deaf
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=3,
                          restore_after=0.3)
    t0 = time.monotonic()
    s.put("alice", b"new")
    assert lane.adds == [user, user] and lane.cc[user][0] == b"new"
    assert 0.3 <= time.monotonic() - t0 < 2.0


def test_a_confirmed_store_is_made_once():
    pool, lane = ahead_pool(direct=True)
    s = HTCondorCredStore("lane.mini.test", module=pool, poll=0.01, confirm_timeout=3,
                          restore_after=0.3)
    s.put("alice", b"new")
    assert lane.adds == ["alice@mini.test"]
