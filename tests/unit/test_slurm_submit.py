"""Slurm submission: the sbatch argv is built from validated values only; run_sbatch's contract."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.hub.scheduler.base import SubmitError, SubmitRequest
from appliance.hub.scheduler.slurm import SlurmScheduler
from appliance.hub.scheduler.slurm.sbatch import JOB_SCRIPT, build_sbatch_argv
from appliance.options import Bounds, OptionsError, UserOptions, check_constraint, validate_options
from appliance.userside.slurm import run_sbatch

ENV_FILE = "/home/alice/.jupyterhub-batch/jupyterhub-alice-default-abcd1234.json"


def req(options: UserOptions | None = None, **kw) -> SubmitRequest:
    o = options or validate_options({"backend": "slurm"}, Bounds(max_gpus=2))
    base = dict(user="alice", uid=2001, home="/home/alice", options=o,
                job_name="jupyterhub-alice-default-abcd1234", env_file=ENV_FILE,
                port_range=(40000, 41000), runtime_seconds=7 * 24 * 3600)
    base.update(kw)
    return SubmitRequest(**base)


def opts(**kw) -> UserOptions:
    return validate_options({"backend": "slurm", **kw}, Bounds(max_gpus=2))


def test_default_argv():
    argv = build_sbatch_argv(req(), partition="jhub")
    assert argv == [
        "--parsable",
        "--no-requeue",
        "--job-name=jupyterhub",
        "--partition=jhub",
        "--time=10080",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=2048M",
        "--output=/home/alice/.jupyterhub-batch/slurm-%j.log",
        "--chdir=/home/alice",
        "--export=NIL",
        "--propagate=NONE",
        "--comment=jupyterhub-alice-default-abcd1234",
        JOB_SCRIPT,
        "/usr/local/bin/appliance-launch",
        f"--env-file={ENV_FILE}",
        "--port-range=40000-41000",
    ]


def test_all_options():
    o = opts(cpus=4, memory_gb=3.5, gpus=2, reservation="belle2", constraint="(epyc | gpu) & avx512",
             partition="maxwell", env={"SECRET_THING": "s3cr3t"})
    argv = build_sbatch_argv(req(o, runtime_seconds=8 * 3600 + 1), partition="maxwell",
                             extra_args=["--account=notebooks"])
    assert "--partition=maxwell" in argv
    assert "--cpus-per-task=4" in argv and "--mem=3584M" in argv and "--gres=gpu:2" in argv
    assert "--time=481" in argv  # rounded up to whole minutes
    assert "--reservation=belle2" in argv
    assert "--constraint=(epyc|gpu)&avx512" in argv
    assert argv.index("--account=notebooks") < argv.index(JOB_SCRIPT)
    # env values (secrets) never reach the command line
    assert not any("s3cr3t" in a or "SECRET_THING" in a for a in argv)


def test_every_option_is_one_glued_element():
    argv = build_sbatch_argv(req(opts(reservation="r1", constraint="epyc", gpus=1)), partition="jhub")
    script = argv.index(JOB_SCRIPT)
    for a in argv[:script]:
        assert a.startswith("--"), a
    # nothing after the script is an sbatch option: sbatch hands it to the script
    assert argv[script + 1:] == ["/usr/local/bin/appliance-launch", f"--env-file={ENV_FILE}",
                                 "--port-range=40000-41000"]


@pytest.mark.parametrize("constraint", ["epyc;rm -rf /", "epyc\n#SBATCH --uid=0", "epyc\t&x",
                                        "epyc && gpu", "$(id)", "epyc`id`", "a,b", "gpu*2", "[a|b]"])
def test_hostile_constraints_refused(constraint):
    with pytest.raises(OptionsError) as e:
        o = UserOptions(backend="slurm", constraint=constraint)  # even if validation were skipped
        build_sbatch_argv(req(o), partition="jhub")
    assert e.value.field == "constraint"


def test_newline_constraint_refused_even_if_options_passed_it():
    # one grammar (appliance.constraint) for options and backend: every whitespace but a space
    # is refused, wherever it stands
    for text in ("epyc\n&avx512", "epyc\n", "\tepyc"):
        with pytest.raises(OptionsError):
            check_constraint(text)
        with pytest.raises(OptionsError):
            build_sbatch_argv(req(UserOptions(backend="slurm", constraint=text)), partition="jhub")
    assert check_constraint("epyc & avx512") == ["epyc", "avx512"]


@pytest.mark.parametrize("field,value", [
    ("partition", "jhub --uid=0"), ("partition", "-p"), ("partition", "jhub\n"), ("partition", ""),
    ("reservation", "belle2,other"), ("reservation", "--x"),
])
def test_hostile_names_refused(field, value):
    o = UserOptions(backend="slurm", **({field: value} if field != "partition" else {}))
    with pytest.raises(SubmitError):
        build_sbatch_argv(req(o), partition=value if field == "partition" else "jhub")


@pytest.mark.parametrize("kw", [
    {"home": "/home/al ice\n"}, {"home": "relative"}, {"env_file": "/tmp/x.json"},
    {"env_file": "/home/alice/../bob/x.json"}, {"port_range": (80, 90)}, {"port_range": (5, "6")},
    {"runtime_seconds": 0},
])
def test_bad_request_values_refused(kw):
    with pytest.raises(SubmitError):
        build_sbatch_argv(req(**kw), partition="jhub")


def test_bad_numbers_refused():
    for o in (UserOptions(backend="slurm", cpus=0), UserOptions(backend="slurm", cpus=True),
              UserOptions(backend="slurm", gpus=-1), UserOptions(backend="slurm", memory_gb=float("nan"))):
        with pytest.raises(SubmitError):
            build_sbatch_argv(req(o), partition="jhub")


def test_extra_args_must_be_options():
    with pytest.raises(SubmitError):
        build_sbatch_argv(req(), partition="jhub", extra_args=["/bin/evil"])
    with pytest.raises(SubmitError):
        build_sbatch_argv(req(), partition="jhub", extra_args=["--qos=a\n--uid=0"])


def test_percent_in_output_path_escaped():
    argv = build_sbatch_argv(req(home="/home/a%b", env_file="/home/a%b/.jupyterhub-batch/x.json"),
                             partition="jhub")
    assert "--output=/home/a%%b/.jupyterhub-batch/slurm-%j.log" in argv
    assert "--chdir=/home/a%b" in argv


def test_comment_sanitized():
    argv = build_sbatch_argv(req(job_name="jupyterhub-a b;c-default"), partition="jhub")
    assert "--comment=jupyterhub-a_b_c-default" in argv


def test_scheduler_build_submit_payload():
    s = SlurmScheduler(launcher="/opt/x/appliance-launch", extra_sbatch_args=["--qos=nb"])
    sub = s.build_submit(req(opts(partition="maxwell")))
    assert set(sub) == {"argv"}  # sbatch's path and SLURM_CONF: the helper's own config
    assert "--partition=maxwell" in sub["argv"] and "--qos=nb" in sub["argv"]
    assert "/opt/x/appliance-launch" in sub["argv"]
    # no partition named: the notebook partition
    assert "--partition=jhub" in s.build_submit(req())["argv"]


def test_job_script_is_fixed_and_execs_launcher():
    text = open(JOB_SCRIPT).read()
    assert text.startswith("#!/bin/sh\n")
    assert 'exec "$launcher" "$@"' in text
    assert "#SBATCH" not in text
    assert os.stat(JOB_SCRIPT).st_mode & stat.S_IROTH  # sbatch reads it as the user


# -- run_sbatch (the helper side), with a fake sbatch ----------------------------------------
def fake_sbatch(tmp_path, body: str) -> str:
    p = tmp_path / "sbatch"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_run_sbatch_returns_job_id_and_passes_argv_verbatim(tmp_path, monkeypatch):
    log = tmp_path / "args"
    env_log = tmp_path / "env"
    sb = fake_sbatch(tmp_path, f'printf "%s\\n" "$@" > {log}; env > {env_log}; echo "1234;mini"\n')
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "s3cr3t")
    monkeypatch.setenv("SBATCH_PARTITION", "evil")
    argv = ["--parsable", "--job-name=a b", "--comment=$(id)", "/x/slurm_job.sh"]
    assert run_sbatch({"sbatch": sb, "argv": argv, "slurm_conf": "/etc/slurm/other.conf"}) == "1234"
    assert log.read_text().splitlines() == argv
    env = dict(line.split("=", 1) for line in env_log.read_text().splitlines() if "=" in line)
    assert "JUPYTERHUB_API_TOKEN" not in env and "SBATCH_PARTITION" not in env
    assert env["SLURM_CONF"] == "/etc/slurm/other.conf"


def test_run_sbatch_error_message(tmp_path):
    sb = fake_sbatch(tmp_path, 'echo "sbatch: error: Batch job submission failed: '
                               'User\'s group not permitted to use this partition" >&2; exit 1\n')
    with pytest.raises(SubmitError) as e:
        run_sbatch({"sbatch": sb, "argv": ["--parsable"]})
    assert str(e.value) == "Batch job submission failed: User's group not permitted to use this partition"


def test_run_sbatch_refuses_bad_requests(tmp_path):
    sb = fake_sbatch(tmp_path, "echo 1\n")
    for bad in ({"sbatch": sb, "argv": "--parsable"}, {"sbatch": sb, "argv": []},
                {"sbatch": sb, "argv": ["a\0b"]}, {"sbatch": "sbatch", "argv": ["x"]},
                {"sbatch": sb, "argv": [1]}):
        with pytest.raises(SubmitError):
            run_sbatch(bad)
    garbage = fake_sbatch(tmp_path, "echo 'Submitted batch job 12'\n")
    with pytest.raises(SubmitError):
        run_sbatch({"sbatch": garbage, "argv": ["x"]})
