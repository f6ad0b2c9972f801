"""Parsing Slurm 24.11 JSON (captured from the mini site's cluster, tests/unit/data/slurm_*.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from appliance.hub.scheduler.base import DONE, HELD, PENDING, RUNNING
from appliance.hub.scheduler.slurm.cluster import (
    as_list, expand_hostlist, gpu_count, num, parse_nodes, parse_partitions, parse_reservations,
)
from appliance.hub.scheduler.slurm.jobs import JobMeta, job_status, parse_jobs

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_numbers_and_lists():
    assert num({"set": True, "infinite": False, "number": 10080}) == 10080
    assert num({"set": False, "infinite": False, "number": 0}) is None
    assert num({"set": False, "infinite": True, "number": 0}) == math.inf
    assert num(7) == 7 and num(None) is None and num(True) is None
    assert as_list("a,b") == ["a", "b"] and as_list("") == [] and as_list(["X"]) == ["X"]
    assert as_list("(null)") == []


@pytest.mark.parametrize("text,names", [
    ("node1", ["node1"]),
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("node[1-2,5],gpu01", ["node1", "node2", "node5", "gpu01"]),
    ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("", []),
    ("(null)", []),
    ("node[3-1]", ["node[3-1]"]),  # not a hostlist Slurm writes: the name as it is
])
def test_hostlist(text, names):
    assert expand_hostlist(text) == names


def test_gpu_count():
    assert gpu_count("gpu:2") == 2
    assert gpu_count("gpu:a100:4(S:0-1),shard:8") == 4
    assert gpu_count("") == 0 and gpu_count("shard:8") == 0


def test_partitions():
    parts = parse_partitions(load("slurm_partitions.json"))
    assert set(parts) == {"jhub", "maxwell", "upex", "all"}
    jhub = parts["jhub"]
    assert jhub.nodes == ["node1", "node2"]
    assert jhub.oversubscribe == "force:40"
    assert jhub.max_time_min == 7 * 24 * 60 and jhub.default_time_min == 7 * 24 * 60
    assert jhub.alloc_nodes == ["appliance", "appliance.mini.test", "slurmctld", "slurmctld.mini.test"]
    assert jhub.allow_groups is None and jhub.tier == 100 and jhub.state == "UP"
    assert parts["maxwell"].oversubscribe == "exclusive" and parts["maxwell"].alloc_nodes is None
    assert parts["upex"].allow_groups == ["upex"]
    assert parts["all"].nodes == ["node1", "node2", "node3"] and parts["all"].oversubscribe == "no"
    assert parts["all"].max_time_min == 24 * 60 and parts["all"].tier == 1


def test_nodes():
    nodes = parse_nodes(load("slurm_nodes.json"))
    assert nodes["node1"].features == ["epyc", "avx512"] and nodes["node1"].usable
    assert nodes["node2"].states == ["MIXED", "RESERVED"] and nodes["node2"].usable
    assert nodes["node3"].gpus == 2 and nodes["node3"].features == ["gpu"]
    assert nodes["node3"].address == "node3.mini.test"
    assert nodes["node3"].cpus == 8 and nodes["node3"].memory_mb == 16000
    assert nodes["node3"].partitions == ["maxwell", "upex", "all"]


def test_drained_node():
    nodes = parse_nodes(load("slurm_nodes_drained.json"))
    n1 = nodes["node1"]
    assert n1.states == ["MIXED", "DRAIN"] and not n1.usable
    assert n1.describe_state() == "draining (disk replacement)"


def test_reservations():
    r = parse_reservations(load("slurm_reservations.json"))["belle2"]
    assert r.nodes == ["node2"] and r.groups == ["belle2"] and r.users == []
    assert r.end - r.start == 24 * 3600 and r.core_count == 8
    assert "IGNORE_JOBS" in r.flags
    assert r.active(r.start + 1) and not r.active(r.end)
    assert parse_reservations({"reservations": []}) == {}


def test_squeue_mixed_states():
    jobs = parse_jobs(load("slurm_squeue_mixed.json"), known_nodes={"node1": "node1.mini.test"})
    metas = {k: v.detail for k, v in jobs.items()}
    assert jobs["6"].state == RUNNING and jobs["6"].host == "node1.mini.test" and jobs["6"].owner == "alice"
    # a node Slurm's node list lacks: no route, and the status says why
    assert jobs["1"].state == RUNNING and jobs["1"].host is None
    assert "'node3' is not one of the nodes Slurm lists" in jobs["1"].host_error
    assert jobs["11"].state == RUNNING and metas["11"].reservation == "belle2"
    assert jobs["2"].state == PENDING and jobs["2"].reason == "Resources" and jobs["2"].host is None
    assert jobs["5"].reason == "Priority"
    assert jobs["3"].reason == "BeginTime"  # an "all" job requeued by preemption
    assert jobs["10"].reason == ("Resources: Nodes required for job are DOWN, DRAINED or reserved "
                                 "for jobs in higher priority partitions")
    assert jobs["13"].state == HELD and jobs["13"].reason == "JobHeldUser"
    assert metas["10"].partition == "upex" and metas["10"].state_reason == "Resources"


def test_squeue_filter_by_job_name():
    jobs = parse_jobs(load("slurm_squeue_states_all.json"), job_name="jupyterhub")
    assert set(jobs) == {"20", "21", "22", "23", "24"}
    jobs = parse_jobs(load("slurm_squeue_mixed.json"), job_name="jupyterhub")
    assert jobs == {}


def test_squeue_finished_jobs():
    jobs = parse_jobs(load("slurm_squeue_states_all.json"))
    assert jobs["20"].state == DONE and jobs["20"].reason == "FAILED: NonZeroExitCode (exit code 3)"
    assert jobs["21"].state == DONE and jobs["21"].reason == "COMPLETED (exit code 0)"
    assert jobs["22"].state == DONE and jobs["22"].reason == "PREEMPTED (signal TERM)"
    assert jobs["22"].host is None
    assert jobs["24"].state == RUNNING and jobs["24"].owner == "bob"


def test_squeue_drained_pending_reason():
    jobs = parse_jobs(load("slurm_squeue_drained.json"))
    metas = {k: v.detail for k, v in jobs.items()}
    assert jobs["19"].state == PENDING
    assert jobs["19"].reason == "ReqNodeNotAvail, May be reserved for other job"
    assert metas["19"].state_reason == "ReqNodeNotAvail" and metas["19"].partition == "jhub"


def test_job_state_flags():
    base = {"job_id": 5, "name": "jupyterhub", "user_name": "alice", "nodes": "node[1-2]",
            "state_reason": "None", "exit_code": {"return_code": {"set": True, "number": 0},
                                                   "signal": {"name": ""}}}
    assert job_status({**base, "job_state": ["RUNNING", "COMPLETING"]}).state == DONE
    assert job_status({**base, "job_state": ["RUNNING"]}, {"node1": "node1"}).host == "node1"
    assert job_status({**base, "job_state": ["RUNNING"]}).host is None  # nodes not known yet
    assert job_status({**base, "job_state": ["SUSPENDED"]}).state == HELD
    assert job_status({**base, "job_state": ["PENDING", "REQUEUED"]}).state == PENDING
    assert job_status({**base, "job_state": ["PENDING"], "state_reason": "JobHeldAdmin"}).state == HELD
    assert job_status({**base, "job_state": "TIMEOUT"}).reason == "TIMEOUT (exit code 0)"


def test_job_details_travel_with_the_status():
    # everything fatal_reason needs is in the status itself, nothing stays behind in a scheduler
    jobs = parse_jobs(load("slurm_squeue_drained.json"))
    meta = jobs["19"].detail
    assert (meta.user, meta.partition, meta.reservation, meta.features, meta.state_reason) == (
        "alice", "jhub", "", "", "ReqNodeNotAvail")
    # and what the pending page shows: Slurm's priority and submit time (queue position)
    assert meta.priority == 1 and meta.submit_time and meta.submit_time > 1.7e9
    assert all(isinstance(j.detail, JobMeta) for j in jobs.values())
