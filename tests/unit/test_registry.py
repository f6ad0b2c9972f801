"""The per-hub registry of schedulers and watchers, and the hub side of the submit helper."""

from __future__ import annotations

import asyncio
import json
import pwd

import pytest

from appliance.hub.registry import SETTINGS_KEY, Registry, hub_registry
from appliance.hub.scheduler.base import SubmitError
from appliance.hub.submission import (
    helper_argv, helper_request, run_submit_helper, submit_request,
)
from appliance.options import Bounds, OptionsError, validate_options
from tests.unit.hub_fakes import FakeCluster, helper_command, hub_config, scheduler_class


def test_one_scheduler_and_watcher_per_backend_per_hub():
    async def main():
        cls = scheduler_class(FakeCluster())
        registry = Registry({"fake": cls}, config=hub_config())
        try:
            assert registry.scheduler("fake") is registry.scheduler("fake")
            assert isinstance(registry.scheduler("fake"), cls)
            assert registry.scheduler("fake").fast_poll_interval == 0.01  # the hub's config
            assert registry.running_watcher("fake") is None  # nothing started yet
            watcher = registry.watcher("fake")
            assert registry.watcher("fake") is watcher is registry.running_watcher("fake")
            assert watcher.scheduler is registry.scheduler("fake")
            with pytest.raises(OptionsError) as e:
                registry.scheduler("pbs")
            assert e.value.field == "backend" and "not enabled" in str(e.value)
        finally:
            registry.close()
        assert registry.running_watcher("fake") is None
        assert watcher._task is None  # stopped
        await asyncio.sleep(0)

    asyncio.run(main())


def test_import_strings_are_resolved():
    registry = Registry({"fake": "tests.unit.hub_fakes.FakeScheduler"})
    from tests.unit.hub_fakes import FakeScheduler

    assert type(registry.scheduler("fake")) is FakeScheduler


def test_each_hub_has_its_own_registry():
    hub_a, hub_b = {"base_url": "/"}, {"base_url": "/"}
    a = hub_registry(hub_a, {"fake": "x"})
    assert hub_registry(hub_a, {"other": "y"}) is a and hub_a[SETTINGS_KEY] is a
    b = hub_registry(hub_b, {"fake": "x"})
    assert b is not a


ACCOUNT = pwd.struct_passwd(("alice", "x", 2001, 2001, "", "/home/alice", "/bin/bash"))


def test_submit_request_and_helper_request_built_whole():
    opts = validate_options({"backend": "htcondor", "cpus": 2}, Bounds())
    req = submit_request(ACCOUNT, "", "1a2b3c4d", job_dir=".jupyterhub-batch", options=opts,
                         port_range=(40000, 41000), ccache="/run/cc", runtime_seconds=7200)
    name = "jupyterhub-alice-default-1a2b3c4d"
    assert (req.user, req.uid, req.home, req.job_name) == ("alice", 2001, "/home/alice", name)
    assert req.env_file == f"/home/alice/.jupyterhub-batch/{name}.json"
    assert (req.port_range, req.ccache, req.runtime_seconds, req.options) == (
        (40000, 41000), "/run/cc", 7200, opts)
    named = submit_request(ACCOUNT, "gpu", "x", job_dir="jobs", options=opts,
                           port_range=[1, 2], ccache=None, runtime_seconds=1)
    assert named.job_name == "jupyterhub-alice-gpu-x" and named.port_range == (1, 2)
    assert helper_request(req, {"A": "1"}, {"k": "v"}) == {
        "backend": "htcondor", "ccache": "/run/cc", "env_path": req.env_file,
        "env": {"A": "1"}, "submit": {"k": "v"}}


def test_helper_argv_replaces_the_username():
    assert helper_argv(["sudo", "-n", "-u", "{username}", "/x"], "bob") == [
        "sudo", "-n", "-u", "bob", "/x"]


def test_helper_gets_the_request_on_stdin_and_a_minimal_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "hub secret")
    record = tmp_path / "rec.jsonl"
    answer = asyncio.run(run_submit_helper(
        helper_command(record, {"job_id": "7"}), {"backend": "slurm", "env": {"T": "s"}}))
    assert answer == {"job_id": "7"}
    seen = json.loads(record.read_text())
    assert seen["request"] == {"backend": "slurm", "env": {"T": "s"}}
    assert seen["environ"].get("PATH") == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert "JUPYTERHUB_CRYPT_KEY" not in seen["environ"]


@pytest.mark.parametrize("answer,code,stderr,message", [
    ({"error": "partition upex: you are not in its groups"}, 1, "", "partition upex: you are not"),
    ({"job_id": "7"}, 3, "killed", "killed"),  # an id with a failing exit is no success
    ({}, 0, "", "no answer"),
    ([1, 2], 0, "", "no answer"),
    ("garbage", 1, "x" * 600 + "Traceback: boom\n", "Traceback: boom"),
])
def test_helper_failures_in_its_own_words(tmp_path, answer, code, stderr, message):
    with pytest.raises(SubmitError) as e:
        asyncio.run(run_submit_helper(
            helper_command(tmp_path / "r", answer, exit_code=code, stderr=stderr), {}))
    assert message in str(e.value) and len(str(e.value)) <= 500
