"""The lane schedd's policy (condor-config/lane/40-jba-lane-policy.conf) and the hub agree.

The lane refuses what the hub would not submit; if the two drift apart, the hub's own notebooks are
refused (too tight) or the lane lets more through than the hub's form allows (too loose). These
checks tie the shipped values to the mini site's hub settings and to the hub's job builder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from traitlets.config import Config

from appliance.hub.scheduler.base import SubmitRequest
from appliance.hub.scheduler.htcondor import HTCondorScheduler, build_description
from appliance.options import Bounds, validate_options

ROOT = Path(__file__).resolve().parents[2]
LANE = ROOT / "condor-config" / "lane" / "40-jba-lane-policy.conf"
BATCH = ROOT / "condor-config" / "schedd" / "40-jba-batch-policy.conf"


def macros(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


@pytest.fixture(scope="module")
def lane():
    return macros(LANE)


@pytest.fixture(scope="module")
def hub_config():
    c = Config()
    code = (ROOT / "minisite" / "appliance" / "appliance_config.py").read_text()
    exec(compile(code, "appliance_config.py", "exec"), {"get_config": lambda: c})
    return c


def trait_default(name: str):
    return HTCondorScheduler.class_traits()[name].default_value


def test_lane_values_are_the_mini_site_hubs(lane, hub_config):
    sched = hub_config.HTCondorScheduler
    spawner = hub_config.BatchSpawner
    assert lane["JBA_HUB_ID"] == sched.hub_id
    assert lane["JBA_LAUNCHER"] == sched.get("launcher", trait_default("launcher"))
    assert lane["JBA_NOTEBOOK_GROUP"] == sched.get("accounting_group",
                                                    trait_default("accounting_group"))
    assert int(lane["JBA_MAX_CPUS"]) == spawner.max_cpus
    assert int(lane["JBA_MAX_MEMORY_MB"]) == round(spawner.max_memory_gb * 1024)
    assert int(lane["JBA_MAX_GPUS"]) == spawner.max_gpus
    assert int(lane["JBA_MAX_RUNTIME_S"]) == round(spawner.max_runtime_hours * 3600)
    assert int(lane["JBA_NOTEBOOK_DISK_MB"]) == sched.get("request_disk_mb",
                                                          trait_default("request_disk_mb"))
    assert macros(BATCH)["JBA_NOTEBOOK_GROUP"] == lane["JBA_NOTEBOOK_GROUP"]


def test_the_hubs_largest_notebook_passes_the_lane_rules(lane, hub_config):
    """Build the hub's job at the upper bounds; every value the lane checks is inside them."""
    spawner = hub_config.BatchSpawner
    bounds = Bounds(max_cpus=spawner.max_cpus, max_memory_gb=spawner.max_memory_gb,
                    max_gpus=spawner.max_gpus, max_runtime_hours=spawner.max_runtime_hours)
    opts = validate_options({"backend": "htcondor", "cpus": spawner.max_cpus,
                             "memory_gb": spawner.max_memory_gb, "gpus": spawner.max_gpus,
                             "runtime_hours": spawner.max_runtime_hours}, bounds)
    env_file = "/home/alice/.jupyterhub-batch/jupyterhub-alice-default-abcd1234.json"
    req = SubmitRequest(user="alice", uid=2001, home="/home/alice", options=opts,
                        job_name="jupyterhub-alice-default-abcd1234", env_file=env_file,
                        port_range=(40000, 41000),
                        runtime_seconds=int(spawner.max_runtime_hours * 3600))
    d = build_description(req, launcher=lane["JBA_LAUNCHER"], hub_id=lane["JBA_HUB_ID"],
                          accounting_group=lane["JBA_NOTEBOOK_GROUP"])
    assert d["universe"] == "vanilla" and d["transfer_executable"] == "false"
    assert d["executable"] == lane["JBA_LAUNCHER"]
    # The lane's Arguments pattern (a ClassAd regexp, PCRE; this one means the same in Python).
    pattern = re.search(r'regexp\("([^"]+)", Arguments\)',
                        lane["SUBMIT_REQUIREMENT_NotebookLauncher"]).group(1)
    assert re.search(pattern, d["arguments"].strip('"')), d["arguments"]
    assert int(d["request_cpus"]) <= int(lane["JBA_MAX_CPUS"])
    assert int(d["request_memory"].removesuffix("MB")) <= int(lane["JBA_MAX_MEMORY_MB"])
    assert int(d["request_gpus"]) <= int(lane["JBA_MAX_GPUS"])
    assert 0 < int(d["allowed_job_duration"]) <= int(lane["JBA_MAX_RUNTIME_S"])
    assert int(d["request_disk"].removesuffix("MB")) <= int(lane["JBA_NOTEBOOK_DISK_MB"])
    assert d["+JupyterHubId"] == f'"{lane["JBA_HUB_ID"]}"'
    assert d["accounting_group_user"] == "alice" == d["+JupyterHubUser"].strip('"')


def test_launcher_pattern_refuses_a_command_of_its_own(lane):
    pattern = re.search(r'regexp\("([^"]+)", Arguments\)',
                        lane["SUBMIT_REQUIREMENT_NotebookLauncher"]).group(1)
    ok = "--env-file /home/a/.jupyterhub-batch/x.json --port-range 40000-41000"
    assert re.search(pattern, ok)
    for bad in (ok + " -- /bin/sh", ok + " --port-range 1-2", "--port-range 1-2",
                "--env-file x.json --port-range 40000-41000", ok.replace(" ", "  ", 1)):
        assert not re.search(pattern, bad), bad


def test_protected_attributes_cover_every_checked_one(lane):
    """condor_qedit must not undo a rule: every attribute a requirement reads is protected."""
    protected = set(lane["PROTECTED_JOB_ATTRS"].split()) - {"$(PROTECTED_JOB_ATTRS)"}
    rules = " ".join(v for k, v in lane.items()
                     if k.startswith("SUBMIT_REQUIREMENT_") and not k.endswith("_REASON")
                     and k != "SUBMIT_REQUIREMENT_NAMES")
    used = set(re.findall(r"\b([A-Z][A-Za-z]+)\b", re.sub(r'"[^"]*"', "", rules)))
    used -= {"Owner"}  # immutable by HTCondor itself (SYSTEM_IMMUTABLE_JOB_ATTRS)
    assert used <= protected, f"checked but not protected: {sorted(used - protected)}"
