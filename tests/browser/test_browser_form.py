"""The spawn form's SLURM-only fields in a real browser: shown and submitted only while SLURM is
picked (templates/spawn_form.html; a disabled fieldset is not submitted)."""

from __future__ import annotations

import pytest

from tests.browser.test_browser_spawn import _advanced, _login, _stop

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def test_slurm_fields_only_while_slurm_is_picked(browser, site, users, artifacts):
    user = "carol"
    _stop(site, users, user)  # the spawn page shows only without a running server
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        fieldset = page.locator("#slurm-options")

        def slurm_fields_on() -> bool:
            shown = fieldset.is_visible()
            enabled = not page.eval_on_selector("#slurm-options", "f => f.disabled")
            assert shown == enabled == page.locator("#partition").is_enabled()
            return shown

        _advanced(page)
        # the form opens with the last options (or a preset): start from HTCondor
        page.check("#backend-htcondor")
        assert not slurm_fields_on()
        page.check("#backend-slurm")
        assert slurm_fields_on()
        assert "belle2" in page.locator("#reservation option").all_inner_texts()
        assert "jhub" in page.locator("#partition option").all_inner_texts()
        page.screenshot(path=str(artifacts / "spawn-form-slurm-fields.png"))
        page.check("#backend-htcondor")
        assert not slurm_fields_on()
    finally:
        ctx.close()
