"""appliance.hub.bridge: the hub's one client of the credential bridge, against a real
BridgeServer on a temporary socket (memory credd, injected clock): what the authenticator, the
spawner and the home page get, and the messages users see."""

from __future__ import annotations

import asyncio
import os

import pytest
from traitlets.config import Config

from appliance.hub.bridge import CredentialBridge, CredentialUnavailable

from .test_bridge import T0, put_cache
from .test_bridge_server import running, world_dir  # noqa: F401 (fixtures)
from .test_ccache import REALM

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


def hub(running, **kw) -> CredentialBridge:
    cfg = Config()
    cfg.CredentialBridge.socket = running.path
    for k, v in kw.items():
        setattr(cfg.CredentialBridge, k, v)
    return CredentialBridge(config=cfg)


def test_settings_are_traitlets_with_help():
    cb = CredentialBridge()
    assert cb.socket == "/run/appliance/bridge.sock" and cb.timeout == 15.0
    assert cb.state_timeout == 5.0
    for name in ("socket", "timeout", "state_timeout"):
        trait = cb.traits()[name]
        assert trait.metadata.get("config") is True and trait.help


def test_hand_over_stores_and_reports(running):
    out = asyncio.run(hub(running).hand_over("alice", put_cache(running.ccdir, now=T0)))
    assert out["ok"] is True and out["state"] == "active"
    assert out["principal"] == f"alice@{REALM}" and out["seconds"] >= 0
    assert running.store.puts == 1


def test_hand_over_never_raises(running, world_dir):  # noqa: F811
    refused = asyncio.run(hub(running).hand_over(
        "alice", put_cache(running.ccdir, now=T0, principal=f"bob@{REALM}")))
    assert refused["ok"] is False and refused["error"] == "wrong_principal"
    assert running.store.puts == 0
    down = asyncio.run(CredentialBridge(socket=os.path.join(world_dir, "none.sock"))
                       .hand_over("alice", "/run/appliance/ccache/x"))
    assert down["ok"] is False and down["error"] == "unreachable"
    none = asyncio.run(hub(running).hand_over("alice", None))
    assert none["error"] == "no_ccache" and "ccache=" in none["message"]
    off = asyncio.run(CredentialBridge(socket="").hand_over("alice", "/x"))
    assert off["error"] == "disabled"


def test_forward_credential_returns_a_one_time_ticket_file(running, tmp_path):
    running.bridge.submit_dir = str(tmp_path / "submit")
    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    events = []
    path = asyncio.run(hub(running).forward_credential(
        "alice", None, min_valid=60, emit=lambda m, p=None: events.append((m, p))))
    assert os.path.dirname(path) == str(tmp_path / "submit")
    st = os.stat(path)
    assert st.st_uid == 2001 and st.st_mode & 0o777 == 0o600
    assert events == [(f"Kerberos ticket of alice@{REALM} forwarded "
                       "(valid until 2027-01-15 08:10:00 UTC)", 8)]


def test_forward_credential_hands_the_login_cache_over_when_the_bridge_forgot(running, tmp_path):
    running.bridge.submit_dir = str(tmp_path / "submit")
    login = put_cache(running.ccdir, now=T0)
    assert running.bridge.state("alice") is None
    path = asyncio.run(hub(running).forward_credential("alice", login, min_valid=60,
                                                       emit=lambda *a: None))
    assert os.path.exists(path) and running.bridge.state("alice")["state"] == "active"


@pytest.mark.parametrize("case,code,text", [
    ("nothing", "no_credential", "No Kerberos ticket is stored for you"),
    ("expiring", "expired", "Your Kerberos ticket has expired or is about to"),
])
def test_forward_credential_says_log_in_again(running, tmp_path, case, code, text):
    running.bridge.submit_dir = str(tmp_path / "submit")
    if case == "expiring":
        running.bridge.store("alice", put_cache(running.ccdir, now=T0))  # valid until T0+600
        running.bridge.clock.t = T0 + 590
    with pytest.raises(CredentialUnavailable) as e:
        asyncio.run(hub(running).forward_credential("alice", None, min_valid=60,
                                                    emit=lambda *a: None))
    assert e.value.code == code
    assert str(e.value).startswith(text) and str(e.value).endswith(
        "Please log out and log in again to get a new Kerberos ticket.")
    assert not os.path.exists(tmp_path / "submit") or not os.listdir(tmp_path / "submit")


def test_forward_credential_credd_down_says_try_again(running, tmp_path):
    running.bridge.submit_dir = str(tmp_path / "submit")
    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    running.store.down = True
    with pytest.raises(CredentialUnavailable) as e:
        asyncio.run(hub(running).forward_credential("alice", None, min_valid=60,
                                                    emit=lambda *a: None))
    assert e.value.code == "credd_error" and "Try again in a minute" in str(e.value)
    assert "credd unreachable" in str(e.value)


def test_state_and_unreachable_bridge(running, world_dir):  # noqa: F811
    assert asyncio.run(hub(running).state("alice")) is None
    running.bridge.store("alice", put_cache(running.ccdir, now=T0))
    st = asyncio.run(hub(running).state("alice"))
    assert st["principal"] == f"alice@{REALM}" and "ccache" not in st
    with pytest.raises(CredentialUnavailable) as e:
        asyncio.run(CredentialBridge(socket=os.path.join(world_dir, "none.sock")).state("alice"))
    assert e.value.code == "unreachable"
    assert str(e.value).startswith("The credential service is not reachable (cannot talk to")
