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
