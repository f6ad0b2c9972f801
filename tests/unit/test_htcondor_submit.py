"""The HTCondor submit description is built from validated values only."""

import pytest

from appliance.hub.scheduler.base import SubmitRequest
from appliance.hub.scheduler.htcondor import build_description, status_from_ad
from appliance.options import Bounds, validate_options


def req(**opts):
    o = validate_options({"backend": "htcondor", **opts}, Bounds(max_gpus=1))
    return SubmitRequest(user="alice", uid=2001, home="/home/alice", options=o,
                         job_name="jupyterhub-alice-default-abcd1234",
                         env_file="/home/alice/.jupyterhub-batch/jupyterhub-alice-default-abcd1234.json",
                         port_range=(40000, 41000), runtime_seconds=3600)


def build(r):
    return build_description(r, launcher="/usr/local/bin/appliance-launch", hub_id="hub1",
                             accounting_group="group_notebook")


def test_description():
    d = build(req(cpus=2, memory_gb=3.5, env={"SECRET_THING": "s3cr3t"}))
    assert d["+IsNotebookJob"] == "true"
    assert d["request_cpus"] == "2" and d["request_memory"] == "3584MB"
    assert d["accounting_group"] == "group_notebook" and d["accounting_group_user"] == "alice"
    assert d["should_transfer_files"] == "NO"
    assert d["request_disk"] == "256MB"  # not HTCondor's 1 GiB default (see build_description)
    assert d["arguments"] == ('"--env-file /home/alice/.jupyterhub-batch/'
                              'jupyterhub-alice-default-abcd1234.json --port-range 40000-41000"')
    assert d["allowed_job_duration"] == "3600"
    # env (and any secret) never reaches the job ad
    assert "s3cr3t" not in repr(d) and "environment" not in d and "getenv" not in d
    assert "request_gpus" not in d


def test_gpus():
    assert build(req(gpus=1))["request_gpus"] == "1"


def test_unsafe_paths_refused():
    r = req()
    r.env_file = '/home/alice/x" executable=/bin/sh'
    with pytest.raises(ValueError):
        build(r)
    r = req()
    r.home = "/home/alice\nqueue 100"
    with pytest.raises(ValueError):
        build(r)
    r = req()
    r.env_file = "/home/alice/.jupyterhub-batch/x.json\n"  # a final newline too
    with pytest.raises(ValueError):
        build(r)
    with pytest.raises(ValueError):
        build_description(req(), launcher="/usr/local/bin/appliance-launch", hub_id="hub1\n",
                          accounting_group="group_notebook")


def test_status_mapping():
    # RemoteHost is the owner's to edit (condor_qedit): the host never comes from the job ad
    run = status_from_ad({"ClusterId": 7, "ProcId": 0, "JobStatus": 2, "RemoteHost": "slot1_3@exec2.mini.test",
                          "Owner": "alice"})
    assert (run.job_id, run.state, run.host, run.owner) == ("7.0", "running", None, "alice")
    held = status_from_ad({"ClusterId": 8, "ProcId": 0, "JobStatus": 5, "HoldReason": "Error from starter"})
    assert held.state == "held" and held.reason == "Error from starter"
    idle = status_from_ad({"ClusterId": 9, "JobStatus": 1})
    assert idle.state == "pending" and idle.reason
    assert status_from_ad({"ClusterId": 9, "JobStatus": 3}).state == "done"


def test_send_credential():
    r = req()
    assert "MY.SendCredential" not in build(r)
    d = build_description(r, launcher="/usr/local/bin/appliance-launch", hub_id="hub1",
                          accounting_group="group_notebook", send_credential=True)
    assert d["MY.SendCredential"] == "true"
    # shared home: nothing is transferred back, so the sandbox ticket (<user>.cc) stays on the node
    assert d["should_transfer_files"] == "NO"
    d = build_description(r, launcher="/usr/local/bin/appliance-launch", hub_id="hub1",
                          accounting_group="group_notebook", send_credential=True,
                          transfer_files=True)
    assert d["transfer_output_files"] == '""'


def test_scheduler_sends_credential_by_default():
    from appliance.hub.scheduler.htcondor import HTCondorScheduler

    sched = HTCondorScheduler(hub_id="hub1")
    assert sched.build_submit(req())["description"]["MY.SendCredential"] == "true"


def test_forget_removes_and_forces_the_job_out_of_the_queue():
    """The job of a node that is gone: condor_rm, then -forcex (it would stay "X" otherwise)."""
    import asyncio
    from types import SimpleNamespace

    from appliance.hub.scheduler.htcondor import HTCondorScheduler

    acts = []

    class Schedd:
        def act(self, action, ids):
            acts.append((action, ids))

    sched = HTCondorScheduler(hub_id="hub1")
    sched._htcondor = SimpleNamespace(JobAction=SimpleNamespace(Remove="Remove", RemoveX="RemoveX"))
    sched._schedd = Schedd()
    asyncio.run(sched.forget("14.0"))
    assert acts == [("Remove", ["14.0"]), ("RemoveX", ["14.0"])]
    with pytest.raises(ValueError):
        asyncio.run(sched.forget("14.0 || true"))
