"""Reservation policy, root wrapper (with a fake scontrol) and the service's listing (pure)."""

import json
import os
import subprocess

import pytest

from appliance.reservations import admin
from appliance.reservations.policy import PolicyError, ReservationPolicy, load_policy
from appliance.reservations.service import reservation_rows

NOW = 1_800_000_000.0


@pytest.fixture
def policy(tmp_path):
    return ReservationPolicy(
        staff={"alice": {"partitions": ["upex", "jhub"], "nodes": ["node1", "node3"],
                         "max_hours": 24, "max_nodes": 2}},
        max_hours=72, audit_log=str(tmp_path / "resv" / "audit.log"))


def create(**kw):
    req = {"action": "create", "name": "beam-1", "partition": "upex", "nodes": ["node3"],
           "groups": ["upex"], "hours": 2}
    req.update(kw)
    return req


def test_create_argv(policy):
    c = policy.check(create(), "alice", NOW)
    assert c.reservation == "staff-beam-1"
    assert c.argv == ["create", "reservation", "ReservationName=staff-beam-1", "StartTime=now",
                      "Duration=120", "PartitionName=upex", "Nodes=node3", "Groups=upex"]
    assert c.summary["end"] == int(NOW + 7200)
    c = policy.check(create(groups=None, users=["bob", "carol"], start=NOW + 3600), "alice", NOW)
    assert c.argv[-1] == "Users=bob,carol" and c.argv[3].startswith("StartTime=20")


@pytest.mark.parametrize("req,field,status", [
    (create(partition="maxwell"), "partition", 400),
    (create(nodes=["node2"]), "nodes", 400),
    (create(nodes=["node1", "node3", "node1"], hours=1), None, None),  # duplicates collapse: 2 nodes
    (create(nodes=[]), "nodes", 400),
    (create(hours=25), "hours", 400),  # alice's own limit
    (create(hours=0), "hours", 400),
    (create(hours="2"), "hours", 400),
    (create(name="Bad_Name"), "name", 400),
    (create(users=["bob"]), "users", 400),  # users AND groups
    (create(groups=[]), "users", 400),  # neither
    (create(groups=["up ex"]), "groups", 400),
    (create(flags="MAINT"), "flags", 400),
    (create(start=NOW + 86400 * 31), "start", 400),
    (create(action="drop"), "action", 400),
])
def test_refusals_name_the_field(policy, req, field, status):
    if field is None:
        assert policy.check(req, "alice", NOW).summary["nodes"] == ["node1", "node3"]
        return
    with pytest.raises(PolicyError) as e:
        policy.check(req, "alice", NOW)
    assert e.value.field == field and e.value.status == status
    assert str(e.value).startswith(field)


def test_not_staff_is_403(policy):
    with pytest.raises(PolicyError) as e:
        policy.check(create(), "bob", NOW)
    assert e.value.status == 403


def test_extend_within_max(policy):
    c = policy.check({"action": "extend", "name": "beam-1", "hours": 4}, "alice", NOW,
                     current_start=NOW, current_end=NOW + 3600)
    assert c.argv[0] == "update" and c.argv[2].startswith("EndTime=")
    assert c.summary["end"] == int(NOW + 5 * 3600)
    with pytest.raises(PolicyError) as e:
        policy.check({"action": "extend", "name": "beam-1", "hours": 20}, "alice", NOW,
                     current_start=NOW, current_end=NOW + 5 * 3600)
    assert e.value.field == "hours"


class FakeScontrol:
    def __init__(self, existing=None, fail=None):
        self.calls = []
        self.existing = existing or {}
        self.fail = fail

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[1:3] == ["show", "reservation"]:
            r = self.existing.get(argv[3])
            if r is None:
                return subprocess.CompletedProcess(argv, 1, "", "Reservation not found")
            out = {"reservations": [{"name": argv[3], "start_time": {"number": r[0], "set": True},
                                     "end_time": {"number": r[1], "set": True}}]}
            return subprocess.CompletedProcess(argv, 0, json.dumps(out), "")
        if self.fail:
            return subprocess.CompletedProcess(argv, 1, "", self.fail)
        return subprocess.CompletedProcess(argv, 0, "Reservation created", "")


def audit_lines(policy):
    with open(policy.audit_log) as f:
        return [json.loads(x) for x in f]


def test_wrapper_runs_scontrol_and_audits(policy):
    fake = FakeScontrol()
    a = admin.handle(dict(create(), actor="alice"), policy, NOW, run=fake)
    assert a["ok"] and a["reservation"] == "staff-beam-1"
    assert fake.calls[-1][0] == admin.SCONTROL and fake.calls[-1][1:3] == ["create", "reservation"]
    a = admin.handle(dict(create(partition="maxwell"), actor="alice"), policy, NOW, run=fake)
    assert not a["ok"] and a["status"] == 400 and a["error"] == "partition"
    a = admin.handle(dict(create(), actor="mallory"), policy, NOW, run=fake)
    assert a["status"] == 403
    a = admin.handle({"action": "delete", "name": "nothere", "actor": "alice"}, policy, NOW, run=fake)
    assert a["status"] == 404
    lines = audit_lines(policy)
    assert [(x["actor"], x["action"], x["result"]) for x in lines] == [
        ("alice", "create", "ok"), ("alice", "create", "refused"),
        ("mallory", "create", "refused"), ("alice", "delete", "refused")]
    assert lines[0]["reservation"] == "staff-beam-1" and lines[0]["time"] == int(NOW)
    assert oct(os.stat(policy.audit_log).st_mode & 0o777) == "0o640"
    assert len(fake.calls) == 2  # one create, one lookup; nothing run for refused requests


def test_wrapper_extend_delete_and_slurm_refusal(policy):
    fake = FakeScontrol(existing={"staff-beam-1": (NOW, NOW + 3600)})
    a = admin.handle({"action": "extend", "name": "beam-1", "hours": 1, "actor": "alice"},
                     policy, NOW, run=fake)
    assert a["ok"] and a["end"] == int(NOW + 7200)
    assert admin.handle({"action": "delete", "name": "beam-1", "actor": "alice"}, policy, NOW,
                        run=fake)["ok"]
    assert fake.calls[-1][1:] == ["delete", "ReservationName=staff-beam-1"]
    busy = FakeScontrol(fail="Requested nodes are busy")
    a = admin.handle(dict(create(), actor="alice"), policy, NOW, run=busy)
    assert a["status"] == 409 and "busy" in a["message"]


def test_config_file_must_be_root_only(tmp_path):
    p = tmp_path / "r.py"
    p.write_text("c.ReservationPolicy.staff = {'alice': {'partitions': ['jhub']}}\n")
    p.chmod(0o644)
    admin.check_config_file(str(p))  # root-owned (tests run as root), not group/other-writable
    assert load_policy(str(p)).staff == {"alice": {"partitions": ["jhub"]}}
    p.chmod(0o666)
    with pytest.raises(PolicyError):
        admin.check_config_file(str(p))
    assert load_policy(str(tmp_path / "missing.py")).staff == {}


def test_listing_only_own_reservations():
    data = {"reservations": [
        {"name": "belle2", "partition": "", "node_list": "node2", "groups": "belle2",
         "start_time": {"number": NOW, "set": True}, "end_time": {"number": NOW + 86400, "set": True}},
        {"name": "staff-beam-1", "partition": "upex", "node_list": "node3", "groups": "upex",
         "users": "", "start_time": {"number": NOW - 600, "set": True},
         "end_time": {"number": NOW + 5400, "set": True}},
    ]}
    rows = reservation_rows(data, "staff-", NOW)
    assert [r["name"] for r in rows] == ["staff-beam-1"]
    assert rows[0]["groups"] == ["upex"] and rows[0]["remaining_hours"] == 1.5
