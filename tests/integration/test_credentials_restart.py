"""Issue 15: the credential bridge keeps what it needs across a restart of itself and of the whole
appliance container (its encrypted state in the state volume), so renewals and pushes go on for
everyone; a corrupted or foreign state file is refused with a clear log line, never a crash.

``shortlived`` (2-minute tickets, renewable for 10) shows renewals within half a minute. Marked
``slow`` (~3 min): two restarts of the bridge, one of the appliance container, three of the
bridge with damaged state files.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import HubClient, container, podman, site_exec, wait_for
from tests.integration.test_credentials import bridge_state, ensure_stopped, login
from tests.integration.test_credentials_push import relogin, start_notebook, until_in_sandbox

pytestmark = [pytest.mark.minisite, pytest.mark.slow]

USER = "shortlived"
STATE = "/srv/appliance/credd-bridge/state"
PY = "/opt/jupyterhub/bin/python"


def supervisorctl(*args: str) -> str:
    return site_exec("appliance", "supervisorctl", "-c", "/etc/supervisor/appliance.conf",
                     *args, check=False).stdout


def bridge_answers() -> bool:
    r = site_exec("appliance", PY, "-m", "appliance.credd_bridge.client", "ping", check=False)
    return r.returncode == 0


def bridge_log_since(t: float) -> str:
    r = podman("logs", "--since", str(int(t) - 1), container("appliance"))
    return "\n".join(l for l in (r.stdout + r.stderr).splitlines() if "credd-bridge" in l)


def hub_healthy() -> bool:
    try:
        return HubClient().s.get(f"{HubClient().base}/hub/health", timeout=5).status_code == 200
    except Exception:  # noqa: BLE001 - not up yet
        return False


def restart_bridge() -> float:
    t = time.time()
    supervisorctl("restart", "credd-bridge")
    wait_for("the bridge to answer again", bridge_answers, timeout=30, interval=0.25)
    return t


def renewed_after(t: float, before: dict) -> dict:
    return wait_for(
        "a renewal by the restarted bridge",
        lambda: (s := bridge_state(USER)) and (s["last_renewed"] or 0) >= int(t)
        and s["valid_until"] > before["valid_until"] and s["state"] == "active" and s,
        timeout=75, interval=1)


def test_bridge_and_appliance_restarts_keep_renewals_and_pushes_going(site):
    sl, host = start_notebook(USER)
    try:
        mode = site_exec("appliance", "stat", "-c", "%U %a", STATE,
                         "/srv/appliance/secrets/credd_bridge_state_key").stdout.split()
        assert mode == ["root", "600", "root", "600"], mode
        plain = site_exec("appliance", "grep", "-c", USER, STATE, check=False).stdout.strip()
        assert plain == "0", "user names in the state file in clear"

        # 1. the bridge restarts: same records, renewals and pushes go on
        before = bridge_state(USER)
        t = restart_bridge()
        after = bridge_state(USER)
        assert after and after["principal"] == before["principal"], after
        assert after["last_forwarded"] == before["last_forwarded"]
        assert "restored the tickets of" in bridge_log_since(t)
        st = renewed_after(t, before)
        print(f"bridge restart: renewed {st['last_renewed'] - t:.0f} s after it, valid until "
              f"+{st['valid_until'] - time.time():.0f} s")
        new, t0 = relogin(USER)
        until_in_sandbox(USER, host, new, "push after the bridge restart")
        print(f"bridge restart: re-login -> running notebook {time.time() - t0:.2f} s")

        # 2. the whole appliance container restarts (state volume kept)
        before = bridge_state(USER)
        t = time.time()
        podman("restart", "-t", "10", container("appliance"), timeout=180)
        wait_for("the hub after the appliance restart", hub_healthy, timeout=120, interval=1)
        wait_for("the bridge after the appliance restart", bridge_answers, timeout=60)
        after = bridge_state(USER)
        assert after and after["principal"] == before["principal"], after
        st = renewed_after(t, before)
        print(f"appliance restart: renewed {st['last_renewed'] - t:.0f} s after it")
        new, t0 = relogin(USER)
        until_in_sandbox(USER, host, new, "push after the appliance restart")
        print(f"appliance restart: re-login -> running notebook {time.time() - t0:.2f} s "
              f"(the notebook kept running)")
    finally:
        ensure_stopped(sl)


FOREIGN = (
    "import json, sys; from cryptography.fernet import Fernet; "
    "doc = {'format': 'appliance.credd_bridge.state', 'version': 1, 'saved_at': 0, 'users': []}; "
    "sys.stdout.buffer.write(Fernet(Fernet.generate_key()).encrypt(json.dumps(doc).encode()))"
)


@pytest.mark.parametrize("damage", ["corrupted", "foreign"])
def test_a_damaged_state_file_is_refused_clearly_and_the_bridge_serves_on(site, damage):
    login(USER)
    assert bridge_state(USER) is not None
    site_exec("appliance", "cp", "-p", STATE, STATE + ".itest-good")
    try:
        supervisorctl("stop", "credd-bridge")
        if damage == "corrupted":
            site_exec("appliance", "sh", "-c", f"head -c 300 {STATE}.itest-good | rev > {STATE}")
        else:  # a valid state file of ANOTHER appliance (another key)
            site_exec("appliance", "sh", "-c", f"{PY} -c \"{FOREIGN}\" > {STATE}")
        site_exec("appliance", "chmod", "600", STATE)  # private, as the bridge writes it
        t = time.time()
        supervisorctl("start", "credd-bridge")
        wait_for("the bridge to answer with a damaged state", bridge_answers, timeout=30,
                 interval=0.25)
        logs = bridge_log_since(t)
        assert f"state file {STATE} refused: not readable with this appliance's key" in logs, logs
        assert "users must log in again" in logs
        assert "Traceback" not in logs
        assert bridge_state(USER) is None
        aside = site_exec("appliance", "sh", "-c", f"ls {STATE}.refused-*").stdout.split()
        assert aside, "the refused file was not kept for the admin"
        # the bridge works: a login is stored and saved again
        login(USER)
        assert bridge_state(USER)["state"] == "active"
    finally:
        # put the good state back (everyone's tickets) and restart once more: restored
        supervisorctl("stop", "credd-bridge")
        site_exec("appliance", "sh", "-c", f"mv {STATE}.itest-good {STATE}; "
                                           f"rm -f {STATE}.refused-*")
        supervisorctl("start", "credd-bridge")
        wait_for("the bridge with its state back", bridge_answers, timeout=30, interval=0.25)
    assert bridge_state(USER) is not None
