"""Validation of user options: good values pass, hostile values are refused naming the field."""

import pytest

from appliance.options import Bounds, OptionsError, check_constraint, json_schema, validate_options

B = Bounds(max_cpus=8, max_memory_gb=32, max_gpus=2, max_runtime_hours=168)


def err(data, bounds=B):
    with pytest.raises(OptionsError) as e:
        validate_options(data, bounds)
    return e.value


def test_minimal_defaults():
    o = validate_options({"backend": "htcondor"}, B)
    assert (o.backend, o.interface, o.cpus, o.memory_gb, o.gpus, o.env) == ("htcondor", "lab", 1, 2.0, 0, {})


def test_full_slurm_request():
    o = validate_options(
        {"backend": "slurm", "interface": "notebook", "cpus": 4, "memory_gb": 8, "gpus": 1,
         "runtime_hours": 2.5, "env": {"MY_VAR": "a b=c"}, "partition": "jhub",
         "reservation": "belle2-res", "constraint": "(epyc|avx512)&gpu"}, B)
    assert o.memory_gb == 8.0 and o.env == {"MY_VAR": "a b=c"} and o.constraint == "(epyc|avx512)&gpu"


@pytest.mark.parametrize("data,field", [
    ({"backend": "pbs"}, "backend"),
    ({}, "backend"),
    ({"backend": "htcondor", "cpus": "2"}, "cpus"),
    ({"backend": "htcondor", "cpus": True}, "cpus"),
    ({"backend": "htcondor", "cpus": 0}, "cpus"),
    ({"backend": "htcondor", "cpus": 9}, "cpus"),
    ({"backend": "htcondor", "memory_gb": 33}, "memory_gb"),
    ({"backend": "htcondor", "memory_gb": -1}, "memory_gb"),
    ({"backend": "htcondor", "gpus": 3}, "gpus"),
    ({"backend": "htcondor", "runtime_hours": 169}, "runtime_hours"),
    ({"backend": "htcondor", "interface": "vscode"}, "interface"),
    ({"backend": "htcondor", "image": "evil"}, "image"),
    ({"backend": "htcondor", "env": {"1BAD": "x"}}, "env"),
    ({"backend": "htcondor", "env": {"A-B": "x"}}, "env"),
    ({"backend": "htcondor", "env": {"OK": "line1\nline2"}}, "env"),
    ({"backend": "htcondor", "env": {"OK": "tab\there"}}, "env"),
    ({"backend": "htcondor", "env": {"OK": "nul\x00"}}, "env"),
    ({"backend": "htcondor", "env": {"OK": 5}}, "env"),
    ({"backend": "htcondor", "env": ["A=1"]}, "env"),
    ({"backend": "htcondor", "env": {"PATH": "/tmp"}}, "env"),
    ({"backend": "htcondor", "env": {"LD_PRELOAD": "/tmp/x.so"}}, "env"),
    ({"backend": "htcondor", "env": {"PYTHONPATH": "/tmp"}}, "env"),
    ({"backend": "htcondor", "env": {"JUPYTERHUB_API_TOKEN": "x"}}, "env"),
    ({"backend": "htcondor", "env": {"KRB5CCNAME": "/tmp/x"}}, "env"),
    ({"backend": "htcondor", "partition": "jhub"}, "partition"),
    ({"backend": "slurm", "partition": "jhub;rm -rf"}, "partition"),
    ({"backend": "slurm", "reservation": "a b"}, "reservation"),
    ({"backend": "slurm", "constraint": "epyc;reboot"}, "constraint"),
    ({"backend": "slurm", "constraint": "epyc\nx"}, "constraint"),
    ({"backend": "slurm", "constraint": "(epyc"}, "constraint"),
    ({"backend": "slurm", "constraint": "epyc&"}, "constraint"),
    ({"backend": "slurm", "constraint": "$(id)"}, "constraint"),
    ({"backend": "slurm", "constraint": "epyc\n"}, "constraint"),
    ({"backend": "htcondor", "env": {"A\n": "x"}}, "env"),
    ({"backend": "slurm", "partition": "jhub\n"}, "partition"),
    ({"backend": "slurm", "reservation": "belle2\n"}, "reservation"),
    ({"backend": "slurm", "constraint": "\tepyc"}, "constraint"),
    ({"backend": "slurm", "constraint": "   "}, "constraint"),
    ({"backend": "slurm", "constraint": "a" * 257}, "constraint"),
])
def test_refusals_name_the_field(data, field):
    e = err(data)
    assert e.field == field
    assert str(e).startswith(field + ":")


def test_not_an_object():
    assert err(["backend"]).field == "options"


def test_bounds_are_the_admins():
    small = Bounds(max_cpus=2)
    assert validate_options({"backend": "htcondor", "cpus": 8}, B).cpus == 8
    assert err({"backend": "htcondor", "cpus": 3}, small).field == "cpus"


def test_default_backend():
    o = validate_options({}, Bounds(default_backend="slurm"))
    assert o.backend == "slurm"


def test_disabled_backend_refused():
    assert err({"backend": "slurm"}, Bounds(backends=("htcondor",))).field == "backend"


def test_json_schema_carries_bounds():
    s = json_schema(B)
    assert s["properties"]["cpus"]["maximum"] == 8
    assert s["additionalProperties"] is False


def test_constraint_features():
    assert check_constraint("(epyc|avx512)&gpu") == ["epyc", "avx512", "gpu"]
    with pytest.raises(OptionsError) as e:
        check_constraint("epyc||gpu")
    assert e.value.field == "constraint"


def test_constraint_message_names_the_field_once():
    e = err({"backend": "slurm", "constraint": "epyc;reboot"})
    assert str(e) == "constraint: character ';' is not allowed"
