"""performance/bench.py's verdict and goals table (issue 16's goals) on made-up results: each goal
is met exactly up to its bound, and a missing figure is never "met"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "performance"))
spec = importlib.util.spec_from_file_location("bench", ROOT / "performance" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def results(lane_p50=2.0, cold=4.0, back=10.0, sl_queries=6, rss=600.0, ready=120):
    br = {f"{b}/{s}": {"usable_p50_s": v, "n": 3, "failures": 0}
          for b in ("htcondor", "slurm") for s, v in (("cold", cold), ("warm", 2.0), ("slow", 5.0))}
    return {
        "htcondor_lane": {"p50_s": lane_p50, "p95_s": 2.5, "all": {"n": 40, "failures": 0},
                          "burst": {"n": 20, "failures": 0, "max_s": 12.0}},
        "slurm_jhub": {"p50_s": 2.5, "p95_s": 3.0, "burst": {"n": 20, "failures": 0, "max_s": 11.0}},
        "browser": {"runs": 3, "results": br},
        "scale": {"n": 120, "ready": ready, "rss_mb": {"sum_hub_chp_nginx_bridge": rss},
                  "restart": {"back_s": back},
                  "queries": {"hub_counter": {"htcondor": 6, "slurm": sl_queries},
                              "expected_per_backend": 6.0}},
    }


def test_everything_at_its_bound_is_met():
    v = bench.verdict(results())
    assert all(all(d.values()) for d in v.values()), v
    table = bench.goals_table({"scenarios": results(), "verdict": v})
    assert len(table) == 2 + 7 and all(row.endswith("| met |") for row in table[2:]), table


def test_each_goal_missed_just_past_its_bound():
    assert not all(bench.verdict(results(lane_p50=2.01))["htcondor_lane"].values())
    assert not all(bench.verdict(results(cold=4.01))["browser_htcondor"].values())
    for bad in ({"back": 10.01}, {"sl_queries": 8}, {"rss": 601}, {"ready": 119}):
        sc = bench.verdict(results(**bad))["scale"]
        assert sum(1 for ok in sc.values() if not ok) == 1, (bad, sc)  # that goal alone


def test_a_missing_figure_is_not_met():
    r = results()
    del r["browser"]["results"]["slurm/warm"]
    r["scale"]["queries"] = {"error": "Prometheus did not answer"}
    v = bench.verdict(r)
    assert v["browser_slurm"]["warm_p50_s<=3"] is False
    assert v["scale"]["1_query_per_backend_per_interval"] is False
    assert bench.verdict({})["htcondor_lane"]["p50_s<=2"] is False
