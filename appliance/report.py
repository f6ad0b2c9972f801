"""``appliance-report``: usage pictures from Prometheus (the ones DESY's paper shows).

* ``users-per-day.png``      distinct users per day (JupyterHub's ``jupyterhub_active_users``
  with ``period="24h"``, read at the end of each day; the rolling value is drawn as a line);
* ``sessions-by-lane.png``   concurrent sessions per backend and lane/partition over time,
  stacked (``appliance_sessions{state="running"}``);
* ``spawn-latency.png``      spawn-latency distribution per backend over the period
  (``appliance_spawn_duration_seconds`` histogram, started spawns: the counters at the end of
  the period minus at its start), with p50/p95.

Reads the Prometheus HTTP API (``/api/v1/query_range``, ``/api/v1/query``) only; matplotlib
draws (``pip install matplotlib`` where it runs; the appliance image does not ship it).
``make report`` runs it against the mini site's Prometheus and writes into ``docs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request
from typing import Callable, Optional

Fetch = Callable[[str, dict], dict]


def http_fetch(base: str, timeout: float = 30) -> Fetch:
    def fetch(path: str, params: dict) -> dict:
        url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = json.load(r)
        if data.get("status") != "success":
            raise RuntimeError(f"Prometheus: {data.get('error') or data}")
        return data["data"]
    return fetch


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip()
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def range_series(fetch: Fetch, query: str, start: float, end: float, step: float) -> dict:
    """{label tuple: ([t...], [v...])} of a range query."""
    data = fetch("/api/v1/query_range", {"query": query, "start": start, "end": end,
                                         "step": max(1, int(step))})
    out = {}
    for r in data.get("result", []):
        key = tuple(sorted(r["metric"].items()))
        ts = [float(t) for t, _ in r["values"]]
        vs = [float(v) for _, v in r["values"]]
        out[key] = (ts, vs)
    return out


def instant(fetch: Fetch, query: str, at: float) -> list:
    return fetch("/api/v1/query", {"query": query, "time": at}).get("result", [])


def bucket_counts(cumulative: dict[float, float]) -> list[tuple[float, float, float]]:
    """Cumulative histogram buckets {le: count} -> [(lower, upper, count)] (pure)."""
    edges = sorted(cumulative)
    out, prev_le, prev_c = [], 0.0, 0.0
    for le in edges:
        c = cumulative[le]
        out.append((prev_le, le, max(0.0, c - prev_c)))
        prev_le, prev_c = le, c
    return out


def quantile(q: float, cumulative: dict[float, float]) -> Optional[float]:
    """Prometheus' histogram_quantile (linear inside the bucket), pure."""
    edges = sorted(cumulative)
    if not edges:
        return None
    total = cumulative[edges[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in edges:
        c = cumulative[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return prev_le


def day_starts(start: float, end: float) -> list[float]:
    d = math.floor(start / 86400) * 86400
    out = []
    while d < end:
        out.append(d)
        d += 86400
    return out


def collect(fetch: Fetch, start: float, end: float, step: float) -> dict:
    """Everything the pictures need, as plain data (also written as report.json)."""
    rolling = range_series(fetch, 'max(jupyterhub_active_users{period="24h"})', start, end, step)
    per_day = []
    for d in day_starts(start, end):
        at = min(d + 86400, end)
        r = instant(fetch, 'max(max_over_time(jupyterhub_active_users{period="24h"}[%ds]))'
                    % max(60, int(at - max(d, start))), at)
        per_day.append((d, float(r[0]["value"][1]) if r else 0.0))
    sessions = range_series(
        fetch, 'sum by (backend, lane) (appliance_sessions{state="running"})', start, end, step)
    # Exact counts: the counters at the end minus at the start (increase() would extrapolate).
    q = 'sum by (backend, le) (appliance_spawn_duration_seconds_bucket{outcome="started"})'
    at_start = {(r["metric"].get("backend", "?"), r["metric"]["le"]): float(r["value"][1])
                for r in instant(fetch, q, start)}
    latency: dict[str, dict[float, float]] = {}
    for r in instant(fetch, q, end):
        backend, le_text = r["metric"].get("backend", "?"), r["metric"]["le"]
        le = float("inf") if le_text == "+Inf" else float(le_text)
        v, v0 = float(r["value"][1]), at_start.get((backend, le_text), 0.0)
        latency.setdefault(backend, {})[le] = v - v0 if v >= v0 else v  # v < v0: counter reset
    return {
        "start": start, "end": end,
        "rolling_users": [list(v) for v in rolling.values()][:1],
        "users_per_day": per_day,
        "sessions": {f"{dict(k).get('backend', '?')}/{dict(k).get('lane', '?')}": v
                     for k, v in sessions.items()},
        "latency": {b: {str(k): v for k, v in c.items()} for b, c in latency.items()},
    }


def draw(data: dict, outdir: str, prefix: str = "report-") -> list[str]:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("appliance-report needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from datetime import datetime, timezone

    def dt(ts):
        return [datetime.fromtimestamp(t, timezone.utc) for t in ts]

    os.makedirs(outdir, exist_ok=True)
    paths = []
    span = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(data['start']))} - " \
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(data['end']))}"

    # 1. distinct users per day (bars, one per calendar day) and the rolling 24 h value
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    days = data["users_per_day"]
    labels = [time.strftime("%Y-%m-%d", time.gmtime(d)) for d, _ in days]
    ax.bar(range(len(days)), [v for _, v in days], color="#4c72b0")
    ax.set_xticks(range(len(days)))
    ax.set_xticklabels(labels, rotation=45 if len(days) > 3 else 0, fontsize=8)
    ax.set_ylabel("distinct users")
    ax.set_title("per day")
    if data["rolling_users"]:
        ts, vs = data["rolling_users"][0]
        ax2.plot(dt(ts), vs, color="#dd8452", drawstyle="steps-post")
    ax2.set_title("in the last 24 h, over the period")
    ax2.set_ylim(bottom=0)
    ax2.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.suptitle(f"Distinct users ({span})")
    fig.autofmt_xdate()
    paths.append(os.path.join(outdir, f"{prefix}users-per-day.png"))
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    # 2. concurrent sessions per lane/partition, stacked
    fig, ax = plt.subplots(figsize=(8, 4))
    series = data["sessions"]
    if series:
        grid = sorted({t for ts, _ in series.values() for t in ts})
        stacks, labels = [], []
        for name, (ts, vs) in sorted(series.items()):
            m = dict(zip(ts, vs))
            stacks.append([m.get(t, 0.0) for t in grid])
            labels.append(name)
        ax.stackplot(dt(grid), *stacks, labels=labels, step="post")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper left", title="backend/lane")
    ax.set_ylabel("running sessions")
    ax.set_title(f"Concurrent sessions per lane/partition ({span})")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    fig.autofmt_xdate()
    paths.append(os.path.join(outdir, f"{prefix}sessions-by-lane.png"))
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    # 3. spawn latency per backend
    lat = {b: {float(k): v for k, v in c.items()} for b, c in data["latency"].items()}
    fig, axes = plt.subplots(1, max(1, len(lat)), figsize=(5 * max(1, len(lat)), 4), squeeze=False)
    for ax, (backend, cum) in zip(axes[0], sorted(lat.items())):
        rows = [(lo, hi, n) for lo, hi, n in bucket_counts(cum) if not math.isinf(hi)]
        labels = [f"{lo:g}-{hi:g}" for lo, hi, _ in rows]
        ax.bar(range(len(rows)), [n for *_, n in rows], color="#55a868")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=60, fontsize=7)
        p50, p95 = quantile(0.5, cum), quantile(0.95, cum)
        total = max(cum.values()) if cum else 0
        ax.set_title(f"{backend}: {total:.0f} spawns, p50 {p50 or 0:.1f} s, p95 {p95 or 0:.1f} s")
        ax.set_xlabel("spawn request -> server ready (s)")
        ax.set_ylabel("spawns")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Spawn latency per backend ({span})")
    paths.append(os.path.join(outdir, f"{prefix}spawn-latency.png"))
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", default=os.environ.get("APPLIANCE_PROMETHEUS_URL",
                                                           "http://localhost:9090"))
    ap.add_argument("--since", default="1d", help="period before --until, e.g. 30m, 12h, 7d")
    ap.add_argument("--until", type=float, default=None, help="end (epoch seconds; default now)")
    ap.add_argument("--step", default=None, help="resolution (default: period / 200)")
    ap.add_argument("--out", default="docs", help="directory for the PNGs and report.json")
    ap.add_argument("--prefix", default="report-")
    args = ap.parse_args(argv)
    end = args.until or time.time()
    start = end - parse_duration(args.since)
    step = parse_duration(args.step) if args.step else max(5.0, (end - start) / 200)
    try:
        data = collect(http_fetch(args.prometheus), start, end, step)
    except Exception as e:
        print(f"appliance-report: cannot read {args.prometheus}: {e}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.prefix}data.json"), "w") as f:
        json.dump(data, f, indent=1)
    for p in draw(data, args.out, args.prefix):
        print(p)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
