"""A real browser shows the Kerberos credential state on the hub's home page."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def test_home_page_shows_credential_and_renewal_warning(browser, site, users, artifacts):
    """`shortlived` (tickets renewable for 10 minutes only) sees principal, times and the
    "log in again before ..." warning."""
    user = "shortlived"
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{site}/hub/login")
        page.fill("#username_input", user)
        page.fill("#password_input", users[user]["password"])
        t0 = time.time()
        page.click("#login_submit")
        page.wait_for_load_state()
        page.goto(f"{site}/hub/home")
        page.wait_for_selector('#batch-credential[data-state="active"]', timeout=30000)
        assert page.inner_text("#batch-credential-principal") == "shortlived@MINI.TEST"
        for cell in ("#batch-credential-valid", "#batch-credential-renew",
                     "#batch-credential-forwarded"):
            assert page.inner_text(cell) not in ("", "…", "–"), cell
        warning = page.locator("#batch-credential-warning")
        assert warning.is_visible()
        assert "can be renewed only until" in warning.inner_text()
        assert "log in again before then" in warning.inner_text()
        page.screenshot(path=str(artifacts / "home-credential.png"), full_page=True)
        print(f"login -> credential shown on the home page: {time.time() - t0:.2f} s")
    finally:
        ctx.close()
