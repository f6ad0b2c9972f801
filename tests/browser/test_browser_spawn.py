"""A real browser (Debian chromium via Playwright): log in, pick HTCondor, land in JupyterLab."""

from __future__ import annotations

import pytest

from tests.conftest import HubClient

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def _stop(site, users, user):
    c = HubClient(site)
    c.login(user, users[user]["password"])
    c.make_token()
    if "" in c.user_model().get("servers", {}):
        c.stop()


def _login(page, site, user, password):
    page.goto(f"{site}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn**", timeout=30000)


def _advanced(page):
    """Open the spawn form's "Advanced" section (every field; presets sit above it)."""
    if page.locator("#advanced").get_attribute("open") is None:
        page.click("#advanced > summary")


def test_slurm_upex_lab(browser, site, users, artifacts):
    """bob picks SLURM and his group's partition upex on the spawn page and lands in JupyterLab."""
    user = "bob"
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        _advanced(page)
        page.check("#backend-slurm")
        options = page.locator("#partition option").all_inner_texts()
        assert "upex" in options and "jhub" in options
        page.select_option("#partition", "upex")
        page.screenshot(path=str(artifacts / "spawn-form-slurm-upex.png"))
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240000)
        page.wait_for_selector(".jp-Launcher", timeout=120000)
        page.screenshot(path=str(artifacts / "jupyterlab-slurm-upex.png"))
    finally:
        ctx.close()
        _stop(site, users, user)


def test_login_spawn_lab(browser, site, users, artifacts):
    user = "bob"
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(f"{site}/hub/login")
        page.fill("#username_input", user)
        page.fill("#password_input", users[user]["password"])
        page.click("#login_submit")
        page.wait_for_url("**/hub/spawn**", timeout=30000)
        page.screenshot(path=str(artifacts / "spawn-form.png"))
        _advanced(page)
        page.check("#backend-htcondor")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240000)
        page.wait_for_selector(".jp-Launcher", timeout=120000)
        page.screenshot(path=str(artifacts / "jupyterlab-launcher.png"))
        assert page.locator(".jp-Launcher").count() >= 1
    finally:
        ctx.close()
        _stop(site, users, user)
