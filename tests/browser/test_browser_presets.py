"""The spawn page's presets and remembered choices in a real browser (Debian chromium):
a preset card -> Start -> JupyterLab; the next visit opens with those options; the home page's
"Start again with: ..." starts them in one click; a preset works with JavaScript off too."""

from __future__ import annotations

import pytest

from tests.browser.test_browser_spawn import _login, _stop
from tests.conftest import HubClient

pytestmark = [pytest.mark.minisite, pytest.mark.browser]

LARGE = {"backend": "htcondor", "interface": "lab", "cpus": 4, "memory_gb": 16.0, "gpus": 0,
         "runtime_hours": 8.0}


def _server_options(site, users, user) -> dict:
    c = HubClient(site)
    c.login(user, users[user]["password"])
    c.make_token()
    return c.wait_ready(timeout=240)["user_options"]


def _in_lab(page, user):
    page.wait_for_url(f"**/user/{user}/lab**", timeout=240000)
    # JupyterLab's shell and status bar, whatever the user's saved workspace shows (an earlier
    # test may have left a notebook open instead of the launcher)
    page.wait_for_selector(".jp-LabShell #jp-main-statusbar", timeout=120000)


def test_preset_start_remembered_and_started_again(browser, site, users, artifacts):
    user = "alice"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        assert page.locator("#presets legend").inner_text() == "Start with"
        cards = page.locator("input[name=preset]")
        assert [cards.nth(i).get_attribute("value") for i in range(cards.count())] == [
            "Standard notebook", "SLURM jhub notebook", "Large memory", ""]
        page.screenshot(path=str(artifacts / "spawn-form-presets.png"), full_page=True)
        page.get_by_label("Large memory").check()  # the card's label is tied to its radio
        # picking it filled the fields (they wait under "Advanced")
        assert page.input_value("#cpus") == "4" and page.input_value("#memory_gb") == "16"
        assert page.input_value("#runtime_hours") == "8"
        assert page.locator("#backend-htcondor").is_checked()
        page.click("input[type=submit], button[type=submit]")
        _in_lab(page, user)
        assert _server_options(site, users, user) == LARGE
        _stop(site, users, user)

        # second visit: the form opens with the last options, their preset chosen
        page.goto(f"{site}/hub/spawn")
        assert page.locator("input[name=preset][value='Large memory']").is_checked()
        assert page.input_value("#cpus") == "4" and page.input_value("#memory_gb") == "16"

        # the home page starts them again in one click
        page.goto(f"{site}/hub/home")
        again = page.locator("#start-again-button")
        assert again.inner_text() == "Start again with: HTCondor, 4 CPUs, 16 GiB, 8 h, JupyterLab"
        page.screenshot(path=str(artifacts / "home-start-again.png"))
        again.click()
        _in_lab(page, user)
        assert _server_options(site, users, user) == LARGE
    finally:
        ctx.close()
        _stop(site, users, user)


def test_preset_without_javascript_and_a_refusal_next_to_its_field(browser, site, users,
                                                                  artifacts):
    """With JavaScript off, a refused value comes back next to its field, the form keeping what
    was typed; then picking a card and leaving the fields as shown starts that preset."""
    user = "carol"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, java_script_enabled=False,
                              viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        # <details> opens without JavaScript; it is open already when carol's last options
        # (from earlier tests) match no preset
        if page.locator("#advanced").get_attribute("open") is None:
            page.locator("#advanced > summary").click()
        page.check("#preset-custom")
        page.check("#backend-slurm")
        page.fill("#constraint", "epyc&&")  # the server's grammar refuses it
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_selector("#constraint-error")
        assert page.get_attribute("#constraint", "aria-describedby") == "constraint-error"
        assert page.get_attribute("#constraint", "aria-invalid") == "true"
        assert page.input_value("#constraint") == "epyc&&"
        assert page.locator("#advanced").get_attribute("open") is not None
        page.screenshot(path=str(artifacts / "spawn-form-field-error.png"), full_page=True)

        # the fields left as shown: the preset's values count (its constraint is none)
        page.check("input[name=preset][value='SLURM jhub notebook']")
        page.click("input[type=submit], button[type=submit]")
        opts = _server_options(site, users, user)
        assert {k: opts.get(k) for k in ("backend", "partition", "cpus", "memory_gb",
                                         "constraint")} == {
            "backend": "slurm", "partition": "jhub", "cpus": 1, "memory_gb": 2.0,
            "constraint": None}
    finally:
        ctx.close()
        _stop(site, users, user)
