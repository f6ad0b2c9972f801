"""Issue 12, accessible and clear: the spawn page works from the keyboard alone, every visible
control has a label, and the layout does not break at 1280 px or on a narrow (phone) window."""

from __future__ import annotations

import pytest

from tests.browser.test_browser_spawn import _login, _stop
from tests.conftest import HubClient

pytestmark = [pytest.mark.minisite, pytest.mark.browser]

UNLABELED = """[...document.querySelectorAll(
    'form input:not([type=hidden]), form select, form textarea, form button')]
  .filter(e => e.offsetParent !== null)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby') && !(e.tagName === 'BUTTON' && e.innerText.trim())
               && !(e.type === 'submit' && (e.value || e.innerText)))
  .map(e => e.name || e.id || e.outerHTML.slice(0, 80))"""
ACTIVE = """(() => { const e = document.activeElement;
  return {tag: e.tagName, type: e.type || '', name: e.name || '', id: e.id || '',
          label: e.labels && e.labels.length ? e.labels[0].innerText.trim() : e.innerText || ''}; })()"""


@pytest.mark.parametrize("width", [1280, 390])
def test_spawn_page_layout_holds_and_every_control_is_labelled(browser, site, users, width):
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": width, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, "carol", users["carol"]["password"])
        if page.locator("#advanced").get_attribute("open") is None:
            page.click("#advanced > summary")  # every field shown
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px of horizontal overflow at {width} px"
        assert page.evaluate(UNLABELED) == []
        start = page.locator("input[type=submit], button[type=submit]").first.bounding_box()
        assert start and start["x"] >= 0 and start["x"] + start["width"] <= width
    finally:
        ctx.close()


def test_keyboard_only_login_preset_and_start(browser, site, users):
    user = "alice"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{site}/hub/login")
        page.focus("#username_input")  # the login page's own autofocus field
        page.keyboard.type(user)
        page.keyboard.press("Tab")
        page.keyboard.type(users[user]["password"])
        page.keyboard.press("Enter")
        page.wait_for_url("**/hub/spawn**", timeout=30000)
        # Tab to the preset cards, choose "Standard notebook" with the arrow keys
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate(ACTIVE)["name"] == "preset":
                break
        else:
            pytest.fail("Tab never reached the preset cards")
        for _ in range(10):
            if page.evaluate(ACTIVE)["label"].startswith("Standard notebook"):
                break
            page.keyboard.press("ArrowDown")
        page.keyboard.press("Space")
        assert page.locator("input[name=preset][value='Standard notebook']").is_checked()
        assert page.locator("#backend-htcondor").is_checked()  # the card filled the fields
        for _ in range(80):
            page.keyboard.press("Tab")
            a = page.evaluate(ACTIVE)
            if a["type"] == "submit":
                break
        else:
            pytest.fail("Tab never reached the Start button")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/user/{user}/lab**", timeout=240000)
        page.wait_for_selector(".jp-LabShell #jp-main-statusbar", timeout=120000)
        c = HubClient(site)
        c.login(user, users[user]["password"])
        c.make_token()
        assert c.user_model()["servers"][""]["user_options"]["backend"] == "htcondor"
    finally:
        ctx.close()
        _stop(site, users, user)
