"""Route hosts come from the scheduler's own record and are checked (appliance.hub.scheduler.routehost).

The job's owner can edit an HTCondor job ad (``RemoteHost`` with condor_qedit); these tests feed
the functions what an attacker could produce and check nothing of it becomes a route.
"""

import itertools

import pytest

from appliance.hub.scheduler.htcondor import status_from_ad
from appliance.hub.scheduler.routehost import HostRefused, checked_host, slot_host
from appliance.hub.scheduler.slurm.jobs import job_status
from appliance.names import HOST_NAME_RE

SCHEDD = "lane.mini.test"


def slot(name, job_id=None, user=None, schedd=SCHEDD, machine=None):
    ad = {"Name": name, "Machine": machine or name.rpartition("@")[2]}
    if job_id:
        ad.update(JobId=job_id, GlobalJobId=f"{schedd}#{job_id}#1700000000",
                  RemoteUser=f"{user}@mini.test")
    return ad


LANE = [slot("slot2@exec1.mini.test"), slot("slot2@exec2.mini.test"),
        slot("slot2_1@exec1.mini.test", "12.0", "mallory"),
        slot("slot2_2@exec2.mini.test", "13.0", "alice")]


@pytest.mark.parametrize("bad", [
    "10.1.2.3:8080#", "exec1.mini.test:22", "evil@exec1", "exec1/x", "exec1 x", "", "-exec1",
    "exec1.", "a" * 254, "exec1.mini.test\n", "exec1#", "[::1]", "exec_1",
])
def test_host_pattern_refuses_anything_but_a_plain_name(bad):
    assert not HOST_NAME_RE.match(bad)
    with pytest.raises(HostRefused, match="not a plain host name"):
        checked_host(bad, [bad], "test")


def test_known_host_is_accepted_case_insensitively_and_unknown_refused():
    assert checked_host("Exec1.mini.test", ["exec1.mini.test"], "t") == "Exec1.mini.test"
    with pytest.raises(HostRefused, match="not a node the scheduler knows"):
        checked_host("db.mini.test", ["exec1.mini.test"], "t")


def test_host_is_the_machine_of_the_slot_that_runs_the_job():
    assert slot_host(LANE, "12.0", "mallory", SCHEDD) == "exec1.mini.test"
    assert slot_host(LANE, "13.0", "alice", SCHEDD) == "exec2.mini.test"
    assert slot_host(LANE, "14.0", "alice", SCHEDD) is None  # the startd's ad lags: not yet


def test_an_edited_job_ad_gives_no_host():
    ad = {"ClusterId": 12, "ProcId": 0, "JobStatus": 2, "Owner": "mallory",
          "RemoteHost": "slot1@10.1.2.3:8080#", "StartdIpAddr": "<10.1.2.3:8080>"}
    assert status_from_ad(ad).host is None


def test_slot_of_another_schedd_or_owner_is_not_the_jobs():
    other = LANE + [slot("slot2_3@exec2.mini.test", "15.0", "mallory", schedd="schedd.mini.test")]
    assert slot_host(other, "15.0", "mallory", SCHEDD) is None
    with pytest.raises(HostRefused, match="runs it for 'alice'"):
        slot_host(LANE, "13.0", "mallory", SCHEDD)
    with pytest.raises(HostRefused, match="job's owner None"):
        slot_host(LANE, "13.0", None, SCHEDD)


def test_two_slots_claiming_one_job_give_no_route():
    twice = LANE + [slot("slot2_9@exec2.mini.test", "12.0", "mallory")]
    with pytest.raises(HostRefused, match="2 slots claim it"):
        slot_host(twice, "12.0", "mallory", SCHEDD)


def test_slot_machine_must_be_a_plain_name_matching_the_slot():
    bad = [slot("slot2_1@exec1.mini.test", "12.0", "mallory", machine="10.1.2.3:8080#")]
    with pytest.raises(HostRefused, match="does not belong to machine"):
        slot_host(bad, "12.0", "mallory", SCHEDD)
    bad = [slot("slot2_1@10.1.2.3:8080#", "12.0", "mallory")]
    with pytest.raises(HostRefused, match="not a plain host name"):
        slot_host(bad, "12.0", "mallory", SCHEDD)


def test_slurm_node_must_be_listed_and_plain():
    job = {"job_id": 5, "user_name": "mallory", "job_state": ["RUNNING"], "nodes": "node1"}
    assert job_status(job, {"node1": "node1.mini.test"}).host == "node1.mini.test"
    st = job_status({**job, "nodes": "db"}, {"node1": "node1.mini.test"})
    assert st.host is None and "not one of the nodes Slurm lists" in st.host_error
    st = job_status(job, {"node1": "10.1.2.3:8080#"})
    assert st.host is None and "not a plain host name" in st.host_error


class LaneHTCondor:
    """HTCondorScheduler with its two HTCondor queries replaced by captured-shape answers."""

    @staticmethod
    def make(job_ads, slot_lists):
        from appliance.hub.scheduler.htcondor import HTCondorScheduler

        class S(HTCondorScheduler):
            def _query_sync(self):
                return {s.job_id: s for s in map(status_from_ad, job_ads)}

            def _lane_sync(self):
                self.slot_queries += 1
                return slot_lists[min(self.slot_queries, len(slot_lists)) - 1]

        ticks = itertools.count(1000.0)  # every reading 1 s later: a cached view ages
        s = S(hub_id="hub", clock=lambda: next(ticks))
        s.slot_queries, s._schedd_name = 0, SCHEDD
        return s


@pytest.mark.asyncio
async def test_htcondor_backend_routes_to_the_slot_never_to_remote_host():
    edited = {"ClusterId": 12, "ProcId": 0, "JobStatus": 2, "Owner": "mallory",
              "RemoteHost": "slot1@10.1.2.3:8080#"}
    s = LaneHTCondor.make([edited], [LANE[:2], LANE])  # first view: the startd's ad lags
    first = (await s.query_all())["12.0"]
    assert first.state == "running" and first.host is None and not first.host_error
    second = (await s.query_all())["12.0"]
    assert second.host == "exec1.mini.test"
    queries = s.slot_queries
    assert (await s.query_all())["12.0"].host == "exec1.mini.test"  # kept: no new slot query
    assert s.slot_queries == queries


@pytest.mark.asyncio
async def test_htcondor_backend_reports_a_refused_slot_record():
    ad = {"ClusterId": 13, "ProcId": 0, "JobStatus": 2, "Owner": "mallory"}
    s = LaneHTCondor.make([ad], [LANE])  # slot 13.0 runs alice's job
    st = (await s.query_all())["13.0"]
    assert st.host is None and "runs it for 'alice'" in st.host_error
