"""GPUs end to end on the mini site (issue 12): a notebook asking for a GPU lands on the node that
has them and sees the device it was given, on both schedulers.

* HTCondor: exec1 declares two simulated GPUs (condor-config/exec-gpu/: MACHINE_RESOURCE_GPUs =
  GPU-0, GPU-1, all in the partitionable notebook slot); exec2 has none. The starter gives the job
  its device id in ``_CONDOR_AssignedGPUs`` and ``CUDA_VISIBLE_DEVICES``.
* Slurm: node3 has ``Gres=gpu:2`` (slurm-config/gres.conf, /dev/fakegpu[0-1]); slurmd sets
  ``CUDA_VISIBLE_DEVICES`` for the job's gres. In partition "all" (shared nodes): in the exclusive
  partitions a job gets every GPU of its node whatever it asked for (measured: "0,1" for gpus=1).

The device is read in a kernel of the running notebook (the kernel inherits the server's
environment, which the launcher inherits from the job).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import HubClient, site_exec, wait_for
from tests.integration.test_notebook_compute import login

pytestmark = pytest.mark.minisite

SHOW_DEVICE = ("import json, os, socket; print(json.dumps({'host': socket.getfqdn(), "
               "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), "
               "'assigned': os.environ.get('_CONDOR_AssignedGPUs')}))")


def stop_and_wait_gone(c: HubClient) -> None:
    """Stop the user's server and wait until Slurm no longer lists any job of hers (a COMPLETING
    notebook would still occupy its node for the tests after this one)."""
    if "" in c.user_model().get("servers", {}):
        c.stop()
    wait_for(f"{c.user}'s Slurm jobs to leave the queue",
             lambda: not site_exec("slurmctld", "squeue", "-h", "-u", c.user).stdout.strip(),
             timeout=120, interval=1)


def device_seen(c: HubClient) -> dict:
    return json.loads(c.run_code(SHOW_DEVICE).strip().splitlines()[-1])


@pytest.fixture
def gpu_user(site):
    clients: list[HubClient] = []

    def make(user: str) -> HubClient:
        c = login(user)
        clients.append(c)
        return c

    yield make
    for c in clients:
        stop_and_wait_gone(c)


def lane_slot_gpus() -> dict[str, int]:
    """Partitionable notebook slots of the lane -> their GPU count (the hub's capacity source)."""
    r = site_exec("condor-lane", "condor_status", "-pool", "lane.mini.test", "-constraint",
                  "NotebookSlot =?= true && PartitionableSlot =?= true", "-af", "Machine",
                  "TotalSlotGPUs")
    out = {}
    for line in r.stdout.splitlines():
        machine, gpus = line.split()
        out[machine] = 0 if gpus == "undefined" else int(gpus)
    return out


def test_htcondor_gpu_notebook_lands_on_the_gpu_node_and_sees_its_device(gpu_user):
    assert lane_slot_gpus() == {"exec1.mini.test": 2, "exec2.mini.test": 0}
    alice = gpu_user("alice")
    r = alice.spawn({"backend": "htcondor", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    alice.wait_ready(timeout=240)
    seen = device_seen(alice)
    assert seen["host"] == "exec1.mini.test", seen
    assert seen["assigned"] in ("GPU-0", "GPU-1"), seen
    assert seen["cuda"] == seen["assigned"], seen
    # the lane's job ad agrees (the schedd's view of the match)
    r = site_exec("condor-lane", "condor_q", "-all", "-constraint",
                  'JupyterHubUser == "alice" && JobStatus == 2', "-af", "RequestGpus",
                  "AssignedGPUs")
    assert r.stdout.split() == ["1", seen["assigned"]]


def test_htcondor_too_many_gpus_refused_naming_the_field(gpu_user):
    alice = gpu_user("alice")
    r = alice.spawn({"backend": "htcondor", "gpus": 3})
    assert r.status_code == 400 and "gpus" in r.json()["message"], r.text


def test_slurm_gpu_notebook_lands_on_node3_and_sees_its_device(gpu_user):
    bob = gpu_user("bob")
    r = bob.spawn({"backend": "slurm", "partition": "all", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    bob.wait_ready(timeout=240)
    seen = device_seen(bob)
    assert seen["host"] == "node3.mini.test", seen
    assert seen["cuda"] in ("0", "1"), seen
