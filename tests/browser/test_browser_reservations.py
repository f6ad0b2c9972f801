"""The reservation service's page in a real browser: staff (alice) signs in through the hub's
OAuth, creates a reservation with the form (cookie auth + XSRF), sees it listed, deletes it."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import service_origin, site_exec
from tests.integration.test_operations import wait_node_idle

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def test_staff_page_create_and_delete(browser, site, users, artifacts):
    name = f"b{uuid.uuid4().hex[:6]}"
    wait_node_idle("node3")
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        # the service has an origin of its own (reservations--service.<hub host>): opened there,
        # it sends alice to the hub's login (OAuth) and back
        page.goto(f"{service_origin(site, 'reservations')}/services/reservations/")
        page.wait_for_url("**/hub/login**", timeout=30000)
        page.fill("#username_input", "alice")
        page.fill("#password_input", users["alice"]["password"])
        page.click("#login_submit")
        page.wait_for_url("**reservations--service.*/services/reservations/**", timeout=30000)
        page.wait_for_selector("form#create", timeout=30000)
        page.fill("input[name=name]", name)
        page.select_option("select[name=partition]", "upex")
        page.check("input[name=nodes][value=node3]")
        page.fill("input[name=who]", "upex")
        page.fill("input[name=hours]", "1")
        page.click("form#create button")
        row = page.locator(f"tr[data-name='{name}']")
        row.wait_for(timeout=30000)
        assert "node3" in row.inner_text() and "upex" in row.inner_text()
        page.screenshot(path=str(artifacts / "reservations-page.png"))
        # a refusal is shown in the page, in the service's words (no node picked)
        page.fill("input[name=name]", name + "x")
        page.fill("input[name=who]", "upex")
        page.click("form#create button")
        page.wait_for_selector("#msg:has-text('nodes')", timeout=30000)
        row.locator("button", has_text="delete").click()
        row.wait_for(state="detached", timeout=30000)
    finally:
        ctx.close()
    assert site_exec("slurmctld", "scontrol", "show", "reservation", f"staff-{name}",
                     check=False).returncode != 0
