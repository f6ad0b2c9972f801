"""appliance-report: histogram arithmetic and data collection (fake Prometheus answers), and
that the three pictures are drawn."""

import math

import pytest

from appliance import report as R


def test_bucket_counts_and_quantile_match_prometheus():
    cum = {1.0: 2, 2.0: 6, 5.0: 10, math.inf: 10}
    assert R.bucket_counts(cum) == [(0.0, 1.0, 2), (1.0, 2.0, 4), (2.0, 5.0, 4), (5.0, math.inf, 0)]
    assert R.quantile(0.5, cum) == pytest.approx(1.75)  # rank 5 in (1, 2]: 1 + 1 * 3/4
    assert R.quantile(0.95, cum) == pytest.approx(2 + 3 * 3.5 / 4)
    assert R.quantile(0.5, {}) is None and R.quantile(0.5, {1.0: 0}) is None
    assert R.parse_duration("15m") == 900 and R.parse_duration("2d") == 172800


def fake_prometheus(start):
    def fetch(path, params):
        q = params["query"]
        if path == "/api/v1/query_range":
            ts = [start + i * 60 for i in range(5)]
            if "appliance_sessions" in q:
                return {"result": [
                    {"metric": {"backend": "slurm", "lane": "jhub"}, "values": [[t, "2"] for t in ts]},
                    {"metric": {"backend": "htcondor", "lane": "lane.mini.test"},
                     "values": [[t, str(i)] for i, t in enumerate(ts)]}]}
            return {"result": [{"metric": {}, "values": [[t, "3"] for t in ts]}]}
        if "bucket" in q:
            base = 1 if params["time"] == start else 9  # 8 spawns in the period
            return {"result": [{"metric": {"backend": "htcondor", "le": le}, "value": [0, str(v + (base if v else 0))]}
                               for le, v in (("1", 0), ("5", 8), ("10", 9), ("+Inf", 9))]}
        return {"result": [{"metric": {}, "value": [0, "3"]}]}
    return fetch


def test_collect_and_draw(tmp_path):
    start = 1_800_000_000.0
    data = R.collect(fake_prometheus(start), start, start + 240, 60)
    assert data["users_per_day"][0][1] == 3
    assert set(data["sessions"]) == {"slurm/jhub", "htcondor/lane.mini.test"}
    assert data["latency"]["htcondor"]["5.0"] == 8
    paths = R.draw(data, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "report-users-per-day.png", "report-sessions-by-lane.png", "report-spawn-latency.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 5000 for p in paths)
