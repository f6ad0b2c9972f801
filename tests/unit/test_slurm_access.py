"""Who may use which partition/reservation, check_request's refusals, runtimes, fail-fast.

Cluster state: the mini site's real JSON (tests/unit/data): jhub = node[1-2] (node2 reserved
for group belle2 by reservation "belle2"), maxwell = node[2-3], upex = node3 (group upex),
all = node[1-3]; node3 has 2 GPUs and feature gpu, node1 epyc+avx512, node2 epyc.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.hub.scheduler.base import PENDING, RUNNING, JobStatus
from appliance.hub.scheduler.slurm import SlurmScheduler
from appliance.hub.scheduler.slurm.access import Identity, partition_access, reservation_access
from appliance.hub.scheduler.slurm.cluster import (
    ClusterInfo, Reservation, parse_nodes, parse_partitions, parse_reservations,
)
from appliance.hub.scheduler.slurm.jobs import JobMeta, parse_jobs
from appliance.options import Bounds, OptionsError, validate_options

DATA = Path(__file__).parent / "data"
NOW = 1795650600.0  # when the data was captured (reservation belle2 active for ~24 h)
HOSTS = ["appliance", "appliance.mini.test"]

ALICE = Identity("alice", frozenset({"alice"}))
BOB = Identity("bob", frozenset({"bob", "upex"}))
CAROL = Identity("carol", frozenset({"carol", "belle2"}))


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def cluster(nodes: str = "slurm_nodes.json") -> ClusterInfo:
    return ClusterInfo(parse_partitions(load("slurm_partitions.json")), parse_nodes(load(nodes)),
                       parse_reservations(load("slurm_reservations.json")), NOW)


def sched() -> SlurmScheduler:
    return SlurmScheduler(submit_hosts=HOSTS, clock=lambda: NOW)


def opts(**kw):
    return validate_options({"backend": "slurm", **kw}, Bounds(max_gpus=2, max_cpus=16))


def check(who: Identity, c: ClusterInfo | None = None, **kw) -> None:
    sched().check_against(c or cluster(), who, opts(**kw), NOW)


# -- access rules ----------------------------------------------------------------------------
def test_partition_groups():
    parts = cluster().partitions
    assert partition_access(parts["upex"], BOB, HOSTS) is None
    assert "upex" in partition_access(parts["upex"], ALICE, HOSTS)
    assert partition_access(parts["jhub"], ALICE, HOSTS) is None


def test_partition_alloc_nodes():
    jhub = cluster().partitions["jhub"]
    assert partition_access(jhub, ALICE, ["login1", "login1.example.org"]) is not None
    assert partition_access(jhub, ALICE, ["appliance"]) is None


def test_partition_accounts():
    p = cluster().partitions["maxwell"]
    p.allow_accounts = ["exfel"]
    assert partition_access(p, ALICE, HOSTS) is None  # accounts unknown: Slurm decides
    assert partition_access(p, Identity("alice", frozenset(), frozenset({"it"})), HOSTS)
    assert partition_access(p, Identity("bob", frozenset(), frozenset({"exfel"})), HOSTS) is None
    p.allow_accounts, p.deny_accounts = None, ["it"]
    assert partition_access(p, Identity("alice", frozenset(), frozenset({"it"})), HOSTS)


def test_reservation_rules():
    belle2 = cluster().reservations["belle2"]
    assert reservation_access(belle2, CAROL) and not reservation_access(belle2, ALICE)
    r = Reservation("r", ["node1"], ["alice", "bob"], [], [], 0, 1e12, [])
    assert reservation_access(r, ALICE) and not reservation_access(r, CAROL)
    r = Reservation("r", ["node1"], ["-alice"], [], [], 0, 1e12, [])
    assert not reservation_access(r, ALICE) and reservation_access(r, BOB)
    r = Reservation("r", ["node1"], ["alice"], [], ["exfel"], 0, 1e12, [])
    assert not reservation_access(r, Identity("alice", frozenset(), frozenset({"it"})))
    assert reservation_access(r, Identity("alice", frozenset(), frozenset({"exfel"})))


# -- check_request ---------------------------------------------------------------------------
def test_default_request_ok():
    check(ALICE)
    check(ALICE, cpus=8, memory_gb=15.0, constraint="epyc & avx512")


def test_upex_for_bob_only():
    check(BOB, partition="upex")
    with pytest.raises(OptionsError) as e:
        check(ALICE, partition="upex")
    assert e.value.field == "partition" and "upex" in str(e.value)


def test_unknown_partition():
    with pytest.raises(OptionsError) as e:
        check(ALICE, partition="nosuch")
    assert "jhub" in str(e.value) and "upex" not in str(e.value)  # lists only what alice may use


def test_reservation_for_carol_only():
    check(CAROL, reservation="belle2")
    with pytest.raises(OptionsError) as e:
        check(ALICE, reservation="belle2")
    assert e.value.field == "reservation"
    with pytest.raises(OptionsError) as e:
        check(CAROL, reservation="nosuch")
    assert e.value.field == "reservation"


def test_reservation_outside_partition():
    check(CAROL, reservation="belle2", partition="all")  # node2 is in "all" too: fine
    # a partition without node2 is not:
    c = cluster()
    c.partitions["all"].nodes = ["node1", "node3"]
    with pytest.raises(OptionsError) as e:
        check(CAROL, c, reservation="belle2", partition="all")
    assert "jhub" in str(e.value) and "maxwell" in str(e.value)


def test_future_reservation_refused():
    c = cluster()
    c.reservations["belle2"].start = NOW + 3600
    with pytest.raises(OptionsError) as e:
        check(CAROL, c, reservation="belle2")
    assert "starts only" in str(e.value)


def test_unknown_feature_refused():
    with pytest.raises(OptionsError) as e:
        check(ALICE, constraint="epyc & nosuch")
    assert e.value.field == "constraint" and "nosuch" in str(e.value)
    with pytest.raises(OptionsError) as e:  # a known feature, but not in this partition
        check(ALICE, constraint="gpu")
    assert "gpu" in str(e.value) and "maxwell" in str(e.value)


def test_gpus_cpus_memory():
    check(BOB, partition="upex", gpus=2)
    with pytest.raises(OptionsError) as e:
        check(ALICE, gpus=1)
    assert e.value.field == "gpus" and "maxwell" in str(e.value)
    with pytest.raises(OptionsError) as e:
        check(ALICE, cpus=9)
    assert e.value.field == "cpus"
    with pytest.raises(OptionsError) as e:
        check(ALICE, memory_gb=16.0)
    assert e.value.field == "memory_gb"


def test_all_jhub_nodes_unusable_for_alice():
    # node1 drained + node2 reserved for belle2: alice has no jhub node; carol (member) still one
    c = cluster("slurm_nodes_drained.json")
    with pytest.raises(OptionsError) as e:
        check(ALICE, c)
    msg = str(e.value)
    assert e.value.field == "partition"
    assert "node1: draining (disk replacement)" in msg and "node2: reserved (belle2)" in msg
    assert "Try partition maxwell or all" in msg
    check(CAROL, c, reservation="belle2")


def test_drained_everywhere_suggests_nothing():
    c = cluster("slurm_nodes_drained.json")
    for n in c.nodes.values():
        n.states = ["IDLE", "DRAIN"]
        n.reason = "maintenance"
    with pytest.raises(OptionsError) as e:
        check(BOB, c)
    assert "Try partition" not in str(e.value) and "drained (maintenance)" in str(e.value)


def test_down_node_counts_as_unusable():
    c = cluster()
    c.nodes["node3"].states = ["DOWN", "NOT_RESPONDING"]
    with pytest.raises(OptionsError) as e:
        check(BOB, c, partition="upex")
    assert "node3: down, not responding" in str(e.value)


# -- runtimes --------------------------------------------------------------------------------
def test_runtime_defaults_and_limits():
    s = sched()
    s._cluster = cluster()
    assert s.runtime_seconds("alice", opts(), 8.0) == 168 * 3600
    assert s.runtime_seconds("alice", opts(partition="maxwell"), 8.0) == 8 * 3600
    assert s.runtime_seconds("alice", opts(partition="maxwell", runtime_hours=2.0), 8.0) == 2 * 3600
    # "all" has MaxTime 1 day in Slurm, so a configured 48 h is capped there
    s.default_runtime_hours_per_partition = {"jhub": 168.0, "all": 48.0}
    assert s.runtime_seconds("alice", opts(partition="all"), 8.0) == 24 * 3600
    with pytest.raises(OptionsError) as e:
        s.check_against(s._cluster, ALICE, opts(partition="maxwell", runtime_hours=9.0), NOW)
    assert e.value.field == "runtime_hours" and "8" in str(e.value)


def test_spawner_default_runtime_where_the_partition_has_none():
    # BatchSpawner.default_runtime_hours (the third argument) is the default in partitions
    # without a configured runtime, capped at fallback_runtime_hours (their maximum); partitions
    # with one keep it (it is their default and their maximum)
    s = sched()
    s._cluster = cluster()
    assert s.runtime_seconds("alice", opts(partition="maxwell"), 4.0) == 4 * 3600
    assert s.runtime_seconds("alice", opts(partition="maxwell"), 12.0) == 8 * 3600
    assert s.runtime_seconds("alice", opts(), 4.0) == 168 * 3600
    assert s.runtime_seconds("alice", opts(partition="maxwell", runtime_hours=6.0), 4.0) == 6 * 3600
    s.fallback_runtime_hours = 24.0
    assert s.runtime_seconds("alice", opts(partition="maxwell"), 12.0) == 12 * 3600
    assert s.runtime_limit_hours(opts(partition="maxwell"))[0] == 24.0
    # and Slurm's MaxTime of the partition ("all": 1 day) caps the spawner's default too
    assert s.runtime_seconds("alice", opts(partition="all"), 30.0) == 24 * 3600


def test_runtime_in_reservation_is_its_remaining_lifetime():
    s = sched()
    c = s._cluster = cluster()
    end = c.reservations["belle2"].end
    hours, why = s.runtime_limit_hours(opts(reservation="belle2", partition="maxwell"), c, NOW)
    assert abs(hours - (end - NOW - 60) / 3600) < 1e-6 and "belle2" in why
    s.check_against(c, CAROL, opts(reservation="belle2", partition="maxwell", runtime_hours=20.0), NOW)
    with pytest.raises(OptionsError):
        s.check_against(c, CAROL, opts(reservation="belle2", runtime_hours=30.0), NOW)


# -- describe / fail fast --------------------------------------------------------------------
async def _describe(who: Identity, c: ClusterInfo):
    s = sched()
    s._cluster = c
    s.resource_cache_seconds = 1e12  # use the captured data, never call Slurm

    async def ident(user):
        return who

    s.identity = ident
    return await s.describe_resources(who.user)


def run(coro):
    import asyncio

    return asyncio.new_event_loop().run_until_complete(coro)


def test_describe_resources_filters_by_group():
    c = cluster()
    c.fetched = 1e18  # never stale
    d = run(_describe(ALICE, c))
    names = [p["name"] for p in d["partitions"]]
    assert names[0] == "jhub" and "upex" not in names and set(names) == {"jhub", "maxwell", "all"}
    assert d["reservations"] == [] and d["features"] == ["avx512", "epyc", "gpu"]
    jhub = d["partitions"][0]
    assert jhub["default"] and jhub["usable_nodes"] == 1 and "node2" in jhub["unusable"]
    assert jhub["max_runtime_hours"] == 168 and not jhub["exclusive"]
    d = run(_describe(CAROL, c))
    assert [r["name"] for r in d["reservations"]] == ["belle2"]
    assert d["reservations"][0]["partitions"] == ["all", "jhub", "maxwell"]
    d = run(_describe(BOB, c))
    upex = [p for p in d["partitions"] if p["name"] == "upex"][0]
    assert upex["exclusive"] and upex["max_gpus_per_node"] == 2 and upex["max_runtime_hours"] == 8


def test_fatal_reason_when_partition_has_no_usable_node():
    s = sched()
    s._cluster = cluster("slurm_nodes_drained.json")
    statuses = parse_jobs(load("slurm_squeue_drained.json"))
    s._identities["alice"] = (1e18, ALICE)
    msg = s.fatal_reason(statuses["19"])  # alice's jhub job, pending ReqNodeNotAvail
    assert msg and "no node of partition jhub" in msg and "node1: draining" in msg
    assert "Try partition maxwell or all" in msg
    # pending for busy (but usable) nodes is not fatal
    s._identities["bob"] = (1e18, BOB)
    assert s.fatal_reason(statuses["2"]) is None  # bob, maxwell, Resources
    assert s.fatal_reason(statuses["6"]) is None  # running
    # with every node usable again, nothing is fatal
    s._cluster = cluster()
    assert s.fatal_reason(statuses["19"]) is None


def test_fatal_pending_reasons():
    s = sched()
    down = JobMeta("alice", "jhub", "", "", "PartitionDown")
    msg = s.fatal_reason(JobStatus("7", PENDING, None, "PartitionDown", detail=down))
    assert msg and "partition is down" in msg
    prio = JobMeta("alice", "jhub", "", "", "Priority")
    assert s.fatal_reason(JobStatus("7", PENDING, None, "Priority", detail=prio)) is None  # no cluster info
    assert s.fatal_reason(JobStatus("7", RUNNING, "node1", "", detail=down)) is None
    # a status without Slurm's details (e.g. from another backend) is never judged
    assert s.fatal_reason(JobStatus("7", PENDING, None, "PartitionDown")) is None


def test_query_all_leaves_no_job_state_behind():
    # fatal_reason is a function of the status and the cached cluster view: a second scheduler
    # with the same cluster view, which never ran query_all, judges a status the same way
    statuses = parse_jobs(load("slurm_squeue_drained.json"))
    judges = []
    for _ in range(2):
        s = sched()
        s._cluster = cluster("slurm_nodes_drained.json")
        s._identities["alice"] = (1e18, ALICE)
        judges.append(s)

    async def squeue(*argv):
        assert argv[1:] == ("--json", "--states=all", "--name=wrap")
        return load("slurm_squeue_drained.json")

    judges[0]._json = squeue
    judges[0].job_name = "wrap"  # the captured jobs' name
    seen = run(judges[0].query_all())
    assert seen["19"] == statuses["19"]
    assert judges[0].fatal_reason(seen["19"]) == judges[1].fatal_reason(statuses["19"])
    assert "no node of partition jhub" in judges[1].fatal_reason(statuses["19"])
    assert not hasattr(judges[0], "_metas")
