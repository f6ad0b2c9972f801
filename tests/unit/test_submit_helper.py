"""The submit helper writes the private env file safely and never echoes the request."""

import io
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
