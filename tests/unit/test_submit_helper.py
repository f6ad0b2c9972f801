"""The submit helper writes the private env file safely and never echoes the request."""

import io
import os
import json
import sys

import pytest

from appliance.userside import helper as submit_helper
from appliance.hub.authenticator import ccache_file


def test_env_file_private_and_inside_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".jupyterhub-batch" / "job.json"
    submit_helper.write_env_file(str(path), {"JUPYTERHUB_API_TOKEN": "secret", "A": 1})
    assert json.loads(path.read_text()) == {"JUPYTERHUB_API_TOKEN": "secret", "A": "1"}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_env_file_outside_home_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(ValueError):
        submit_helper.write_env_file(str(tmp_path / "elsewhere" / "job.json"), {})


def test_env_file_symlink_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / ".jupyterhub-batch"
    d.mkdir()
    target = tmp_path / "victim"
    target.write_text("keep")
    (d / "job.json").symlink_to(target)
    with pytest.raises(OSError):
        submit_helper.write_env_file(str(d / "job.json"), {"X": "y"})
    assert target.read_text() == "keep"


def test_errors_do_not_echo_secrets(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(submit_helper, "CONFIG_PATH", str(tmp_path / "absent.json"))
    monkeypatch.setattr(submit_helper.os, "getuid", lambda: 2001)
    req = {"backend": "nosuch", "env_path": str(tmp_path / ".jupyterhub-batch" / "j.json"),
           "env": {"JUPYTERHUB_API_TOKEN": "topsecret"}, "submit": {}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(req)))
    assert submit_helper.main() == 1
    out = capsys.readouterr().out
    assert "topsecret" not in out and "unknown backend" in json.loads(out)["error"]


@pytest.mark.parametrize("name,path", [
    ("FILE:/run/appliance/ccache/krb5cc_2001_x", "/run/appliance/ccache/krb5cc_2001_x"),
    ("/tmp/krb5cc_1", "/tmp/krb5cc_1"),
    ("KEYRING:persistent:2001", None),
    ("KCM:", None),
    (None, None),
])
def test_ccache_file(name, path):
    assert ccache_file(name) == path


# -- the helper's own settings: a root-owned file, never the request (issue 10) ---------------

from appliance.userside import siteconfig  # noqa: E402


def write_config(tmp_path, doc, mode=0o644, name="submit-helper.json"):
    d = tmp_path / "etc"
    d.mkdir(exist_ok=True, mode=0o755)
    p = d / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    p.chmod(mode)
    return str(p)


def run_main(monkeypatch, capsys, request, config_path, uid=2001):
    monkeypatch.setattr(submit_helper, "CONFIG_PATH", config_path)
    monkeypatch.setattr(submit_helper.os, "getuid", lambda: uid)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    rc = submit_helper.main()
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture
def fake_sbatch(tmp_path):
    p = tmp_path / "sbatch"
    p.write_text('#!/bin/sh\necho "$0 $SLURM_CONF" > "$(dirname "$0")/ran"\necho 77\n')
    p.chmod(0o755)
    return p


def test_missing_config_means_the_defaults(tmp_path):
    assert siteconfig.load(str(tmp_path / "nosuch.json")) == siteconfig.DEFAULTS
    assert siteconfig.load(str(tmp_path / "nodir" / "x.json")) == siteconfig.DEFAULTS
    assert siteconfig.DEFAULTS["min_uid"] == 1000


def test_the_image_ships_the_defaults():
    from pathlib import Path
    shipped = Path(__file__).parents[2] / "image" / "submit-helper.json"
    assert json.loads(shipped.read_text()) == siteconfig.DEFAULTS


def test_sbatch_and_slurm_conf_come_from_the_config(tmp_path, monkeypatch, capsys, fake_sbatch):
    cfg = write_config(tmp_path, {"sbatch": str(fake_sbatch), "slurm_conf": "/etc/slurm/x.conf"})
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, out = run_main(monkeypatch, capsys, {"backend": "slurm", "submit": {"argv": ["--parsable"]}},
                       cfg)
    assert (rc, out) == (0, {"job_id": "77"})
    assert (tmp_path / "ran").read_text() == f"{fake_sbatch} /etc/slurm/x.conf\n"


@pytest.mark.parametrize("request_", [
    {"backend": "slurm", "submit": {"sbatch": "/tmp/evil", "argv": ["--parsable"]}},
    {"backend": "slurm", "submit": {"slurm_conf": "/tmp/evil.conf", "argv": ["--parsable"]}},
    {"backend": "htcondor", "submit": {"condor_config": "/tmp/evil", "description": {}}},
    {"backend": "htcondor", "condor_config": "/tmp/evil", "submit": {"description": {}}},
])
def test_a_path_on_stdin_is_refused(tmp_path, monkeypatch, capsys, fake_sbatch, request_):
    cfg = write_config(tmp_path, {"sbatch": str(fake_sbatch)})
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, out = run_main(monkeypatch, capsys, request_, cfg)
    assert rc == 1 and "never from a request" in out["error"] and cfg in out["error"], out
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("uid, minimum, refused", [
    (999, None, True), (1000, None, False), (1, None, True), (0, None, True),
    (2001, 2002, True), (2002, 2002, False),
])
def test_uids_below_the_minimum_are_refused(tmp_path, monkeypatch, capsys, fake_sbatch,
                                            uid, minimum, refused):
    doc = {"sbatch": str(fake_sbatch)} | ({"min_uid": minimum} if minimum else {})
    cfg = write_config(tmp_path, doc)
    monkeypatch.setenv("HOME", str(tmp_path))
    for request_ in ({"backend": "slurm", "submit": {"argv": ["--parsable"]}},
                     {"action": "end-time", "path": str(tmp_path / "x.end"), "end": 5}):
        rc, out = run_main(monkeypatch, capsys, request_, cfg, uid=uid)
        if refused:
            assert rc == 1 and f"does not run for uid {uid}" in out["error"]
            assert f"minimum {minimum or 1000}" in out["error"]
        else:
            assert rc == 0, out
    assert (tmp_path / "ran").exists() is not refused
    assert (tmp_path / "x.end").exists() is not refused


def test_the_uid_is_checked_before_reading_the_request(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path, {})
    monkeypatch.setattr(submit_helper, "CONFIG_PATH", cfg)
    monkeypatch.setattr(submit_helper.os, "getuid", lambda: 100)
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json at all"))
    assert submit_helper.main() == 1
    assert "does not run for uid 100" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o755, 0o4644, 0o1644])
def test_a_loose_config_refuses_every_request(tmp_path, monkeypatch, capsys, fake_sbatch, mode):
    cfg = write_config(tmp_path, {"sbatch": str(fake_sbatch)}, mode=mode)
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, out = run_main(monkeypatch, capsys, {"backend": "slurm", "submit": {"argv": ["-p"]}}, cfg)
    assert rc == 1 and f"mode {mode:04o}" in out["error"] and "at most 0644" in out["error"]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o400, 0o444])
def test_strict_modes_are_fine(tmp_path, mode):
    cfg = write_config(tmp_path, {"min_uid": 5000}, mode=mode)
    assert siteconfig.load(cfg)["min_uid"] == 5000


def test_a_config_not_owned_by_root_is_refused(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, {})
    real = siteconfig.os.fstat
    monkeypatch.setattr(siteconfig.os, "fstat", lambda fd: os.stat_result(
        (real(fd).st_mode, 0, 0, 1, 2001, 2001, 0, 0, 0, 0)))
    with pytest.raises(siteconfig.ConfigError, match="owned by uid 2001, not root"):
        siteconfig.load(cfg)


def test_a_writable_directory_is_refused(tmp_path):
    cfg = write_config(tmp_path, {})
    os.chmod(os.path.dirname(cfg), 0o777)
    with pytest.raises(siteconfig.ConfigError, match="the directory .* mode 0777"):
        siteconfig.load(cfg)


def test_a_symlinked_config_is_refused(tmp_path):
    real = write_config(tmp_path, {"min_uid": 1}, name="real.json")
    link = tmp_path / "etc" / "submit-helper.json"
    link.symlink_to(real)
    with pytest.raises(siteconfig.ConfigError, match="symlink"):
        siteconfig.load(str(link))


@pytest.mark.parametrize("doc, field", [
    ("{not json", "not valid JSON"), ("[1]", "JSON object"),
    ({"min_uid": "1000"}, "min_uid"), ({"min_uid": True}, "min_uid"), ({"min_uid": 0}, "min_uid"),
    ({"sbatch": "sbatch"}, "sbatch must be an absolute path"), ({"sbatch": ""}, "sbatch"),
    ({"condor_config": 3}, "condor_config"), ({"slurm_conf": "rel/x"}, "slurm_conf"),
    ({"sbatch_path": "/x"}, "unknown setting(s) sbatch_path"),
    ("x" * (siteconfig.MAX_BYTES + 1), "larger than"),
])
def test_bad_values_are_named(tmp_path, doc, field):
    cfg = write_config(tmp_path, doc)
    with pytest.raises(siteconfig.ConfigError) as e:
        siteconfig.load(cfg)
    assert field in str(e.value) and cfg in str(e.value)
