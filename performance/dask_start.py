"""Dask worker start time from a notebook: cluster.scale(2) -> both workers connected.

For each backend, alice's notebook runs N rounds of SLURMCluster() / HTCondorCluster() with the
site's defaults (a fresh cluster each round, closed after), and the figures are printed. Needs the
mini site (APPLIANCE_URL, as the tests). Not a test: it asserts nothing.

    APPLIANCE_URL=https://hub.localhost:8443 .venv/bin/python performance/dask_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.conftest import HubClient, demo_users  # noqa: E402

ROUNDS_CODE = r'''
import json, time
from dask.distributed import Client
from dask_jobqueue import {cls}
out = []
for _ in range({rounds}):
    cluster = {cls}()
    client = Client(cluster)
    t0 = time.monotonic()
    cluster.scale(2)
    client.wait_for_workers(2, timeout=600)
    out.append(time.monotonic() - t0)
    client.close(); cluster.close()
    time.sleep(2)  # the worker jobs leave the queue
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="slurm,htcondor")
    args = ap.parse_args()
    c = HubClient()
    c.login("alice", demo_users()["alice"]["password"])
    c.make_token()
    for backend in args.backends.split(","):
        if "" in c.user_model().get("servers", {}):
            c.stop()
        r = c.spawn({"backend": backend})
        assert r.status_code in (201, 202), r.text
        c.wait_ready(timeout=300)
        cls = "SLURMCluster" if backend == "slurm" else "HTCondorCluster"
        with c.kernel(timeout=args.rounds * 700) as k:
            times = json.loads(k.run(ROUNDS_CODE.format(cls=cls, rounds=args.rounds),
                                     timeout=args.rounds * 700).strip().splitlines()[-1])
        print(f"{cls}: scale(2) -> 2 workers connected, {len(times)} rounds: "
              f"median {statistics.median(times):.1f} s, min {min(times):.1f} s, max {max(times):.1f} s "
              f"({', '.join(f'{t:.1f}' for t in times)})", flush=True)
    if "" in c.user_model().get("servers", {}):
        c.stop()


if __name__ == "__main__":
    main()
