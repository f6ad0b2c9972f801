"""appliance.hub.metrics: recorded metrics, scrape-time collectors (fake watchers/bridge only)."""

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.hub import metrics as M
from appliance.hub.scheduler.base import JobStatus


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def value(reg, name, **labels):
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


@pytest.fixture
def reg():
    return CollectorRegistry()


@pytest.fixture
def m(reg):
    return M.ApplianceMetrics(reg)


def test_names_follow_conventions(reg, m):
    reg.register(M.PendingTracker())
    reg.register(M.SessionsCollector(lambda: {}))
    reg.register(M.CredentialCollector(lambda: None))
    text = generate_latest(reg).decode()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert name.startswith("appliance_")
            if kind == "counter":
                assert f"{name}_total" in text or name.endswith("_total")
            if kind == "histogram":
                assert name.endswith("_seconds"), name


def test_spawn_timer_phases_and_outcome(reg, m):
    clock = Clock()
    tracker = M.PendingTracker(clock)
    t = M.SpawnTimer("htcondor", "lane.mini.test", metrics=m, clock=clock, tracker=tracker)
    with t.phase("submit"):
        clock.t += 0.4
    with t.phase("queue"):
        clock.t += 1.5
        assert list(tracker.collect())[0].samples[0].value == 1  # one pending now
        t.pending_result("running")
    clock.t += 0.1
    assert t.finish("started") == pytest.approx(2.0)
    assert t.finish("failed") is None  # counted once
    lab = dict(backend="htcondor", lane="lane.mini.test")
    assert value(reg, "appliance_spawn_phase_duration_seconds_sum", phase="submit", **lab) == pytest.approx(0.4)
    assert value(reg, "appliance_spawn_phase_duration_seconds_sum", phase="queue", **lab) == pytest.approx(1.5)
    assert value(reg, "appliance_job_pending_seconds_count", result="running", **lab) == 1
    assert value(reg, "appliance_spawn_duration_seconds_count", outcome="started", **lab) == 1
    assert value(reg, "appliance_spawns_total", outcome="started", cause="none", **lab) == 1
    assert value(reg, "appliance_spawns_total", outcome="failed", cause="none", **lab) == 0
    assert list(tracker.collect())[0].samples == []  # nothing pending any more


def test_failure_cause_defaults_to_open_phase(reg, m):
    t = M.SpawnTimer("slurm", "jhub", metrics=m, clock=Clock(), tracker=M.PendingTracker())
    with pytest.raises(RuntimeError):
        with t.phase("submit"):
            t.finish("failed")  # inside the phase: the phase is the cause
            raise RuntimeError
    assert value(reg, "appliance_spawns_total", backend="slurm", lane="jhub", outcome="failed",
                 cause="submit") == 1
    t = M.SpawnTimer("slurm", "jhub", metrics=m, clock=Clock(), tracker=M.PendingTracker())
    with pytest.raises(OSError):
        with t.phase("queue"):
            raise OSError("job vanished")
    t.finish("failed")  # after the phase closed: the phase the exception left
    assert value(reg, "appliance_spawns_total", backend="slurm", lane="jhub", outcome="failed",
                 cause="queue") == 1
    with pytest.raises(ValueError):
        M.SpawnTimer("slurm", metrics=m).finish("exploded")
    with pytest.raises(ValueError):
        with M.SpawnTimer("slurm", metrics=m).phase("coffee"):
            pass


def test_label_values_are_bounded(reg, m):
    assert M.code("Held: Job (42) by Admin!") == "held_job_42_by_admin"
    assert len(M.code("x" * 100)) == 40
    assert M.lane_label("lane.mini.test") == "lane.mini.test"
    assert M.lane_label("") == "default"
    for i in range(M.MAX_CAUSES + 10):
        M.record_refused("slurm", f"field{i}", metrics=m)
    causes = {s.labels["cause"] for fam in reg.collect() if fam.name == "appliance_spawns"
              for s in fam.samples}
    assert len(causes) == M.MAX_CAUSES + 1 and "other" in causes


def test_refused_and_queries(reg, m):
    M.record_refused("slurm", "partition", metrics=m)
    assert value(reg, "appliance_spawns_total", backend="slurm", lane="default",
                 outcome="refused", cause="partition") == 1
    clock = Clock()
    with M.time_query("slurm", "squeue", metrics=m, clock=clock):
        clock.t += 0.2
    with pytest.raises(OSError):
        with M.time_query("slurm", "squeue", metrics=m, clock=clock):
            raise OSError("slurmctld down")
    assert value(reg, "appliance_scheduler_query_duration_seconds_count", backend="slurm",
                 query="squeue", result="ok") == 1
    assert value(reg, "appliance_scheduler_query_errors_total", backend="slurm", query="squeue") == 1
    M.observe_bridge_request("refresh", 0.05, "refused", metrics=m)
    assert value(reg, "appliance_bridge_request_duration_seconds_count", op="refresh",
                 result="refused") == 1


def test_sessions_from_watchers_cache(reg):
    slurm = SimpleNamespace(name="slurm")
    part = {p: SimpleNamespace(partition=p) for p in ("jhub", "upex")}
    condor = SimpleNamespace(name="htcondor", schedd="lane.mini.test")
    clock = Clock(500.0)
    watchers = {
        "slurm": SimpleNamespace(scheduler=slurm, updated=490.0, last_error=None, queries=7, jobs={
            "1": JobStatus("1", "running", "node1", detail=part["jhub"]),
            "2": JobStatus("2", "pending", detail=part["upex"]),
            "3": JobStatus("3", "running", "node2", detail=part["jhub"]),
            "4": JobStatus("4", "done", detail=part["jhub"])}),
        "htcondor": SimpleNamespace(scheduler=condor, updated=0.0, last_error="schedd down",
                                    queries=0, jobs={"9.0": JobStatus("9.0", "held")}),
    }
    reg.register(M.SessionsCollector(lambda: watchers, clock=clock))
    assert value(reg, "appliance_sessions", backend="slurm", lane="jhub", state="running") == 2
    assert value(reg, "appliance_sessions", backend="slurm", lane="upex", state="pending") == 1
    assert value(reg, "appliance_sessions", backend="htcondor", lane="lane.mini.test", state="held") == 1
    assert reg.get_sample_value("appliance_sessions", {"backend": "slurm", "lane": "default",
                                                       "state": "done"}) is None
    assert value(reg, "appliance_scheduler_up", backend="slurm") == 1
    assert value(reg, "appliance_scheduler_up", backend="htcondor") == 0
    assert value(reg, "appliance_scheduler_answer_age_seconds", backend="slurm") == 10
    assert value(reg, "appliance_scheduler_status_queries_total", backend="slurm") == 7


def test_credentials_from_bridge_states(reg):
    clock = Clock(10_000.0)
    answers = [
        {"alice": {"state": "active", "valid_until": 20_000, "last_renewed": 100},
         "bob": {"state": "active", "valid_until": 10_500},  # expiring within the hour
         "carol": {"state": "expired", "valid_until": 9_000}},
        {"alice": {"state": "active", "valid_until": 30_000, "last_renewed": 9_990,
                   "last_pushed": 9_991},
         "bob": {"state": "retrying", "valid_until": 10_500, "error": "KDC unreachable"},
         "carol": {"state": "expired", "valid_until": 9_000}},
    ]

    async def fetch():
        return answers.pop(0)

    col = M.CredentialCollector(fetch, max_age=30, clock=clock)
    reg.register(col)
    assert value(reg, "appliance_bridge_up") == 0  # nothing fetched yet, no loop: no refresh
    asyncio.run(col.refresh())
    assert value(reg, "appliance_credentials", state="active") == 1
    assert value(reg, "appliance_credentials", state="expiring") == 1
    assert value(reg, "appliance_credentials", state="expired") == 1
    assert value(reg, "appliance_bridge_renewals_total", result="ok") == 0  # baseline
    asyncio.run(col.refresh())
    assert value(reg, "appliance_bridge_renewals_total", result="ok") == 1
    assert value(reg, "appliance_bridge_renewals_total", result="failed") == 1
    assert value(reg, "appliance_bridge_pushes_total", result="ok") == 1
    assert value(reg, "appliance_credentials", state="retrying") == 1
    assert value(reg, "appliance_bridge_up") == 1


def test_credential_refresh_runs_in_background_at_scrape():
    calls = []

    async def fetch():
        calls.append(1)
        return {"alice": {"state": "active", "valid_until": 10**10}}

    clock = Clock(0.0)
    col = M.CredentialCollector(fetch, max_age=30, clock=clock)

    async def scrape_twice():
        list(col.collect())  # starts one refresh, does not wait for it
        list(col.collect())  # one in flight: no second
        await col._task
        list(col.collect())  # fresh: none
        clock.t += 31
        list(col.collect())  # stale: another
        await col._task

    asyncio.run(scrape_twice())
    assert len(calls) == 2
    assert col.states["alice"]["state"] == "active"


def test_bridge_failure_marks_down():
    async def fetch():
        raise OSError("no socket")

    col = M.CredentialCollector(fetch, clock=Clock())
    asyncio.run(col.refresh())
    assert not col.ok
