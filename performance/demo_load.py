#!/usr/bin/env python3
"""A modest, bounded demo load for `make report` (docs/operations.md): bench users log in through
the front door and start and stop notebooks on the HTCondor lane and the Slurm jhub partition,
staggered so that concurrency rises and falls, for about --minutes (default 6; hard bound +3 min).
Every server it started is stopped at the end, also on error or Ctrl-C.

Usage: `make demo-load` (then `make report REPORT_SINCE=15m`), or
`.venv/bin/python performance/demo_load.py --users 10 --minutes 6`.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import SITE_URL, HubClient, demo_users  # noqa: E402


def session_loop(name: str, password: str, backend: dict, deadline: float, rng: random.Random,
                 log: list) -> None:
    c = HubClient(SITE_URL)
    r = c.login(name, password)
    if r.status_code != 302:
        log.append((name, "login failed", r.status_code))
        return
    c.make_token()
    time.sleep(rng.uniform(0, 60))  # staggered arrival
    try:
        while time.monotonic() < deadline - 30:
            t0 = time.monotonic()
            r = c.spawn(backend)
            if r.status_code not in (201, 202):
                log.append((name, "spawn refused", r.status_code))
                time.sleep(10)
                continue
            try:
                c.wait_ready(timeout=120)
                log.append((name, backend["backend"], round(time.monotonic() - t0, 2)))
            except AssertionError as e:
                log.append((name, "spawn failed", str(e)))
            time.sleep(min(rng.uniform(20, 120), max(0, deadline - time.monotonic())))
            c.stop()
            time.sleep(rng.uniform(5, 40))
    finally:
        try:
            c.stop()
        except Exception:
            pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    users = demo_users()
    names = sorted(u for u in users if u.startswith("bench") and u != "benchbatch")[: args.users]
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    backends = [{"backend": "htcondor"}, {"backend": "slurm", "partition": "jhub"}]
    log: list = []
    with cf.ThreadPoolExecutor(len(names)) as pool:
        futs = [pool.submit(session_loop, n, users[n]["password"], backends[i % 2], deadline,
                            random.Random(rng.random()), log) for i, n in enumerate(names)]
        cf.wait(futs, timeout=args.minutes * 60 + 180)
    ok = [x for x in log if isinstance(x[2], float)]
    print(f"demo load: {len(ok)} spawns ok, {len(log) - len(ok)} problems")
    for x in log:
        if not isinstance(x[2], float):
            print("  ", x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
