"""Group kernels on the mini site (issue 12): carol (group belle2) sees the "Belle II" kernel in
JupyterLab and can start it; alice (not in belle2) does not see it. The hub adds
/opt/group-kernels/belle2 to JUPYTER_PATH in the notebook jobs of belle2's members
(c.BatchSpawner.group_kernel_paths; demo/group-kernels/ on the nodes), on both schedulers.
"""

from __future__ import annotations

import pytest

from tests.conftest import HubClient
from tests.integration.test_gpu_notebooks import stop_and_wait_gone
from tests.integration.test_notebook_compute import login

pytestmark = pytest.mark.minisite

MARKER = "import os, socket; print(os.environ.get('BELLE2_RELEASE'), socket.getfqdn())"


@pytest.fixture
def user_with(site):
    clients: list[HubClient] = []

    def make(user: str, backend: str) -> HubClient:
        c = login(user)
        clients.append(c)
        r = c.spawn({"backend": backend})
        assert r.status_code in (201, 202), r.text
        c.wait_ready(timeout=240)
        return c

    yield make
    for c in clients:
        stop_and_wait_gone(c)


def kernelspecs(c: HubClient) -> dict:
    r = c.user_api("GET", "/api/kernelspecs")
    assert r.status_code == 200, r.text
    return r.json()["kernelspecs"]


@pytest.mark.parametrize("backend", ["htcondor", "slurm"])
def test_belle2_kernel_for_carol_not_for_alice(user_with, backend):
    carol = user_with("carol", backend)
    specs = kernelspecs(carol)
    assert specs["belle2"]["spec"]["display_name"] == "Belle II"
    with carol.kernel(name="belle2") as k:
        release, host = k.run(MARKER).split()
    assert release == "mini-site-demo"
    assert host.split(".")[0] in ({"exec1", "exec2"} if backend == "htcondor"
                                  else {"node1", "node2", "node3"})
    # the default kernel has no marker: it is the Belle II kernelspec's own environment
    assert carol.run_code(MARKER).split()[0] == "None"

    alice = user_with("alice", backend)
    assert "belle2" not in kernelspecs(alice)
    assert "python3" in kernelspecs(alice)
