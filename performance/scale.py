"""The `scale` scenario of `make bench` (issue 16): DESY's jhub capacity, 120 concurrent sessions.

Started in waves the machine takes (``WAVE`` logins + spawns at a time, through the real front
door; nginx's login throttle answered by waiting its Retry-After), then held, measuring:

* ``ready``: how many of the sessions became ready, the time to start all, each spawn's total;
* ``rss_mb``: the appliance's resident memory while 120 are held: hub, CHP, nginx, credential
  bridge (the issue's sum) and every process of the appliance container (``ps`` in it);
* ``queries``: scheduler status queries per backend while held, against one per poll interval:
  the hub's own counter of its shared watchers' queries (``appliance_scheduler_status_queries_total``,
  read from the hub's /hub/metrics at both ends of the window) and, for Slurm, slurmctld's count of job-info RPCs (``sdiag``), which sees
  every query whoever makes it;
* ``restart``: ``supervisorctl restart jupyterhub`` while held (every route asked once before,
  ``held_check``, as users at work keep their servers' token caches warm), with sweeps over every
  route all through it: ``back_s`` = the command -> the end of the first sweep that began after
  the hub's API answered again (``hub_api_s``) and in which every route answered;
  ``failed_checks`` = route checks that failed from the command on;
then every server is stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import threading
import time
from typing import Any, Callable, Optional

from tests.conftest import SITE_URL, HubClient, ca_bundle, site_exec

WAVE = 6  # logins + spawns at a time: what 2 cores take while 100+ servers idle
POLL_WINDOW_S = 60.0  # how long the scheduler queries are counted while held


def login(user: str, password: str, deadline: float) -> HubClient:
    """A logged-in client with an API token; waits out nginx's login throttle (429)."""
    while True:
        c = HubClient()
        r = c.login(user, password)
        if r.status_code == 302:
            c.make_token()
            return c
        if r.status_code != 429 or time.time() > deadline:
            raise RuntimeError(f"login of {user} answered {r.status_code}")
        time.sleep(float(r.headers.get("Retry-After", "2")))


def start_one(user: str, password: str, backend: str, timeout: float) -> dict:
    rec: dict[str, Any] = {"user": user, "backend": backend, "ok": False}
    t0 = time.time()
    try:
        c = login(user, password, t0 + timeout)
        rec["client"] = c
        t_req = time.time()
        r = c.spawn({"backend": backend})
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawn answered {r.status_code}: {r.text[:300]}")
        c.wait_ready(timeout=max(10.0, timeout - (time.time() - t0)))
        rec.update(ok=True, login_s=round(t_req - t0, 2), total_s=round(time.time() - t_req, 2))
    except Exception as e:  # a failure is a result
        rec["error"] = f"{type(e).__name__}: {e}"[:400]
    return rec


def appliance_rss() -> dict[str, float]:
    """Resident MB of the appliance's processes by part (ps in the container)."""
    out = site_exec("appliance", "ps", "-eo", "rss=,args=").stdout
    parts = {"hub": 0, "chp": 0, "nginx": 0, "bridge": 0, "other": 0}
    for line in out.splitlines():
        rss, _, args = line.strip().partition(" ")
        if not rss.isdigit() or args.startswith("ps "):
            continue
        if "configurable-http-proxy" in args:
            part = "chp"
        elif args.startswith("nginx"):
            part = "nginx"
        elif "credd_bridge" in args or "appliance-bridge" in args:
            part = "bridge"
        elif re.search(r"\bjupyterhub\b", args) and "idle" not in args and "culler" not in args:
            part = "hub"
        else:
            part = "other"
        parts[part] += int(rss)
    mb = {k: round(v / 1024, 1) for k, v in parts.items()}
    mb["sum_hub_chp_nginx_bridge"] = round(sum(mb[k] for k in ("hub", "chp", "nginx", "bridge")), 1)
    mb["container_total"] = round(sum(parts.values()) / 1024, 1)
    return mb


def hub_counter(metric: str) -> dict[str, float]:
    """``metric`` by backend, read from the hub's own /hub/metrics now (with the Prometheus
    service's token, through the front door): an exact window, no scrape interval."""
    import requests

    token = site_exec("appliance", "cat", "/etc/appliance/secrets/metrics/prometheus.token",
                      check=False).stdout.strip()
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(f"{SITE_URL}/hub/metrics", headers={"Authorization": f"token {token}"},
                  verify=ca_bundle(), timeout=20)
    r.raise_for_status()
    out = {}
    for m in re.finditer(rf'^{metric}\{{[^}}]*backend="([^"]+)"[^}}]*\}} ([0-9.e+]+)$', r.text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def slurm_job_info_rpcs() -> Optional[int]:
    """slurmctld's count of REQUEST_JOB_INFO* RPCs since its start (sdiag), or None."""
    r = site_exec("slurmctld", "sdiag", check=False)
    if r.returncode != 0:
        return None
    total = 0
    section = False
    for line in r.stdout.splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            section = True
        elif line.startswith("Remote Procedure Call statistics by user"):
            break
        elif section:
            m = re.match(r"\s*(REQUEST_JOB_INFO\S*)\s+\(\s*\d+\)\s+count:(\d+)", line)
            if m:
                total += int(m.group(2))
    return total


def poll_interval() -> float:
    """The hub's shared status poll interval: ``c.Scheduler.poll_interval`` in the appliance's
    mounted config, else the traitlet's default (10 s)."""
    r = site_exec("appliance", "sh", "-c", "cat /etc/appliance/appliance_config.py "
                  "/etc/appliance/appliance_config.d/*.py 2>/dev/null", check=False)
    found = re.findall(r"^c\.Scheduler\.poll_interval\s*=\s*([0-9.]+)", r.stdout, re.M)
    return float(found[-1]) if found else 10.0


def sweep(clients: list[HubClient]) -> int:
    """Every user's server asked once (its /api/status with the user's token, 8 at a time);
    how many did not answer 200."""
    import requests

    def one(c: HubClient) -> bool:
        try:
            with requests.Session() as s:
                s.trust_env = False
                return s.get(c.user_url("/api/status"), headers={"Authorization": f"token {c.token}"},
                             verify=ca_bundle(), timeout=10).status_code == 200
        except requests.RequestException:
            return False
    with cf.ThreadPoolExecutor(8) as ex:
        return sum(1 for ok in ex.map(one, clients) if not ok)


def routes_back(clients: list[HubClient], since: float, timeout: float) -> dict:
    """Ask every user's server (its /api/status through the front door, with the user's token)
    until each has answered 200 once; seconds from ``since`` for the last one."""
    import requests

    pending = list(clients)
    lock = threading.Lock()
    last = [since]
    failed = [0]

    def one(c: HubClient) -> None:
        with requests.Session() as s:
            s.trust_env = False
            while time.time() < since + timeout:
                try:
                    r = s.get(c.user_url("/api/status"), headers={"Authorization": f"token {c.token}"},
                              verify=ca_bundle(), timeout=10)
                    if r.status_code == 200:
                        with lock:
                            last[0] = max(last[0], time.time())
                        return
                except requests.RequestException:
                    pass
                with lock:
                    failed[0] += 1
                time.sleep(0.5)

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, pending))
    return {"back_s": round(last[0] - since, 2), "failed_checks": failed[0]}


def hub_health_back(since: float, timeout: float = 120) -> Optional[float]:
    import requests

    while time.time() < since + timeout:
        try:
            with requests.Session() as s:
                s.trust_env = False
                if s.get(f"{SITE_URL}/hub/health", verify=ca_bundle(), timeout=3).status_code == 200:
                    return round(time.time() - since, 2)
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return None


def run(users: dict[str, dict], plan: list[tuple[str, str]], say: Callable[[str], None],
        timeout: float = 300) -> dict:
    """``plan``: (user, backend) pairs. Returns the scenario's figures; stops every server."""
    res: dict[str, Any] = {"n": len(plan), "wave": WAVE,
                           "backends": {b: sum(1 for _, x in plan if x == b) for _, b in plan}}
    recs: list[dict] = []
    t0 = time.time()
    try:
        say(f"scale: starting {len(plan)} sessions, {WAVE} at a time")
        with cf.ThreadPoolExecutor(WAVE) as ex:
            futs = [ex.submit(start_one, u, users[u]["password"], b, timeout) for u, b in plan]
            for i, f in enumerate(cf.as_completed(futs)):
                recs.append(f.result())
                if (i + 1) % 20 == 0:
                    say(f"scale: {i + 1}/{len(plan)} done, "
                        f"{sum(1 for r in recs if r['ok'])} ready, {time.time() - t0:.0f} s")
        ok = [r for r in recs if r["ok"]]
        res.update(ready=len(ok), failures=len(recs) - len(ok), start_all_s=round(time.time() - t0, 1),
                   errors=[f"{r['user']}: {r['error']}" for r in recs if not r["ok"]][:10],
                   total_s=sorted(r["total_s"] for r in ok))
        say(f"scale: {len(ok)}/{len(plan)} ready after {res['start_all_s']} s")
        clients = [r["client"] for r in ok]
        # held: memory, then the scheduler queries over a window with no spawn pending
        res["rss_mb"] = appliance_rss()
        say(f"scale: appliance RSS {json.dumps(res['rss_mb'])}")
        metric = "appliance_scheduler_status_queries_total"
        try:
            q0, s0, w0 = hub_counter(metric), slurm_job_info_rpcs(), time.time()
            time.sleep(POLL_WINDOW_S)  # the measured window itself (not a wait for readiness)
            q1, s1, w1 = hub_counter(metric), slurm_job_info_rpcs(), time.time()
            window, interval = w1 - w0, poll_interval()
            res["queries"] = {
                "window_s": round(window, 1),
                "hub_counter": {b: q1.get(b, 0) - q0.get(b, 0) for b in q1},
                # every squeue of anyone; the appliance's worker reaper adds one per 10 s
                "slurmctld_job_info_rpcs": (s1 - s0) if s0 is not None and s1 is not None else None,
                "poll_interval_s": interval,
                "expected_per_backend": round(window / interval, 1),
            }
            say(f"scale: scheduler queries in {window:.0f} s: {json.dumps(res['queries'])}")
        except Exception as e:  # noqa: BLE001 -- a figure missing, not a failed run
            res["queries"] = {"error": f"{type(e).__name__}: {e}"}
        # every route asked once while held (users at work: each server has its user's token
        # in its 5-min cache, as in use), then the hub restart
        t_h = time.time()
        res["held_check"] = routes_back(clients, t_h, timeout=120)
        # sweeps over every route (8 at a time) all through the restart; back_s = the command
        # -> the end of the first sweep that began after the hub's API answered again and in
        # which every route answered (the load test's measure, docs/reliability.md)
        sweeps: list[tuple[float, float, int]] = []
        stop_sweeping = threading.Event()

        def sweeper() -> None:
            while not stop_sweeping.is_set():
                t_a = time.time()
                failed = sweep(clients)
                sweeps.append((t_a, time.time(), failed))
        sw = threading.Thread(target=sweeper, daemon=True)
        sw.start()
        t_r = time.time()
        # a hub still alive 8 s after SIGTERM writes its threads' stacks to its log (SIGUSR1,
        # appliance/hub/jupyterhub_config.py): what keeps it from exiting (seen once: 30 s)
        dump = threading.Timer(8.0, lambda: site_exec(
            "appliance", "pkill", "-USR1", "-f", "bin/jupyterhub -f", check=False))
        dump.start()
        site_exec("appliance", "supervisorctl", "-c", "/etc/supervisor/appliance.conf",
                  "restart", "jupyterhub", timeout=180)
        dump.cancel()
        res["restart"] = {"command_s": round(time.time() - t_r, 2)}
        api = hub_health_back(t_r)
        res["restart"]["hub_api_s"] = api
        t_api = t_r + (api or 0)
        end = time.time() + 120
        while time.time() < end and not any(a >= t_api and f == 0 for a, _, f in sweeps):
            time.sleep(0.2)
        stop_sweeping.set()
        sw.join(timeout=60)
        good = [b for a, b, f in sweeps if a >= t_api and f == 0]
        res["restart"].update(
            back_s=round(good[0] - t_r, 2) if good else None,
            failed_checks=sum(f for a, _, f in sweeps if a >= t_r - 1),
            sweeps=len(sweeps))
        say(f"scale: hub restart: {json.dumps(res['restart'])}")
    finally:
        say("scale: stopping every server")
        t_s = time.time()

        def stop(r: dict) -> None:
            c = r.get("client")
            if c is None:
                return
            try:
                c.stop(timeout=120)
            except Exception as e:  # noqa: BLE001
                say(f"scale: stop {r['user']}: {e}")
        with cf.ThreadPoolExecutor(8) as ex:
            list(ex.map(stop, recs))
        res["stop_all_s"] = round(time.time() - t_s, 1)
        for r in recs:
            r.pop("client", None)
    return res
