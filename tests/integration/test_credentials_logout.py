"""Issue 10: credentials end when the login does (appliance/hub/authenticator.py end_login and
post_spawn_stop, the bridge's ``end`` and its login cache sweep), on the mini site, checked with
the files (the appliance's login caches) and the states (the bridge's, the lane credd's).

Users: bench12 and bench13, which no other test logs in (demo/users.tsv).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import demo_users, site_exec, wait_for
from tests.integration.test_credentials import bridge_state, credd_query_as_bridge
from tests.integration.test_credentials_restart import restart_bridge

pytestmark = pytest.mark.minisite

CCACHE_DIR = "/run/appliance/ccache"


def login_caches(user: str) -> list[str]:
    uid = demo_users()[user]["uid"]
    r = site_exec("appliance", "sh", "-c", f"ls {CCACHE_DIR} | grep '^krb5cc_{uid}_' || true")
    return r.stdout.split()


def logout(c) -> None:
    r = c.s.get(f"{c.base}/hub/logout", allow_redirects=False)
    assert r.status_code in (200, 302), r.status_code


def stored(user: str) -> bool:
    return bridge_state(user) is not None and credd_query_as_bridge(user) is not None


def test_logout_without_a_server_ends_the_credential(client_for):
    c = client_for("bench12")
    assert login_caches("bench12"), "the login left no ticket cache"
    wait_for("bench12's ticket in the bridge and the lane credd", lambda: stored("bench12"),
             timeout=30)
    t0 = time.monotonic()
    logout(c)
    print(f"logout answered in {time.monotonic() - t0:.2f} s")
    # the logout's answer comes after the bridge ended the credential: no waiting needed
    assert bridge_state("bench12") is None
    assert credd_query_as_bridge("bench12") is None
    assert login_caches("bench12") == []


def test_logout_with_a_server_keeps_it_until_the_server_stops(client_for):
    c = client_for("bench13")
    r = c.spawn({"backend": "htcondor", "cpus": 1, "memory_gb": 1, "runtime_hours": 0.5})
    assert r.status_code in (201, 202), r.text
    c.wait_ready(timeout=240)
    logout(c)
    # the session goes on after the logout (as at DESY): its credential stays
    assert bridge_state("bench13") is not None and credd_query_as_bridge("bench13") is not None
    assert login_caches("bench13")
    c.stop(timeout=120)  # the API token made at login still works
    wait_for("bench13's credential ended after its server stopped",
             lambda: bridge_state("bench13") is None and credd_query_as_bridge("bench13") is None
             and not login_caches("bench13"), timeout=30)


def test_login_caches_left_by_earlier_sessions_are_cleaned_at_start(client_for):
    current = client_for("bench12")
    mine = login_caches("bench12")
    uid12, uid14 = demo_users()["bench12"]["uid"], demo_users()["bench14"]["uid"]
    stale = [f"krb5cc_{uid12}_earlier", f"krb5cc_{uid14}_leftover"]
    for name in stale:  # an older cache of a logged-in user, one of a user nobody tracks
        site_exec("appliance", "sh", "-c", f"cp -p {CCACHE_DIR}/{mine[0]} {CCACHE_DIR}/{name} && "
                  f"touch -d '2 hours ago' {CCACHE_DIR}/{name}")
    site_exec("appliance", "touch", "-d", "1 hour ago", f"{CCACHE_DIR}/{mine[0]}")
    restart_bridge()
    wait_for("the start-up sweep", lambda: not any(
        n in stale for n in site_exec("appliance", "ls", CCACHE_DIR).stdout.split()), timeout=30)
    assert login_caches("bench12") == mine  # the current login's cache is kept
    logout(current)
