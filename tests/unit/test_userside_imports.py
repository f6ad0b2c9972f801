"""The user-side package (run as the user under sudo) imports none of the hub's frameworks.

Each module is imported alone in a fresh interpreter; sys.modules then must hold no pydantic,
traitlets, tornado or jupyterhub module, and no module of the hub side of the appliance.
"""

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import appliance.userside

SRC = str(Path(appliance.userside.__file__).parents[2])  # the directory holding "appliance"

FORBIDDEN = ("pydantic", "traitlets", "tornado", "jupyterhub", "appliance.hub", "appliance.options")
MODULES = ["appliance.userside"] + [
    f"appliance.userside.{m.name}" for m in pkgutil.iter_modules(appliance.userside.__path__)
]

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*args: str, stdin: str = "") -> list[str]:
    out = subprocess.run([sys.executable, "-c", *args], input=stdin, capture_output=True,
                         text=True, check=True, timeout=60, cwd=SRC,
                         env=dict(os.environ, PYTHONPATH=SRC)).stdout
    return json.loads(out.splitlines()[-1])


def forbidden(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_the_package_has_the_expected_modules():
    assert set(MODULES) >= {"appliance.userside.helper", "appliance.userside.htcondor",
                            "appliance.userside.slurm"}


@pytest.mark.parametrize("module", MODULES)
def test_no_hub_framework_imported(module):
    loaded = loaded_by(PROBE, module)
    assert module in loaded
    assert not forbidden(loaded), f"{module} imports {forbidden(loaded)}"


def test_a_whole_slurm_submission_imports_no_hub_framework(tmp_path):
    # appliance-submit's main, end to end with a stand-in sbatch: env file written, job id back
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 42\n")
    sbatch.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    request = {"backend": "slurm", "env_path": str(home / ".jupyterhub-batch" / "j.json"),
               "env": {"JUPYTERHUB_API_TOKEN": "t"},
               "submit": {"argv": ["--parsable"]}}
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "submit-helper.json").write_text(json.dumps({"sbatch": str(sbatch)}))
    (etc / "submit-helper.json").chmod(0o644)
    code = ("import io, json, os, sys\n"
            "bare = set(sys.modules)\n"
            f"os.environ['HOME'] = {str(home)!r}\n"
            "from appliance.userside import helper\n"
            "from appliance.userside.helper import main\n"
            f"helper.CONFIG_PATH = {str(etc / 'submit-helper.json')!r}\n"
            "os.getuid = lambda: 2001  # the tests run as root, whom the helper refuses\n"
            "out, sys.stdout = sys.stdout, io.StringIO()\n"
            "rc = main()\n"
            "answer, sys.stdout = sys.stdout.getvalue(), out\n"
            "assert rc == 0 and json.loads(answer) == {'job_id': '42'}, answer\n"
            "print(json.dumps(sorted(set(sys.modules) - bare)))\n")
    loaded = loaded_by(code, stdin=json.dumps(request))
    assert "appliance.userside.slurm" in loaded and "subprocess" in loaded
    # the budget: 42 modules beyond a bare interpreter's today (Python 3.11; the config check adds
    # one, appliance.userside.siteconfig); a framework would add hundreds
    assert len(loaded) <= 50, f"{len(loaded)} modules: {loaded}"
    assert not forbidden(loaded), forbidden(loaded)
    assert (home / ".jupyterhub-batch" / "j.json").exists()


def test_the_check_would_catch_a_hub_import():
    # the probe sees what the hub side pulls in (so an empty list above means something)
    loaded = loaded_by(PROBE, "appliance.hub.scheduler.base")
    assert {"traitlets", "pydantic", "appliance.options"} <= set(forbidden(loaded))
