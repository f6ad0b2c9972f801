"""Live availability (appliance.hub.scheduler.availability, appliance.hub.availability): the pure
builder on captured data with a given clock, the shared cache's one-refresh-per-interval rule,
and the answer's JSON schema.

Slurm data: the mini site's real JSON (tests/unit/data, see test_slurm_access): jhub = node[1-2]
(FORCE:40; node2 reserved for group belle2), maxwell = node[2-3] (exclusive), upex = node3
(group upex), all = node[1-3]; node1 has 3 cores allocated, node2 1, node3 all 8 (its 2 GPUs in
use) by a maxwell job ending at 1795686539. HTCondor: slot ads shaped like the lane's (two
partitionable notebook slots of 20 cores, 40 GiB).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from appliance.hub import availability as hub_availability
from appliance.hub.availability_api import load_schema
from appliance.hub.scheduler import availability as A
from appliance.hub.scheduler.slurm.access import Identity
from appliance.hub.scheduler.slurm.cluster import (
    ClusterInfo, parse_nodes, parse_partitions, parse_reservations,
)
from appliance.options import Bounds, OptionsError

DATA = Path(__file__).parent / "data"
NOW = 1795650600.0
HOSTS = ("appliance", "appliance.mini.test")
ALICE = Identity("alice", frozenset({"alice"}))
BOB = Identity("bob", frozenset({"bob", "upex"}))
CAROL = Identity("carol", frozenset({"carol", "belle2"}))
SMALL = A.Size(1, 2048, 0)


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def slurm_view() -> A.SlurmView:
    nodes = load("slurm_nodes.json")
    c = ClusterInfo(parse_partitions(load("slurm_partitions.json")), parse_nodes(nodes),
                    parse_reservations(load("slurm_reservations.json")), NOW)
    return A.SlurmView(c, A.parse_node_use(nodes), A.parse_jobs(load("slurm_squeue_mixed.json")))


def pools(who: Identity, size: A.Size = SMALL) -> dict[str, dict]:
    return {f"{p['kind']}:{p['name']}": p
            for p in A.slurm_pools(slurm_view(), who, NOW, size, HOSTS, first="jhub")}


def slot(machine: str, cpus: int, mem: int, total: int = 20, gpus: int = 0, **kw) -> dict:
    ad = {"Name": f"slot1@{machine}", "Machine": machine, "SlotType": "Partitionable",
          "PartitionableSlot": True, "Cpus": cpus, "Memory": mem, "Disk": 10 * 1024 * 1024,
          "GPUs": gpus, "TotalSlotCpus": total, "TotalSlotMemory": 40960, "TotalSlotGPUs": gpus}
    ad.update(kw)
    return ad


def dynamic(machine: str, n: int) -> dict:
    return {"Name": f"slot1_{n}@{machine}", "Machine": machine, "SlotType": "Dynamic",
            "DynamicSlot": True, "Cpus": 1, "Memory": 2048, "State": "Claimed"}


# ------------------------------------------------------------------------------ Slurm
def test_only_the_partitions_and_reservations_the_user_may_use():
    assert sorted(pools(ALICE)) == ["partition:all", "partition:jhub", "partition:maxwell"]
    assert sorted(pools(BOB)) == ["partition:all", "partition:jhub", "partition:maxwell",
                                  "partition:upex"]
    assert sorted(pools(CAROL)) == ["partition:all", "partition:jhub", "partition:maxwell",
                                    "reservation:belle2"]


def test_the_notebook_partition_comes_first():
    assert A.slurm_pools(slurm_view(), ALICE, NOW, SMALL, HOSTS, first="jhub")[0]["name"] == "jhub"


def test_a_node_reserved_for_others_does_not_count():
    jhub = pools(ALICE)["partition:jhub"]
    assert (jhub["nodes"], jhub["usable_nodes"]) == (2, 1)  # node2 is belle2's
    assert jhub["free_cores"] == 8 - 3 and jhub["total_cores"] == 16  # of both nodes
    assert jhub["largest_free_node"] == "node1"


def test_the_reservation_shows_its_own_nodes_to_its_members():
    resv = pools(CAROL)["reservation:belle2"]
    assert resv["partition"] == "jhub" and resv["usable_nodes"] == 1
    assert resv["free_cores"] == 8 - 1 and resv["largest_free_node"] == "node2"
    assert resv["ends_at"] == 1795736928.0


def test_shared_partition_counts_jobs_per_core():
    # jhub: OverSubscribe=FORCE:40 -> 40 jobs per core of node1, 3 cores' worth in use
    jhub = pools(ALICE)["partition:jhub"]
    assert jhub["fits_now"] == 40 * 8 - 3
    assert pools(ALICE, A.Size(8, 2048))["partition:jhub"]["fits_now"] == (40 * 8 - 3) // 8
    assert jhub["expected_start"]["estimate"] == "now"
    assert jhub["expected_start"]["at"] == NOW
    assert jhub["expected_start"]["text"] == "now (1 job pending here may start first)"


def test_exclusive_partition_needs_an_idle_node_and_estimates_from_time_limits():
    maxwell = pools(ALICE)["partition:maxwell"]  # node3 only (node2 reserved): busy until 1795686539
    assert maxwell["idle_nodes"] == 0 and maxwell["free_cores"] == 0 and maxwell["fits_now"] == 0
    assert maxwell["free_gpus"] == 0
    start = maxwell["expected_start"]
    assert (start["estimate"], start["at"]) == ("after_running_jobs", 1795686539.0)


def test_a_size_no_node_has_never_starts():
    start = pools(ALICE, A.Size(64, 2048))["partition:jhub"]["expected_start"]
    assert start == {"at": None, "estimate": "never", "text": "no usable node here is that large"}


def test_gpus_are_counted_by_type():
    use = A.parse_node_use({"nodes": [{"name": "g1", "alloc_cpus": 0, "alloc_memory": 0,
                                       "gres": "gpu:a100:4(S:0-1),gpu:2,shard:8",
                                       "gres_used": "gpu:a100:1(IDX:0),gpu:0"}]})
    assert use["g1"].gpus == {"a100": 4, "gpu": 2}
    assert use["g1"].free_gpus() == {"a100": 3, "gpu": 2}


def test_gpu_jobs_fit_only_where_gpus_are_free():
    bob = pools(BOB, A.Size(1, 2048, 1))
    assert bob["partition:upex"]["fits_now"] == 0  # node3's GPUs are in use
    assert bob["partition:jhub"]["fits_now"] == 0  # no GPUs there at all
    assert bob["partition:jhub"]["expected_start"]["estimate"] == "never"


def test_a_reservation_not_started_yet_starts_at_its_start():
    v = slurm_view()
    r = v.cluster.reservations["belle2"]
    early = r.start - 3600
    resv = {p["name"]: p for p in A.slurm_pools(v, CAROL, early, SMALL, HOSTS, "jhub")}["belle2"]
    assert resv["usable_nodes"] == 0
    assert resv["expected_start"] == {"at": r.start, "estimate": "reservation_start",
                                      "text": "when the reservation starts"}


# ------------------------------------------------------------------------------ HTCondor
def test_lane_counts_free_notebook_slots_of_the_size():
    ads = [slot("exec1.mini.test", 18, 36864), dynamic("exec1.mini.test", 1),
           dynamic("exec1.mini.test", 2), slot("exec2.mini.test", 20, 40960)]
    lane = A.condor_lane(ads, SMALL, 256, NOW)
    assert lane["fits_now"] == 18 + 20
    assert (lane["nodes"], lane["idle_nodes"]) == (2, 1)
    assert (lane["free_cores"], lane["total_cores"]) == (38, 40)
    assert lane["notebooks_running"] == 2
    assert (lane["largest_free_memory_mb"], lane["largest_free_node"]) == (40960, "exec2.mini.test")
    assert lane["expected_start"]["estimate"] == "now"
    # memory is the limit for big notebooks: 36 GiB / 16 GiB = 2 on exec1, 40/16 = 2 on exec2
    assert A.condor_lane(ads, A.Size(1, 16384), 256, NOW)["fits_now"] == 4


def test_lane_full_has_no_estimate():
    lane = A.condor_lane([slot("exec1.mini.test", 0, 0)], SMALL, 256, NOW)
    assert lane["fits_now"] == 0
    assert lane["expected_start"] == {"at": None, "estimate": "unknown",
                                      "text": "when a notebook ends (HTCondor gives no estimate)"}


def test_lane_disk_and_gpus_limit_too():
    ads = [slot("gpu1", 8, 40960, gpus=2, Disk=600 * 1024, GPUs_DeviceName="Sim GPU")]
    lane = A.condor_lane(ads, SMALL, 256, NOW)
    assert lane["fits_now"] == 2  # 600 MB of disk hold two 256 MB notebooks
    assert lane["free_gpus_by_type"] == {"Sim GPU": 2}
    assert A.condor_lane(ads, A.Size(1, 1024, 1), 256, NOW)["fits_now"] == 2
    assert A.condor_lane(ads, A.Size(1, 1024, 3), 256, NOW)["fits_now"] == 0


# ------------------------------------------------------------------------------ the shared cache
class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.asyncio
async def test_many_requests_cost_one_query_per_interval():
    clock, calls = Clock(), []

    async def fetch():
        calls.append(clock.t)
        await asyncio.sleep(0.01)
        return {"n": len(calls)}

    cache = hub_availability.ViewCache("slurm", fetch, interval=5, wait=1, clock=clock)
    await asyncio.gather(*(cache.get() for _ in range(50)))
    assert len(calls) == 1 and cache.data == {"n": 1} and cache.fetched_at == 1000.0
    clock.t += 4.9
    await asyncio.gather(*(cache.get() for _ in range(50)))
    assert len(calls) == 1
    clock.t += 0.1
    await asyncio.gather(*(cache.get() for _ in range(50)))
    assert len(calls) == 2
    assert cache.status(clock.t + 2)["age_seconds"] == 2.0


@pytest.mark.asyncio
async def test_a_failing_scheduler_keeps_the_old_view_and_is_asked_once_per_interval():
    clock, calls = Clock(), []

    async def fetch():
        calls.append(clock.t)
        if len(calls) > 1:
            raise RuntimeError("squeue timed out")
        return "view"

    cache = hub_availability.ViewCache("slurm", fetch, interval=5, wait=1, clock=clock)
    await cache.get()
    clock.t += 5
    await asyncio.gather(*(cache.get() for _ in range(20)))
    clock.t += 3
    await cache.get()
    assert len(calls) == 2
    st = cache.status(clock.t)
    assert st == {"ok": False, "error": "squeue timed out", "fetched_at": 1000.0,
                  "age_seconds": 8.0, "refresh_seconds": 5}
    assert cache.data == "view"


@pytest.mark.asyncio
async def test_a_slow_scheduler_does_not_hold_the_request():
    clock = Clock()
    gate = asyncio.Event()

    async def fetch():
        await gate.wait()
        return "late"

    cache = hub_availability.ViewCache("htcondor", fetch, interval=5, wait=0.05, clock=clock)
    await cache.get()
    assert cache.data is None
    assert cache.status(clock.t) == {"ok": False, "error": "not queried yet", "fetched_at": None,
                                     "age_seconds": None, "refresh_seconds": 5}
    gate.set()
    await cache.get()
    assert cache.data == "late"


def test_size_comes_from_the_fields_with_the_validators_rules():
    bounds = Bounds(max_cpus=8, max_gpus=2)
    assert hub_availability.size_of({}, bounds) == A.Size(1, 2048, 0)
    assert hub_availability.size_of({"cpus": "4", "memory_gb": "1.5", "gpus": "1"},
                                    bounds) == A.Size(4, 1536, 1)
    with pytest.raises(OptionsError) as e:
        hub_availability.size_of({"cpus": "99"}, bounds)
    assert e.value.field == "cpus"
    with pytest.raises(OptionsError) as e:
        hub_availability.size_of({"memory_gb": "lots"}, bounds)
    assert e.value.field == "memory_gb"


# ------------------------------------------------------------------------------ the answer's schema
class FakeSched:
    request_disk_mb = 256
    submit_hosts = list(HOSTS)
    notebook_partition = "jhub"

    async def identity(self, user):
        return {"bob": BOB, "alice": ALICE}[user]


class FakeRegistry:
    classes = {"htcondor": "x", "slurm": "y"}

    def scheduler(self, name):
        return FakeSched()


@pytest.mark.asyncio
async def test_the_answer_validates_against_the_shipped_schema():
    clock = Clock(NOW)
    av = hub_availability.Availability(FakeRegistry(), clock=clock)
    view = slurm_view()

    async def condor():
        return [slot("exec1.mini.test", 20, 40960)]

    async def slurm():
        raise RuntimeError("slurmctld is down")

    av.cache("htcondor").fetch = condor
    av.cache("slurm").fetch = slurm
    answer = await av.view("bob", A.Size(2, 4096, 0))
    jsonschema.validate(answer, load_schema())
    by = {b["backend"]: b for b in answer["backends"]}
    assert by["htcondor"]["ok"] and by["htcondor"]["pools"][0]["fits_now"] == 10
    assert by["slurm"] == {"backend": "slurm", "label": "SLURM", "ok": False,
                           "error": "slurmctld is down", "fetched_at": None,
                           "age_seconds": None, "refresh_seconds": 5.0, "pools": []}

    async def slurm_ok():
        return view

    av.cache("slurm").fetch = slurm_ok
    av.cache("slurm").attempted_at = -1e18
    answer = await av.view("bob", A.Size(2, 4096, 0))
    jsonschema.validate(answer, load_schema())
    names = [p["name"] for b in answer["backends"] for p in b["pools"]]
    assert names == ["lane", "jhub", "all", "maxwell", "upex"]
