"""The spawn form's GPU and runtime limits per place (appliance.hub.form_limits) and how the
rendered form uses them without JavaScript."""

import json
import re

from appliance.hub.form import form_context, render_form
from appliance.hub.form_limits import field_limits, gpu_places
from appliance.options import Bounds

# what SlurmScheduler.describe_resources gives (access.describe), reduced to what the form reads
SLURM = {
    "default_partition": "jhub",
    "partitions": [
        {"name": "jhub", "max_gpus_per_node": 0, "max_runtime_hours": 168.0},
        {"name": "maxwell", "max_gpus_per_node": 2, "max_runtime_hours": 8.0},
        {"name": "all", "max_gpus_per_node": 4, "max_runtime_hours": 8.0},
    ],
    "reservations": [{"name": "belle2", "remaining_hours": 23.5, "end": 1796400000.0,
                      "partitions": ["jhub", "maxwell"]},
                     {"name": "forever", "remaining_hours": None, "end": None, "partitions": []}],
    "features": [],
}
BOUNDS = Bounds(max_gpus=2, max_runtime_hours=168)


def test_limits_per_place_capped_by_the_bounds():
    lim = field_limits(BOUNDS, 2, SLURM)
    assert lim["htcondor"] == {"gpus": 2, "runtime_hours": 168}
    parts = lim["slurm"]["partitions"]
    assert parts["jhub"] == {"gpus": 0, "runtime_hours": 168}
    assert parts["maxwell"] == {"gpus": 2, "runtime_hours": 8}
    assert parts["all"]["gpus"] == 2  # the node has 4, the hub allows 2
    assert lim["slurm"]["reservations"]["belle2"]["remaining_hours"] == 23.5
    assert lim["slurm"]["default_partition"] == "jhub" and lim["slurm"]["unknown"] is None
    assert lim["overall"] == {"gpus": 2, "runtime_hours": 168}
    assert gpu_places(lim) == ["HTCondor: up to 2", "SLURM partitions maxwell, all: up to 2"]


def test_no_gpus_anywhere_no_gpu_field():
    slurm = dict(SLURM, partitions=[dict(p, max_gpus_per_node=0) for p in SLURM["partitions"]])
    lim = field_limits(BOUNDS, 0, slurm)
    assert lim["overall"]["gpus"] == 0 and gpu_places(lim) == []
    html = render_form(form_context(BOUNDS, slurm, limits=lim))
    assert 'id="gpus"' not in html


def test_unknown_capacity_offers_the_bounds():
    lim = field_limits(BOUNDS, None, {"error": "scontrol timed out"})
    assert lim["htcondor"]["gpus"] == 2 and lim["slurm"]["unknown"] == {"gpus": 2, "runtime_hours": 168}
    assert lim["overall"]["gpus"] == 2


def test_rendered_form_without_js_takes_the_most_of_any_place():
    lim = field_limits(BOUNDS, 0, SLURM)  # GPUs only in Slurm
    html = render_form(form_context(BOUNDS, SLURM, limits=lim))
    assert re.search(r'id="gpus" min="0" max="2"', html)
    assert "SLURM partitions maxwell, all: up to 2" in html
    assert "Reservation belle2 ends in 23.5 h (2026-12-04 " in html
    data = re.search(r'<script type="application/json" id="form-limits">(.*?)</script>', html, re.S)
    assert json.loads(data.group(1)) == json.loads(json.dumps(lim))
