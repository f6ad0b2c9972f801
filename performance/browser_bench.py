"""What users feel (issue 16): click "Start" on the spawn page -> JupyterLab usable, in Chromium.

For each backend (HTCondor notebook lane, Slurm ``jhub``) and scenario:

* ``cold``  a new browser profile (empty cache), loopback link;
* ``warm``  the same profile again (a returning user: JupyterLab's static files cached);
* ``slow``  cold, over an emulated 20 Mbit/s, 40 ms link (Chrome DevTools Protocol
  ``Network.emulateNetworkConditions``), as for users outside the campus.

Each run: log in, pick the preset of the backend, click Start (t=0); ``redirect`` = the browser is
sent to the server (spawn done, pending page over), ``usable`` = JupyterLab's shell, status bar
and file listing are shown. Also the bytes the browser received (``encodedDataLength`` of every
response: compressed size when compressed) and the requests made. Debian's chromium through
Playwright. The server is stopped after each run. Prints a table and writes JSON.

Usage: .venv/bin/python performance/browser_bench.py [--runs N] [--quick] [--out FILE]
(APPLIANCE_URL selects the mini site copy, as for the tests.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SITE_URL, HubClient, demo_users  # noqa: E402

PRESETS = {"htcondor": "Standard notebook", "slurm": "SLURM jhub notebook"}
SLOW = {"offline": False, "latency": 40, "downloadThroughput": 20e6 / 8,
        "uploadThroughput": 20e6 / 8}
USERS = {"htcondor": "bench01", "slurm": "bench02"}


def stop(user: str, password: str) -> None:
    c = HubClient(SITE_URL)
    c.login(user, password)
    c.make_token()
    if "" in c.user_model().get("servers", {}):
        c.stop()


def one_run(ctx, backend: str, user: str, password: str, link: dict | None) -> dict:
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    if link:
        cdp.send("Network.emulateNetworkConditions", link)
    got = {"bytes": 0, "requests": 0}

    def finished(ev):
        got["bytes"] += ev.get("encodedDataLength", 0)
        got["requests"] += 1
    cdp.on("Network.loadingFinished", finished)
    page.goto(f"{SITE_URL}/hub/login")
    if page.locator("#username_input").count():
        page.fill("#username_input", user)
        page.fill("#password_input", password)
        page.click("#login_submit")
        page.wait_for_load_state()
    if "/hub/spawn" not in page.url:  # a returning user's session: straight to the spawn page
        page.goto(f"{SITE_URL}/hub/spawn")
    page.wait_for_url("**/hub/spawn**", timeout=60000)
    page.get_by_label(PRESETS[backend]).check()
    before = dict(got)
    t0 = time.monotonic()
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=240000)
    t_redirect = time.monotonic() - t0
    page.wait_for_selector(".jp-LabShell #jp-main-statusbar", timeout=120000)
    page.wait_for_selector(".jp-DirListing-content", timeout=120000)
    t_usable = time.monotonic() - t0
    page.close()
    return {"redirect_s": round(t_redirect, 2), "usable_s": round(t_usable, 2),
            "after_redirect_s": round(t_usable - t_redirect, 2),
            "kbytes": round((got["bytes"] - before["bytes"]) / 1024, 1),
            "requests": got["requests"] - before["requests"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="browser_bench")
    ap.add_argument("--runs", type=int, default=3, help="runs per backend and scenario")
    ap.add_argument("--quick", action="store_true", help="1 run each")
    ap.add_argument("--backends", default="htcondor,slurm")
    ap.add_argument("--out", default=str(ROOT / "performance/results/browser.json"))
    args = ap.parse_args(argv)
    runs = 1 if args.quick else args.runs
    users = demo_users()
    from playwright.sync_api import sync_playwright

    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_avg": os.getloadavg()},
                     "site": SITE_URL, "runs": runs, "link_slow": SLOW, "scenarios": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking"])
        for backend in args.backends.split(","):
            user = USERS[backend]
            pw = users[user]["password"]
            for scenario in ("cold", "warm", "slow"):
                samples = []
                for _ in range(runs):
                    stop(user, pw)
                    ctx = browser.new_context(ignore_https_errors=True,
                                              viewport={"width": 1280, "height": 800})
                    try:
                        if scenario == "warm":  # one load first fills the profile's cache
                            one_run(ctx, backend, user, pw, None)
                            stop(user, pw)
                        samples.append(one_run(ctx, backend, user, pw,
                                               SLOW if scenario == "slow" else None))
                    finally:
                        ctx.close()
                        stop(user, pw)
                usable = [s["usable_s"] for s in samples]
                results["scenarios"][f"{backend}/{scenario}"] = {
                    "samples": samples, "usable_p50_s": round(statistics.median(usable), 2),
                    "usable_max_s": max(usable)}
                print(f"{backend:9s} {scenario:5s} usable p50 {statistics.median(usable):5.2f} s "
                      f"(max {max(usable):5.2f}); redirect p50 "
                      f"{statistics.median(s['redirect_s'] for s in samples):5.2f} s; "
                      f"{statistics.median(s['kbytes'] for s in samples):7.1f} kB in "
                      f"{statistics.median(s['requests'] for s in samples):.0f} requests",
                      flush=True)
        browser.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
