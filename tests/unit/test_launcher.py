"""The node launcher: private env file handling and port picking."""

import json
import os
import socket

import pytest

from appliance import launcher


def write(path, data, mode=0o600):
    with open(path, "w") as f:
        json.dump(data, f)
    os.chmod(path, mode)


def test_reads_and_deletes(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"JUPYTERHUB_API_TOKEN": "t", "A": "1"})
    assert launcher.read_env_file(str(p)) == {"JUPYTERHUB_API_TOKEN": "t", "A": "1"}
    assert not p.exists()


def test_refuses_group_readable(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"A": "1"}, 0o640)
    with pytest.raises(SystemExit):
        launcher.read_env_file(str(p))


def test_refuses_symlink(tmp_path):
    p = tmp_path / "real.json"
    write(p, {"A": "1"})
    link = tmp_path / "env.json"
    link.symlink_to(p)
    with pytest.raises(OSError):
        launcher.read_env_file(str(link))


def test_refuses_bad_names(tmp_path):
    p = tmp_path / "env.json"
    write(p, {"A B": "1"})
    with pytest.raises(SystemExit):
        launcher.read_env_file(str(p))


def test_pick_port_skips_busy():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    busy = s.getsockname()[1]
    try:
        with pytest.raises(SystemExit):
            launcher.pick_port(busy, busy)
        port = launcher.pick_port(busy, busy + 5)
        assert busy < port <= busy + 5
    finally:
        s.close()


def test_parse_range():
    assert launcher.parse_range("40000-41000") == (40000, 41000)
    for bad in ("41000-40000", "80-90", "a-b", "40000"):
        with pytest.raises(Exception):
            launcher.parse_range(bad)
