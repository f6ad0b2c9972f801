"""The hub's public origin (appliance.publicorigin) and the loopback names (appliance.localnames)."""

from __future__ import annotations

import socket

import pytest

from appliance import localnames, publicorigin


def test_defaults_are_the_demo_hub():
    o = publicorigin.from_env({})
    assert (o.host, o.port, o.url) == ("hub.localhost", 8443, "https://hub.localhost:8443")


def test_a_sites_name_on_443_has_no_port():
    o = publicorigin.from_env({"APPLIANCE_HUB_HOST": "jupyter.example.org",
                               "APPLIANCE_PUBLIC_HTTPS_PORT": "443"})
    assert o.url == "https://jupyter.example.org"


@pytest.mark.parametrize("host", ["localhost", "Hub.example.org", "hub..example.org",
                                  "-hub.example.org", "*.example.org", "hub.example.org/x",
                                  "a" * 64 + ".example.org", ("a" * 60 + ".") * 4 + "org"])
def test_bad_hub_names_are_refused_by_name(host):
    with pytest.raises(ValueError, match="APPLIANCE_HUB_HOST") as e:
        publicorigin.from_env({"APPLIANCE_HUB_HOST": host})
    assert repr(host) in str(e.value)


@pytest.mark.parametrize("port", ["0", "65536", "84x3", "-1"])
def test_bad_ports_are_refused_by_name(port):
    with pytest.raises(ValueError, match="APPLIANCE_PUBLIC_HTTPS_PORT"):
        publicorigin.from_env({"APPLIANCE_PUBLIC_HTTPS_PORT": port})


def test_names_under_localhost_are_loopback_and_others_untouched(monkeypatch):
    asked = []
    monkeypatch.setattr(localnames, "_system_getaddrinfo",
                        lambda host, port, *a: asked.append(host) or [])
    localnames.getaddrinfo("alice.hub.localhost", 443)
    localnames.getaddrinfo("HUB.LOCALHOST.", 443)
    localnames.getaddrinfo("hub.localhost", 443, socket.AF_INET6)
    localnames.getaddrinfo("example.org", 443)
    localnames.getaddrinfo("localhost.example.org", 443)
    assert asked == ["127.0.0.1", "127.0.0.1", "::1", "example.org", "localhost.example.org"]
