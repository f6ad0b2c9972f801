"""What users feel (issue 16): click "Start" on the spawn page -> JupyterLab usable, in Chromium.

For each backend (HTCondor notebook lane, Slurm ``jhub``) and scenario:

* ``cold``  a new browser profile (empty cache), loopback link;
* ``warm``  the same profile again (a returning user: JupyterLab's static files cached);
* ``slow``  cold, over an emulated 20 Mbit/s, 40 ms link (Chrome DevTools Protocol
  ``Network.emulateNetworkConditions``), as for users outside the campus.

Also (``measure_login_start``, run by performance/bench.py, which switches the hub's setting):
login click -> JupyterLab usable for a returning user, with ``BatchSpawner.start_on_login`` off
(login, the spawn page's preset, Start) and on (login, the home page's "My Server").

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
import base64
import hashlib
import json
import os
import platform
import ssl
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


_CLIENTS: dict[str, HubClient] = {}


def stop(user: str, password: str) -> None:
    """Stop the user's server (one API session per user, kept: nginx throttles login POSTs)."""
    c = _CLIENTS.get(user)
    if c is None:
        c = HubClient(SITE_URL)
        for _ in range(30):
            r = c.login(user, password)
            if r.status_code != 429:
                break
            time.sleep(float(r.headers.get("Retry-After", "2")))
        c.make_token()
        _CLIENTS[user] = c
    if "" in c.user_model().get("servers", {}):
        c.stop()


def site_spki() -> str:
    """base64 SHA-256 of the public key of the certificate the site serves (Chromium's
    --ignore-certificate-errors-spki-list)."""
    import subprocess
    from urllib.parse import urlparse

    u = urlparse(SITE_URL)
    pem = ssl.get_server_certificate((u.hostname if u.hostname != "hub.localhost" else "127.0.0.1",
                                      u.port or 443))
    der = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem.encode(),
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der,
                         capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def one_run(ctx, backend: str, user: str, password: str, link: dict | None) -> dict:
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    if link:
        cdp.send("Network.emulateNetworkConditions", link)
    got = {"bytes": 0, "requests": 0, "cached": 0}
    # one entry per request and redirect hop (a redirect keeps the requestId): url, type, start,
    # end (CDP's clock, seconds); hop[requestId] = the key of its current hop
    reqs: dict[str, dict] = {}
    hop: dict[str, str] = {}

    def sent(ev):
        rid = ev["requestId"]
        if rid in hop and "redirectResponse" in ev:
            reqs[hop[rid]]["end"] = ev["timestamp"]
        key = f"{rid}#{len([k for k in reqs if k.startswith(rid + '#')])}"
        hop[rid] = key
        reqs[key] = {"url": ev["request"]["url"], "type": ev.get("type", ""),
                     "start": ev["timestamp"]}

    def finished(ev):
        got["bytes"] += ev.get("encodedDataLength", 0)
        got["requests"] += 1
        if ev["requestId"] in hop:
            reqs[hop[ev["requestId"]]]["end"] = ev["timestamp"]
    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.loadingFinished", finished)
    cdp.on("Network.requestServedFromCache", lambda ev: got.__setitem__("cached", got["cached"] + 1))
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
    known = set(reqs)
    t0 = time.monotonic()
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=240000)
    t_redirect = time.monotonic() - t0
    page.wait_for_selector(".jp-LabShell #jp-main-statusbar", timeout=120000)
    page.wait_for_selector(".jp-DirListing-content", timeout=120000)
    t_usable = time.monotonic() - t0
    page.close()
    phases = network_phases([r for k, r in reqs.items() if k not in known], user)
    return {"redirect_s": round(t_redirect, 2), "usable_s": round(t_usable, 2), "network": phases,
            "after_redirect_s": round(t_usable - t_redirect, 2),
            "kbytes": round((got["bytes"] - before["bytes"]) / 1024, 1),
            "requests": got["requests"] - before["requests"],
            "from_cache": got["cached"] - before["cached"]}


def network_phases(reqs: list[dict], user: str) -> dict:
    """Where the browser's time went after the click, from its own network events (seconds from
    the first request after the click, the spawn POST): when JupyterLab's page was asked for and
    done, when its last script/font arrived, and the span and busy time of its API calls."""
    if not reqs:
        return {}
    t0 = min(r["start"] for r in reqs)

    def rel(x):
        return None if x is None else round(x - t0, 3)
    lab = [r for r in reqs if r["type"] == "Document" and f"/user/{user}/lab" in r["url"]]
    assets = [r for r in reqs if r["type"] in ("Script", "Stylesheet", "Font") and "end" in r]
    api = [r for r in reqs if r["type"] in ("XHR", "Fetch") and f"/user/{user}/" in r["url"]
           and "end" in r]
    busy, cur = 0.0, None  # the union of the API calls' intervals
    for a, b in sorted((r["start"], r["end"]) for r in api):
        if cur is None or a > cur[1]:
            if cur is not None:
                busy += cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    if cur is not None:
        busy += cur[1] - cur[0]
    durs = sorted(r["end"] - r["start"] for r in api)
    return {
        "lab_page_start_s": rel(lab[0]["start"]) if lab else None,
        "lab_page_done_s": rel(lab[-1].get("end")) if lab else None,
        "last_asset_done_s": rel(max((r["end"] for r in assets), default=None)),
        "assets": len(assets),
        "api_calls": len(api),
        "api_first_start_s": rel(min((r["start"] for r in api), default=None)),
        "api_last_done_s": rel(max((r["end"] for r in api), default=None)),
        "api_busy_s": round(busy, 3),
        "api_call_p50_s": round(durs[len(durs) // 2], 3) if durs else None,
        "api_call_max_s": round(durs[-1], 3) if durs else None,
    }


def launch(p):
    """Debian's Chromium, headless. The site's certificate is trusted by its key (as a user's
    browser trusts a real one): Chromium keeps nothing in its HTTP cache from a connection with a
    certificate error, so with ignore_https_errors a "returning user" would download everything
    again."""
    return p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                             args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                   "--disable-background-networking",
                                   f"--ignore-certificate-errors-spki-list={site_spki()}"])


def wait_usable(page, user: str) -> None:
    """Until the browser is on the user's JupyterLab and its shell, status bar and file listing
    are shown."""
    page.wait_for_url(f"**/user/{user}/lab**", timeout=240000)
    page.wait_for_selector(".jp-LabShell #jp-main-statusbar", timeout=120000)
    page.wait_for_selector(".jp-DirListing-content", timeout=120000)


def run_samples(browser, user: str, pw: str, runs: int, sample) -> dict:
    """``sample(ctx)`` ``runs`` times, each in a new browser profile with the user's server
    stopped before and after; {"samples", "errors", "n", "failures", "usable_p50_s",
    "usable_max_s"} (a failure is a result, not a crash)."""
    samples, errors = [], []
    for _ in range(runs):
        stop(user, pw)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        try:
            samples.append(sample(ctx))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}"[:300])
        finally:
            ctx.close()
            stop(user, pw)
    block = {"samples": samples, "errors": errors, "n": runs, "failures": len(errors)}
    usable = [s["usable_s"] for s in samples]
    if usable:
        block.update(usable_p50_s=round(statistics.median(usable), 2), usable_max_s=max(usable))
    return block


def measure(backends: list[str], runs: int, say=print) -> dict:
    """Every backend x scenario ``runs`` times; {"<backend>/<scenario>": {"samples": [...],
    "usable_p50_s", "usable_max_s", ...}} (also used by performance/bench.py)."""
    users = demo_users()
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for backend in backends:
                user = USERS[backend]
                pw = users[user]["password"]
                for scenario in ("cold", "warm", "slow"):
                    def sample(ctx, scenario=scenario):
                        if scenario == "warm":  # one load first fills the profile's cache
                            one_run(ctx, backend, user, pw, None)
                            stop(user, pw)
                        return one_run(ctx, backend, user, pw, SLOW if scenario == "slow" else None)
                    block = run_samples(browser, user, pw, runs, sample)
                    samples, usable = block["samples"], [s["usable_s"] for s in block["samples"]]
                    errors = block["errors"]
                    if usable:
                        block.update(
                            redirect_p50_s=round(statistics.median(s["redirect_s"] for s in samples), 2),
                            after_redirect_p50_s=round(statistics.median(
                                s["after_redirect_s"] for s in samples), 2),
                            kbytes_p50=round(statistics.median(s["kbytes"] for s in samples), 1),
                            requests_p50=statistics.median(s["requests"] for s in samples))
                    out[f"{backend}/{scenario}"] = block
                    say(f"browser {backend:9s} {scenario:5s} "
                        + (f"usable p50 {block['usable_p50_s']:5.2f} s (max {block['usable_max_s']:5.2f}); "
                           f"redirect p50 {block['redirect_p50_s']:5.2f} s; {block['kbytes_p50']:7.1f} kB "
                           f"in {block['requests_p50']:.0f} requests" if usable else "no sample")
                        + (f"; {len(errors)} failed: {errors[0]}" if errors else ""))
        finally:
            browser.close()
    return out



def login_to_usable(ctx, backend: str, user: str, password: str, start_on_login: bool,
                    think_s: float = 0.0) -> dict:
    """Login click (t=0) -> JupyterLab usable, as a returning user does it: with start on login
    the login itself starts the server and the home page's "My Server" leads to it; without it,
    the spawn page's preset and Start. The user must have last options of that backend."""
    page = ctx.new_page()
    page.goto(f"{SITE_URL}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    t0 = time.monotonic()
    page.click("#login_submit")
    if start_on_login:
        page.wait_for_url("**/hub/home**", timeout=60000)
        t_home = time.monotonic() - t0
        page.wait_for_timeout(think_s * 1000)  # a person reading the page before the click
        page.click("#start")
    else:
        page.wait_for_url("**/hub/spawn**", timeout=60000)
        t_home = time.monotonic() - t0
        page.wait_for_timeout(think_s * 1000)
        page.get_by_label(PRESETS[backend]).check()
        page.click("input[type=submit], button[type=submit]")
    wait_usable(page, user)
    t_usable = time.monotonic() - t0
    page.close()
    return {"page_s": round(t_home, 2), "usable_s": round(t_usable, 2)}


def measure_login_start(backends: list[str], runs: int, set_start_on_login, say=print,
                        think_s: float = 0.0) -> dict:
    """Login -> usable with ``start_on_login`` off and on (``set_start_on_login(bool)`` switches
    the hub's setting and waits for the hub); {"<backend>/<off|on>": {...}}. ``think_s``: how
    long the user looks at the page after the login before clicking (0: a script's user)."""
    users = demo_users()
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for mode in ("off", "on"):
                set_start_on_login(mode == "on")
                _CLIENTS.clear()  # the hub restarted: log in again for the stops
                for backend in backends:
                    user = USERS[backend]
                    pw = users[user]["password"]
                    block = run_samples(browser, user, pw, runs, lambda ctx: login_to_usable(
                        ctx, backend, user, pw, mode == "on", think_s))
                    usable, errors = [s["usable_s"] for s in block["samples"]], block["errors"]
                    out[f"{backend}/{mode}"] = block
                    say(f"login->usable {backend:9s} start_on_login {mode:3s}: "
                        + (f"p50 {block['usable_p50_s']:5.2f} s (max {block['usable_max_s']:5.2f})"
                           if usable else "no sample")
                        + (f"; {len(errors)} failed: {errors[0]}" if errors else ""))
        finally:
            set_start_on_login(False)
            browser.close()
    return out

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="browser_bench")
    ap.add_argument("--runs", type=int, default=3, help="runs per backend and scenario")
    ap.add_argument("--quick", action="store_true", help="1 run each")
    ap.add_argument("--backends", default="htcondor,slurm")
    ap.add_argument("--out", default=str(ROOT / "performance/results/browser.json"))
    args = ap.parse_args(argv)
    runs = 1 if args.quick else args.runs
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_avg": os.getloadavg()},
                     "site": SITE_URL, "runs": runs, "link_slow": SLOW,
                     "scenarios": measure(args.backends.split(","), runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
