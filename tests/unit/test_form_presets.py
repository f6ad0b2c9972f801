"""Presets, remembered choices and refusals next to their field: the spawn form rendered whole
from plain data (templates/spawn_form.html via appliance.hub.form), and the form data it sends
back turned into user_options."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from traitlets import TraitError
from traitlets.config import Config

from appliance.hub.form import (
    PresetError, check_presets, form_context, form_values, matching_preset, options_from_form,
    render_form, summary)
from appliance.hub.spawner import BatchSpawner
from appliance.options import Bounds, OptionsError, validate_options

BOUNDS = Bounds(default_backend="htcondor", max_cpus=4, max_memory_gb=64, max_gpus=2)
SLURM = {"partitions": ["jhub", "maxwell"], "reservations": [], "features": ["epyc"]}
PRESETS = check_presets([
    {"name": "Standard notebook", "description": "HTCondor notebook lane",
     "options": {"backend": "htcondor", "cpus": 1, "memory_gb": 2}},
    {"name": "SLURM jhub notebook", "description": "",
     "options": {"backend": "slurm", "partition": "jhub", "cpus": 2, "memory_gb": 4}},
    {"name": "Large memory", "description": "16 GiB for 8 hours",
     "options": {"backend": "htcondor", "cpus": 4, "memory_gb": 16, "runtime_hours": 8}},
    {"name": "Upex node", "description": "bob's group only",
     "options": {"backend": "slurm", "partition": "upex"}},
], BOUNDS)


class Page(HTMLParser):
    """What a browser without JavaScript would submit and show: each control's value, the
    checked radios, labels by their for=, error messages by id, <details> open or not."""

    def __init__(self, html: str):
        super().__init__()
        self.controls: dict[str, dict] = {}  # id -> attributes (+ tag, text of textareas)
        self.labels: dict[str, str] = {}
        self.texts: dict[str, str] = {}  # id -> text of elements with an id (p, div)
        self.details_open = None
        self._stack: list[tuple[str, str]] = []  # (tag, id or for) whose text is collected
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea"):
            self.controls[a["id"]] = dict(a, tag=tag, text="")
            self._select = a["id"] if tag == "select" else getattr(self, "_select", None)
        if tag == "option" and "selected" in a:
            self.controls[self._select]["value"] = a["value"]
        if tag == "details":
            self.details_open = "open" in a
        if tag == "label" and "for" in a:
            self.labels[a["for"]] = ""
            self._stack.append(("label", a["for"]))
        elif tag in ("p", "div", "textarea") and "id" in a:
            self.texts[a["id"]] = ""
            self._stack.append((tag, a["id"]))

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1][0] == tag:
            self._stack.pop()

    def handle_data(self, data):
        for tag, key in self._stack:
            (self.labels if tag == "label" else self.texts)[key] += data

    def checked(self, name: str) -> str:
        return next(c["value"] for c in self.controls.values()
                    if c.get("name") == name and "checked" in c)

    def submit(self) -> dict[str, list[str]]:
        """The form data a browser without JavaScript sends (every control is enabled then)."""
        data: dict[str, list[str]] = {}
        for i, c in self.controls.items():
            if "name" not in c:  # a browser submits only named controls
                continue
            if c["tag"] == "input" and c["type"] == "radio":
                if "checked" in c:
                    data[c["name"]] = [c["value"]]
            elif c["tag"] == "textarea":
                data[c["name"]] = [self.texts.get(i, "")]
            else:
                data[c["name"]] = [c.get("value", "")]
        return data


def page(**kw) -> Page:
    return Page(render_form(form_context(BOUNDS, SLURM, PRESETS, **kw)))


def test_presets_are_cards_with_labels_and_the_first_is_chosen():
    p = page()
    radios = {i: c for i, c in p.controls.items() if c.get("name") == "preset"}
    # "Upex node" names a partition this user is not offered: no card
    assert [c["value"] for c in radios.values()] == [
        "Standard notebook", "SLURM jhub notebook", "Large memory", ""]
    assert p.labels["preset-1"] == "Standard notebook" and p.labels["preset-custom"] == "Custom"
    assert p.checked("preset") == "Standard notebook"
    assert "HTCondor notebook lane" in p.texts["preset-1-text"]
    assert "HTCondor, 4 CPUs, 16 GiB, 8 h, JupyterLab" in p.texts["preset-3-text"]
    assert p.controls["preset-3"]["aria-describedby"] == "preset-3-text"
    # picking it fills the fields (JavaScript): the values it carries
    assert json.loads(p.controls["preset-2"]["data-values"]) == {
        "backend": "slurm", "interface": "lab", "cpus": "2", "memory_gb": "4", "gpus": "0",
        "runtime_hours": "", "partition": "jhub", "reservation": "", "constraint": ""}
    assert p.details_open is False  # the fields wait under "Advanced"
    # every field keeps its label
    for field in ("cpus", "memory_gb", "gpus", "runtime_hours", "partition", "env"):
        assert p.labels[field], field


def test_without_javascript_a_chosen_preset_is_used_when_fields_are_left_alone():
    p = page()
    data = p.submit()
    assert data["preset"] == ["Standard notebook"] and data["cpus"] == ["1"]
    data["preset"] = ["Large memory"]  # picked without JavaScript: the fields still show defaults
    opts = options_from_form(data, PRESETS, BOUNDS)
    assert opts == {"backend": "htcondor", "interface": "lab", "cpus": 4, "memory_gb": 16.0,
                    "gpus": 0, "runtime_hours": 8.0}
    validate_options(opts, BOUNDS)
    data["memory_gb"] = ["24"]  # ... a field the user changed counts on top of the preset
    data["env"] = ["MYVAR=1"]
    opts = options_from_form(data, PRESETS, BOUNDS)
    assert opts["memory_gb"] == 24.0 and opts["cpus"] == 4 and opts["env"] == {"MYVAR": "1"}


def test_with_javascript_the_filled_fields_and_new_snapshot_give_the_same_options():
    p = page()
    data = p.submit()
    card = json.loads(p.controls["preset-2"]["data-values"])
    data.update({k: [v] for k, v in card.items()}, preset=["SLURM jhub notebook"])
    data["shown"] = [json.dumps({**card, "env": ""})]
    assert options_from_form(data, PRESETS, BOUNDS) == {
        "backend": "slurm", "interface": "lab", "cpus": 2, "memory_gb": 4.0, "gpus": 0,
        "partition": "jhub"}


def test_custom_card_uses_the_fields_and_unknown_preset_is_refused():
    data = page().submit()
    data.update(preset=[""], cpus=["3"])
    assert options_from_form(data, PRESETS, BOUNDS)["cpus"] == 3
    data["preset"] = ["Whole node"]
    with pytest.raises(OptionsError) as e:
        options_from_form(data, PRESETS, BOUNDS)
    assert e.value.field == "preset" and "'Whole node' is not one of the presets" in str(e.value)
    data.update(preset=["Large memory"], shown=["not json"])
    with pytest.raises(OptionsError) as e:
        options_from_form(data, PRESETS, BOUNDS)
    assert e.value.field == "shown"


def test_prefilled_from_the_last_options():
    last = {"backend": "slurm", "partition": "maxwell", "cpus": 3, "memory_gb": 6.5,
            "runtime_hours": 2, "env": {"A": "1", "B": "x=y"}}
    p = page(values=form_values(last, BOUNDS), chosen=matching_preset(last, PRESETS, BOUNDS) or "",
             last=validate_options(last, BOUNDS).__dict__)
    assert p.checked("preset") == "" and p.checked("backend") == "slurm"
    assert p.controls["partition"]["value"] == "maxwell"
    assert (p.controls["cpus"]["value"], p.controls["memory_gb"]["value"]) == ("3", "6.5")
    assert p.controls["runtime_hours"]["value"] == "2"
    assert p.texts["env"] == "A=1\nB=x=y"
    assert p.details_open is True
    assert ("Your last choice: SLURM, 3 CPUs, 6.5 GiB, 2 h, partition maxwell, JupyterLab, env A B"
            in p.texts["preset-custom-text"])
    # sent back untouched, they are the same options
    assert options_from_form(p.submit(), PRESETS, BOUNDS) == {
        "backend": "slurm", "interface": "lab", "cpus": 3, "memory_gb": 6.5, "gpus": 0,
        "runtime_hours": 2.0, "partition": "maxwell", "env": {"A": "1", "B": "x=y"}}


def test_last_options_equal_to_a_preset_check_that_preset():
    last = {"backend": "slurm", "partition": "jhub", "cpus": 2, "memory_gb": 4.0, "env": {"A": "1"}}
    assert matching_preset(last, PRESETS, BOUNDS) == "SLURM jhub notebook"  # env is the user's
    assert matching_preset(dict(last, cpus=1), PRESETS, BOUNDS) is None
    p = page(values=form_values(last, BOUNDS), chosen="SLURM jhub notebook")
    assert p.checked("preset") == "SLURM jhub notebook" and p.texts["env"] == "A=1"
    # submitted untouched: the preset plus the user's env
    assert options_from_form(p.submit(), PRESETS, BOUNDS)["env"] == {"A": "1"}


def test_refused_attempt_shows_its_values_and_the_message_next_to_the_field():
    p = page(values={"backend": "htcondor", "cpus": "9"}, chosen="",
             errors={"cpus": "Input should be less than or equal to 4"})
    assert p.controls["cpus"]["value"] == "9"
    assert p.controls["cpus"]["aria-invalid"] == "true"
    assert p.controls["cpus"]["aria-describedby"] == "cpus-error"
    assert p.texts["cpus-error"] == "Input should be less than or equal to 4"
    assert "aria-invalid" not in p.controls["memory_gb"]
    assert p.details_open is True
    p = page(values={"backend": "slurm", "partition": "maxwell"}, chosen="",
             errors={"partition": "you may not use maxwell"})
    assert p.controls["partition"]["aria-describedby"] == "partition-error"
    assert p.texts["partition-error"] == "you may not use maxwell"


def test_summary_names_env_variables_never_their_values():
    s = summary(validate_options({"backend": "htcondor", "env": {"TOKEN": "s3cret"}},
                                 BOUNDS).__dict__)
    assert s == "HTCondor, 1 CPU, 2 GiB, JupyterLab, env TOKEN" and "s3cret" not in s


@pytest.mark.parametrize("preset,words", [
    ({"name": "Big", "options": {"backend": "htcondor", "memory_gb": 100}},
     "preset 'Big': memory_gb: Input should be less than or equal to 64"),
    ({"name": "Odd", "options": {"backend": "slurm", "partition": "a b"}}, "preset 'Odd': partition"),
    ({"name": "Lane", "options": {"backend": "htcondor", "partition": "jhub"}},
     "preset 'Lane': partition: is only for the slurm backend"),
    ({"name": "X", "options": {"backend": "pbs"}}, "preset 'X': backend: must be one of"),
    ({"name": "X", "options": {"cpu": 1}}, "preset 'X': cpu: is not a known option"),
    ({"name": "X", "options": {}}, "preset 'X': options must be a non-empty dict"),
    ({"name": "X", "opts": {}}, "preset 'X': 'opts' is not a preset key"),
    ({"name": "", "options": {"cpus": 1}}, "presets[0]: name must be a non-empty string"),
    ("Standard", "presets[0]: must be a dict"),
])
def test_bad_preset_is_refused_naming_preset_and_field(preset, words):
    with pytest.raises(PresetError) as e:
        check_presets([preset], BOUNDS)
    assert words in str(e.value)


def test_bad_preset_stops_the_spawner_config_naming_it():
    c = Config()
    c.BatchSpawner.max_cpus = 4
    c.BatchSpawner.presets = [{"name": "Standard", "options": {"backend": "htcondor"}},
                              {"name": "Huge", "options": {"backend": "htcondor", "cpus": 8}}]
    with pytest.raises(TraitError) as e:
        BatchSpawner(config=c)
    assert str(e.value).startswith("BatchSpawner.presets: preset 'Huge': cpus: ")
    c.BatchSpawner.presets = [{"name": "Standard", "options": {"backend": "htcondor"}}] * 2
    with pytest.raises(TraitError, match="preset 'Standard': the name is used twice"):
        BatchSpawner(config=c)


def test_the_mini_sites_presets_are_valid_in_its_bounds():
    from pathlib import Path

    from traitlets.config import PyFileConfigLoader

    path = Path(__file__).resolve().parents[2] / "minisite" / "appliance" / "appliance_config.py"
    c = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    sp = BatchSpawner(config=c)
    names = [p["name"] for p in sp.checked_presets()]
    assert names[:3] == ["Standard notebook", "SLURM jhub notebook", "Large memory"]
