"""appliance-nginx-conf: nginx's settings from the environment, bad values refused by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image" / "bin" / "appliance-nginx-conf"


def run(tmp_path, *args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "APPLIANCE_RUN_DIR": str(tmp_path), **env})


def test_defaults(tmp_path):
    assert run(tmp_path).returncode == 0
    assert (tmp_path / "nginx-public.conf").read_text() == (
        "set $public_https_port 8443;\nset $jba_hub_origin https://hub.localhost:8443;\n")
    assert (tmp_path / "nginx-hosts.conf").read_text() == (
        "map $host $jba_host_kind { hostnames; default other; hub.localhost hub; "
        "*.hub.localhost user; }\n")
    assert (tmp_path / "nginx-listen.conf").read_text() == ""  # 8443 is listened on anyway
    http = (tmp_path / "nginx-http.conf").read_text()
    assert "limit_req_zone $jba_login_key zone=jba_login:10m rate=30r/m;" in http
    assert 'map "" $jba_retry_after { default 2; }' in http
    assert (tmp_path / "nginx-login.conf").read_text() == (
        "limit_req zone=jba_login burst=20 nodelay;\n")


def test_values_and_retry_after(tmp_path):
    r = run(tmp_path, APPLIANCE_PUBLIC_HTTPS_PORT="9043", APPLIANCE_LOGIN_RATE_PER_MINUTE="7",
            APPLIANCE_LOGIN_BURST="05")
    assert r.returncode == 0, r.stderr
    assert "9043" in (tmp_path / "nginx-public.conf").read_text()
    http = (tmp_path / "nginx-http.conf").read_text()
    assert "rate=7r/m" in http and "default 9;" in http  # ceil(60 / 7) s until the next attempt
    assert "burst=5 " in (tmp_path / "nginx-login.conf").read_text()


def test_a_sites_hub_name_on_443(tmp_path):
    r = run(tmp_path, APPLIANCE_HUB_HOST="jupyter.example.org", APPLIANCE_PUBLIC_HTTPS_PORT="443")
    assert r.returncode == 0, r.stderr
    assert "set $jba_hub_origin https://jupyter.example.org;" in (
        tmp_path / "nginx-public.conf").read_text()  # no :443
    hosts = (tmp_path / "nginx-hosts.conf").read_text()
    assert "jupyter.example.org hub;" in hosts and "*.jupyter.example.org user;" in hosts
    # the public port is listened on too, so the public URLs work inside the container
    assert (tmp_path / "nginx-listen.conf").read_text() == "listen 443 ssl;\nlisten [::]:443 ssl;\n"


@pytest.mark.parametrize("name, value", [
    ("APPLIANCE_HUB_HOST", "localhost"), ("APPLIANCE_HUB_HOST", "Hub.Example.org"),
    ("APPLIANCE_HUB_HOST", "hub.example.org; evil"), ("APPLIANCE_HUB_HOST", "*.example.org"),
    ("APPLIANCE_PUBLIC_HTTPS_PORT", "84x3"), ("APPLIANCE_PUBLIC_HTTPS_PORT", "70000"),
    ("APPLIANCE_LOGIN_RATE_PER_MINUTE", "0"), ("APPLIANCE_LOGIN_RATE_PER_MINUTE", "1; evil"),
    ("APPLIANCE_LOGIN_BURST", "1e3"), ("APPLIANCE_LOGIN_BURST", "-1"),
])
def test_bad_values_are_refused_by_name(tmp_path, name, value):
    r = run(tmp_path, **{name: value})
    assert r.returncode == 2 and name in r.stderr, r.stderr
    assert not (tmp_path / "nginx-login.conf").exists()


def test_cluster_side_listener_serves_only_the_api(tmp_path):
    r = run(tmp_path, APPLIANCE_CLUSTER_ADDR="172.29.10.10")
    assert r.returncode == 0, r.stderr
    conf = (tmp_path / "nginx-cluster.conf").read_text()
    assert "listen 172.29.10.10:8444 ssl;" in conf and "0.0.0.0" not in conf
    assert "ssl_certificate     /srv/appliance/internal-tls/cluster-api.crt;" in conf
    assert "location /hub/api/ {" in conf and "location = /hub/metrics" in conf
    assert "location / { return 404; }" in conf
    assert "proxy_set_header Host $host;" in conf  # nginx variables survive the heredoc
    # no plain listener unless servers of an earlier release need it (appliance-run hub)
    assert "listen 172.29.10.10:8081" not in conf
    assert (tmp_path / "nginx-cluster-legacy.conf").read_text() == ""


def test_plain_cluster_listener_only_on_request(tmp_path):
    r = run(tmp_path, "--legacy-plain", APPLIANCE_CLUSTER_ADDR="172.29.10.10")
    assert r.returncode == 0, r.stderr
    legacy = (tmp_path / "nginx-cluster-legacy.conf").read_text()
    assert "listen 172.29.10.10:8081;" in legacy and "ssl" not in legacy
    assert "location / { return 404; }" in legacy
    assert f"include {tmp_path}/nginx-cluster-legacy.conf;" in (
        tmp_path / "nginx-cluster.conf").read_text()
    r = run(tmp_path, APPLIANCE_CLUSTER_ADDR="172.29.10.10")
    assert (tmp_path / "nginx-cluster-legacy.conf").read_text() == ""


def test_no_cluster_address_no_cluster_listener(tmp_path):
    assert run(tmp_path).returncode == 0
    assert (tmp_path / "nginx-cluster.conf").read_text() == ""


@pytest.mark.parametrize("value", ["0.0.0.0:80", "appliance", "172.29.10.10; listen 80"])
def test_bad_cluster_address_is_refused_by_name(tmp_path, value):
    r = run(tmp_path, APPLIANCE_CLUSTER_ADDR=value)
    assert r.returncode == 2 and "APPLIANCE_CLUSTER_ADDR" in r.stderr
    assert not (tmp_path / "nginx-cluster.conf").exists()
