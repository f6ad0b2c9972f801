"""Form data is converted to the same JSON shape the REST API takes."""

import pytest

from appliance.hub.form import options_from_form
from appliance.options import Bounds, OptionsError, validate_options


def test_form_conversion_and_validation():
    data = {"backend": ["slurm"], "interface": ["lab"], "cpus": ["2"], "memory_gb": ["4"],
            "runtime_hours": [""], "partition": ["jhub"], "reservation": [""], "constraint": ["epyc"],
            "env": ["A=1\r\nB=x=y\n\n"]}
    opts = options_from_form(data)
    assert opts == {"backend": "slurm", "interface": "lab", "cpus": 2, "memory_gb": 4.0,
                    "partition": "jhub", "constraint": "epyc", "env": {"A": "1", "B": "x=y"}}
    validate_options(opts, Bounds())


def test_slurm_fields_dropped_for_htcondor():
    assert "partition" not in options_from_form({"backend": ["htcondor"], "partition": ["jhub"]})


@pytest.mark.parametrize("data,field", [
    ({"cpus": ["two"]}, "cpus"),
    ({"env": ["NOEQUALS"]}, "env"),
    ({"evil": ["1"]}, "evil"),
])
def test_form_errors(data, field):
    with pytest.raises(OptionsError) as e:
        options_from_form(data)
    assert e.value.field == field


# ---- rendering: templates/spawn_form.html from the data the spawner passes in

from html.parser import HTMLParser  # noqa: E402

from appliance.hub.form import form_context, render_form  # noqa: E402


class Fields(HTMLParser):
    """Form controls, labels and the SLURM fieldset of a rendered form."""

    def __init__(self, html: str):
        super().__init__()
        self.controls: dict[str, dict] = {}  # id -> attributes (+ "tag")
        self.labels: dict[str, str] = {}  # for-id -> text
        self.options: dict[str, list[str]] = {}  # select id -> option values
        self.in_slurm: set[str] = set()
        self.scripts = 0
        self.unnamed: list[str] = []
        self._label, self._select, self._fieldset = None, None, False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "fieldset" and a.get("id") == "slurm-options":
            self._fieldset = True
        if tag in ("input", "select", "textarea") and "name" not in a:
            self.unnamed.append(a["id"])  # not submitted (the script's feature checkboxes)
        elif tag in ("input", "select", "textarea"):
            self.controls[a["id"]] = dict(a, tag=tag)
            if self._fieldset:
                self.in_slurm.add(a["name"])
        if tag == "select":
            self._select = a["id"]
            self.options[a["id"]] = []
        if tag == "option":
            self.options[self._select].append(a["value"])
        if tag == "label" and "for" in a:
            self._label = a["for"]
            self.labels[self._label] = ""
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "fieldset":
            self._fieldset = False
        if tag == "label":
            self._label = None

    def handle_data(self, data):
        if self._label:
            self.labels[self._label] += data


SLURM = {"partitions": [{"name": "jhub"}, "upex"], "reservations": [{"name": "belle2"}],
         "features": ["epyc", "avx512"]}


def test_rendered_form_fields_ids_and_labels():
    bounds = Bounds(default_backend="htcondor", max_cpus=4, max_memory_gb=8, max_gpus=2)
    f = Fields(render_form(form_context(bounds, SLURM)))
    assert {i: c["name"] for i, c in f.controls.items()} == {
        "shown": "shown", "backend-htcondor": "backend", "backend-slurm": "backend", "interface": "interface",
        "cpus": "cpus", "memory_gb": "memory_gb", "gpus": "gpus",
        "runtime_hours": "runtime_hours", "partition": "partition",
        "reservation": "reservation", "constraint": "constraint", "env": "env"}
    assert "checked" in f.controls["backend-htcondor"] and "checked" not in f.controls["backend-slurm"]
    assert f.controls["cpus"]["max"] == "4" and f.controls["memory_gb"]["max"] == "8"
    assert f.controls["gpus"]["max"] == "2" and f.controls["runtime_hours"]["max"] == "168"
    assert f.labels["cpus"] == "CPU cores (1-4)"
    assert f.labels["memory_gb"] == "Memory in GiB (up to 8)"
    assert f.labels["runtime_hours"] == "Runtime in hours (empty: default; up to 168)"
    assert f.labels["constraint"] == "Node features (e.g. epyc&avx512; known: epyc, avx512)"
    assert f.options == {"interface": ["lab", "notebook"], "partition": ["", "jhub", "upex"],
                         "reservation": ["", "belle2"]}
    assert f.in_slurm == {"partition", "reservation", "constraint"}
    assert f.scripts == 4  # the SLURM-only toggle, limits and constraint schema (JSON), the fields script
    assert f.unnamed == ["feature-1", "feature-2"]  # the feature checkboxes


def test_form_without_slurm_or_gpus():
    bounds = Bounds(backends=("htcondor",), max_runtime_hours=12.5)
    html = render_form(form_context(bounds))
    f = Fields(html)
    assert 'id="slurm-options"' not in html and "gpus" not in f.controls
    assert "partition" not in f.controls and f.controls["runtime_hours"]["max"] == "12.5"
    assert "checked" in f.controls["backend-htcondor"]


def test_first_backend_checked_without_default_and_slurm_error_shown():
    bounds = Bounds(backends=("slurm", "htcondor"))
    html = render_form(form_context(bounds, {"error": "sinfo <timed out>"}))
    assert "checked" in Fields(html).controls["backend-slurm"]
    assert "SLURM information unavailable: sinfo &lt;timed out&gt;" in html
    assert Fields(html).options["partition"] == [""]
    assert "<code>epyc</code>" in html  # example when the cluster names no features


def test_scheduler_text_is_escaped():
    evil = {"partitions": ['"><script>alert(1)</script>'], "reservations": [],
            "features": ["<b>"]}
    html = render_form(form_context(Bounds(), evil))
    assert "<script>alert" not in html and "<b>" not in html
    assert Fields(html).options["partition"] == ["", '"><script>alert(1)</script>']


def test_admin_template_in_template_paths_wins(tmp_path):
    (tmp_path / "spawn_form.html").write_text(
        '<input name="cpus" id="cpus" max="{{ max_cpus }}"> site form')
    html = render_form(form_context(Bounds(max_cpus=5)), [str(tmp_path)])
    assert html == '<input name="cpus" id="cpus" max="5"> site form'
    # a directory without the file falls through to the package's form
    assert 'id="slurm-options"' in render_form(form_context(Bounds(), SLURM), ["/nonexistent"])


def test_admin_template_can_extend_the_shipped_one(tmp_path):
    (tmp_path / "spawn_form.html").write_text(
        '{% extends "appliance/spawn_form.html" %}'
        '{% from "appliance/spawn_form_macros.html" import select %}'
        '{% block env %}<p id="site-note">No environment variables here.</p>{% endblock %}'
        '{% block slurm %}<fieldset id="slurm-options">'
        '{{ select("partition", "Queue", "(any)", slurm.partitions) }}</fieldset>{% endblock %}')
    html = render_form(form_context(Bounds(), SLURM), [str(tmp_path)])
    f = Fields(html)
    assert 'id="site-note"' in html and "env" not in f.controls
    assert f.labels["partition"] == "Queue" and f.options["partition"] == ["", "jhub", "upex"]
    assert f.in_slurm == {"partition"} and f.scripts == 3
