"""axe-core (npm) through Playwright on the spawn, pending and home pages: no serious or critical
accessibility violations. The pending page is a real one: alice's notebook waits in partition
maxwell while bob's notebook holds its only node alice may use (node3; node2 is belle2's)."""

from __future__ import annotations

import pytest

from tests.browser.axe import violations
from tests.browser.test_browser_spawn import _advanced, _login, _stop
from tests.conftest import HubClient

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def _client(site, users, user) -> HubClient:
    c = HubClient(site)
    assert c.login(user, users[user]["password"]).status_code == 302
    c.make_token()
    return c


def test_spawn_pending_and_home_pages_have_no_serious_violations(browser, site, users):
    for u in ("alice", "bob"):
        _stop(site, users, u)
    bob = _client(site, users, "bob")
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        r = bob.spawn({"backend": "slurm", "partition": "upex", "cpus": 1, "memory_gb": 1})
        assert r.status_code in (201, 202), r.text
        bob.wait_ready(timeout=180)
        _login(page, site, "alice", users["alice"]["password"])
        found = {"spawn": violations(page)}
        _advanced(page)
        page.check("#backend-slurm")
        page.select_option("#partition", "maxwell")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/spawn-pending/**", timeout=60000)
        page.wait_for_selector("#batch-waiting:not(.d-none)", timeout=60000)
        found["pending"] = violations(page)
        page.goto(f"{site}/hub/home")
        found["home"] = violations(page)
        assert found == {"spawn": [], "pending": [], "home": []}
    finally:
        ctx.close()
        _stop(site, users, "alice")
        bob.stop()
