"""Issue 11, pure logic: outcomes and hints, capacity ceilings, the lane's slot view, Slurm queue
positions, session extension, culling decisions, the watcher's change events."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from appliance.hub import culling
from appliance.hub.outcomes import Outcome, ended_outcome, hint_for
from appliance.hub.scheduler.base import DONE, HELD, PENDING, RUNNING, JobStatus
from appliance.hub.scheduler.capacity import NodeCeiling, Pool, check_fits, never_fits
from appliance.hub.scheduler.htcondor import status_from_ad
from appliance.hub.scheduler.lane import parse_slots
from appliance.hub.scheduler.slurm.queue import expected_start_text, queue_positions
from appliance.hub.scheduler.watcher import JobWatcher
from appliance.hub.session import failure_outcome, plan_extension, session_view
from appliance.options import OptionsError, UserOptions

NOW = 1_800_000_000.0


# -- outcomes --------------------------------------------------------------------------------
def test_outcome_round_trips_through_the_state_and_refuses_unknown_kinds():
    o = Outcome("held", "job 1.0 held", NOW, reason="disk", hint="h", job_id="1.0",
                backend="htcondor", code=1)
    back = Outcome.from_state(o.to_state())
    assert back == o and back.view()["title"].startswith("Your notebook job was put on hold")
    assert Outcome.from_state({"kind": "exploded"}) is None
    assert Outcome.from_state(None) is None
    with pytest.raises(ValueError):
        Outcome("exploded", "", NOW)


@pytest.mark.parametrize("code,reason,words", [
    (1, "by user admin", "condor_hold"),
    (4, "", "log in again"),
    (34, "", "more memory"),
    (26, "MemoryUsage 5000 > RequestMemory", "memory"),
    (46, "", "wall-clock limit"),
    (14, "", "file system"),
])
def test_htcondor_hold_hints(code, reason, words):
    assert words in hint_for("htcondor", code=code, reason=reason)


def test_slurm_hints_and_unknown_reasons():
    assert "administrator" in hint_for("slurm", reason="JobHeldAdmin")
    assert "wall-clock" in hint_for("slurm", state="TIMEOUT")
    assert hint_for("slurm", reason="Priority") == ""
    assert hint_for("htcondor", code=999, reason="whatever") == ""


@pytest.mark.parametrize("kw,kind", [
    (dict(state=HELD, code=46, end_state=""), "time_limit"),
    (dict(state=HELD, code=1, end_state=""), "held"),
    (dict(state=DONE, code=None, end_state="TIMEOUT"), "time_limit"),
    (dict(state=DONE, code=None, end_state="CANCELLED"), "cancelled"),
    (dict(state=DONE, code=None, end_state="removed"), "cancelled"),
    (dict(state=DONE, code=None, end_state="NODE_FAIL"), "lost_node"),
    (dict(state=PENDING, code=None, end_state=""), "lost_node"),
    (dict(state=DONE, code=None, end_state="COMPLETED"), "ended"),
])
def test_ended_outcome_kinds(kw, kind):
    backend = "htcondor" if kw["code"] or kw["end_state"] == "removed" else "slurm"
    o = ended_outcome(backend, "7", reason="the words", now=NOW, was_running=True, **kw)
    assert o.kind == kind and "the words" in o.message and o.hint


def test_failure_outcome_of_a_held_pending_job_keeps_the_scheduler_words():
    st = JobStatus("9", HELD, reason="JobHeldAdmin")
    o = failure_outcome("Job 9 was held by slurm: JobHeldAdmin", "slurm", "9", st, NOW)
    assert o.kind == "held" and "administrator" in o.hint
    assert failure_outcome("no port", "slurm", "9", None, NOW).kind == "failed"


# -- capacity ----------------------------------------------------------------------------------
LANE = Pool("lane", "lane", (NodeCeiling("slot5@exec1", 20, 40960), NodeCeiling("slot5@exec2", 20, 40960)))
GPUS = Pool("partition", "maxwell", (NodeCeiling("node3", 8, 16000, 2),))


def test_check_fits_names_the_field_and_the_largest_value():
    with pytest.raises(OptionsError) as e:
        check_fits(LANE, UserOptions(backend="htcondor", gpus=1))
    assert e.value.field == "gpus" and "largest available there is 0 GPU(s)" in str(e.value)
    with pytest.raises(OptionsError) as e:
        check_fits(LANE, UserOptions(backend="htcondor", memory_gb=48))
    assert e.value.field == "memory_gb" and "40.0 GiB" in str(e.value)
    with pytest.raises(OptionsError) as e:
        check_fits(Pool("partition", "jhub", (NodeCeiling("node1", 8, 16000),)),
                   UserOptions(backend="slurm", gpus=1), others=[GPUS])
    assert "try partition maxwell" in str(e.value)
    check_fits(LANE, UserOptions(backend="htcondor", cpus=4, memory_gb=8))  # fits: no error


def test_check_fits_wants_one_node_to_hold_everything():
    pool = Pool("partition", "mixed", (NodeCeiling("big", 16, 1000), NodeCeiling("fat", 2, 64000)))
    with pytest.raises(OptionsError) as e:
        check_fits(pool, UserOptions(backend="slurm", cpus=8, memory_gb=32))
    assert "no single node" in str(e.value)


def test_never_fits_for_a_queued_job():
    assert never_fits(LANE, 1, 2048, 0) is None
    assert "can ever hold" in never_fits(LANE, 1, 2048, 1)
    assert "no nodes any more" in never_fits(Pool("lane", "lane", ()), 1, 1, 0)
    assert never_fits(None, 1, 1, 0) is None


def test_lane_slots_give_ceilings_and_occupancy():
    ads = [
        {"Name": "slot5@exec1", "Machine": "exec1", "SlotType": "Partitionable", "Cpus": 16,
         "Memory": 32768, "Disk": 9 * 1024 * 1024,
         "TotalSlotCpus": 20, "TotalSlotMemory": 40960, "TotalSlotGPUs": 0},
        {"Name": "slot5_1@exec1", "Machine": "exec1", "SlotType": "Dynamic", "Cpus": 4},
        {"Name": "slot5@exec2", "Machine": "exec2", "SlotType": "Partitionable", "Cpus": 20,
         "TotalSlotCpus": 20, "TotalSlotMemory": 40960},
    ]
    view, occ = parse_slots(ads, NOW)
    assert view.pools["lane"].max_cpus == 20 and view.pools["lane"].max_gpus == 0
    assert (occ.cpus_used, occ.cpus_total, occ.notebooks, occ.machines) == (4, 40, 1, 2)
    assert "4 of 40 notebook CPU slots in use" in occ.text() and not occ.full
    # exec2's ad has no Memory/Disk: its free part counts as nothing but its 20 CPUs
    assert occ.largest_free.node == "exec2" and occ.largest_free.cpus == 20


def test_lane_occupancy_names_what_is_left_on_one_node():
    """CPUs free but the slot's disk used up (HTCondor's 1 GiB default request filled a node's
    disk share at 15 notebooks): the waiting text must show the disk, not only the CPUs."""
    ads = [{"Name": "slot5@exec1", "Machine": "exec1", "SlotType": "Partitionable", "Cpus": 6,
            "Memory": 12288, "Disk": 200 * 1024, "TotalSlotCpus": 20, "TotalSlotMemory": 40960}]
    _, occ = parse_slots(ads, NOW)
    assert occ.text().endswith("most left on one node: exec1: 6 CPUs, 12.0 GiB memory, "
                               "0.2 GiB disk")
    assert occ.as_dict()["largest_free"] == {"node": "exec1", "cpus": 6, "memory_mb": 12288,
                                             "disk_mb": 200}


def test_htcondor_status_carries_end_time_hold_code_and_request():
    running = status_from_ad({"ClusterId": 3, "ProcId": 0, "JobStatus": 2,
                              "RemoteHost": "slot5_1@exec1.mini.test", "JobCurrentStartDate": 1000,
                              "AllowedJobDuration": 900, "RequestCpus": 2, "RequestMemory": 4096})
    assert running.ends_at == 1900 and running.started_at == 1000
    assert running.detail.cpus == 2 and running.detail.memory_mb == 4096
    held = status_from_ad({"ClusterId": 3, "JobStatus": 5, "HoldReason": "x", "HoldReasonCode": 46})
    assert held.state == HELD and held.code == 46
    removed = status_from_ad({"ClusterId": 3, "JobStatus": 3, "RemoveReason": "via condor_rm"})
    assert removed.end_state == "removed"


# -- Slurm queue -------------------------------------------------------------------------------
def test_queue_positions_by_priority_then_submit_time():
    def job(i, prio, submit, part="jhub"):
        return {"job_id": i, "job_state": ["PENDING"], "partition": part,
                "priority": {"set": True, "number": prio}, "submit_time": {"set": True, "number": submit}}
    data = {"jobs": [job(1, 10, 5), job(2, 20, 9), job(3, 10, 3), job(4, 1, 1, "maxwell"),
                     {"job_id": 5, "job_state": ["RUNNING"], "partition": "jhub"}]}
    pos = queue_positions(data)
    assert [pos[j].position for j in ("2", "3", "1")] == [1, 2, 3]
    assert pos["2"].pending == 3 and pos["4"].position == 1 and "5" not in pos


def test_expected_start_text():
    assert "no start estimate" in expected_start_text(None, NOW)
    assert "in 30 min" in expected_start_text(NOW + 1800, NOW)
    assert "as soon as" in expected_start_text(NOW - 5, NOW)


# -- session -----------------------------------------------------------------------------------
RUNNING_ST = JobStatus("5.0", RUNNING, host="exec1", started_at=NOW - 600, ends_at=NOW + 300)


def test_session_view_and_extension_limits():
    v = session_view(backend="htcondor", job_id="5.0", host="exec1", st=RUNNING_ST,
                     max_seconds=3600, extend_enabled=True, now=NOW)
    assert v["remaining_seconds"] == 300 and v["extend"]["max_more_hours"] == pytest.approx(0.75)
    limit, end = plan_extension(RUNNING_ST, 0.5, 3600, NOW)
    assert limit == 900 + 1800 and end == NOW + 300 + 1800
    with pytest.raises(OptionsError, match="hours: at most 0.75 h more"):
        plan_extension(RUNNING_ST, 1, 3600, NOW)
    for bad in (0, -1, "2", True, None):
        with pytest.raises(OptionsError):
            plan_extension(RUNNING_ST, bad, 3600, NOW)
    with pytest.raises(OptionsError, match="not running"):
        plan_extension(JobStatus("5.0", PENDING), 1, 3600, NOW)


# -- culling -----------------------------------------------------------------------------------
def test_culling_limits_per_backend_and_partition():
    cfg = culling.IdleCulling(timeouts={"slurm": 3600, "slurm/all": 40, "htcondor": 0})
    assert cfg.limit_for({"backend": "slurm", "partition": "all"}) == 40
    assert cfg.limit_for({"backend": "slurm", "partition": "jhub"}) == 3600
    assert cfg.limit_for({"backend": "slurm"}) == 3600
    assert cfg.limit_for({}, default_backend="htcondor") == 0


def test_culling_never_takes_a_busy_kernel():
    idle = [{"id": "k1", "execution_state": "idle"}]
    busy = idle + [{"id": "k2", "execution_state": "busy"}]
    assert decide_ok(culling.decide(40, 41, idle))
    assert culling.decide(40, 41, busy) == (False, "kernel k2 is busy")
    assert not culling.decide(40, 39, idle)[0]
    assert not culling.decide(0, 10_000, idle)[0]
    assert not culling.decide(40, 100, None)[0]  # no answer: kept


def decide_ok(result):
    cull, why = result
    return cull and "idle limit 40 s" in why


def test_culler_arbiter_asks_the_hub(monkeypatch):
    seen = {}

    class Resp:
        body = b'{"cull": true}'

    class Client:
        async def fetch(self, req):
            seen["url"], seen["body"] = req.url, req.body
            return Resp()

    monkeypatch.setattr("tornado.httpclient.AsyncHTTPClient", lambda: Client())
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    out = asyncio.run(culling.arbiter(datetime.timedelta(seconds=50), 40, {"full_name": "bob/"}))
    assert out is True and seen["url"] == "http://hub:8081/hub/api/batch/cull"
    assert b'"server": "bob/"' in seen["body"]


# -- watcher change events -----------------------------------------------------------------------
class _Sched:
    name, poll_interval, fast_poll_interval = "fake", 10.0, 0.5

    def __init__(self):
        self.answers = []

    async def query_all(self):
        return self.answers.pop(0)


def test_watcher_reports_state_changes_of_followed_jobs_only():
    sched = _Sched()
    sched.answers = [{"1": JobStatus("1", RUNNING)}, {"1": JobStatus("1", RUNNING, reason="x")},
                     {"1": JobStatus("1", HELD)}, {}]
    w = JobWatcher(sched)
    seen = []
    w.subscribe("1", seen.append)
    for _ in range(4):
        asyncio.run(w.refresh())
    assert [s.state if s else None for s in seen] == [RUNNING, HELD, None]
    w.unsubscribe("1")
    sched.answers = [{"1": JobStatus("1", RUNNING)}]
    asyncio.run(w.refresh())
    assert len(seen) == 3
