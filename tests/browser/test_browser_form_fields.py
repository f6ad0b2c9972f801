"""The spawn form's fields adapt to the chosen place (issue 12, "only what can work"), in a real
browser: the GPU field only where GPUs exist and limited to what is there (HTCondor: exec1's 2;
Slurm: node3's 2 in maxwell/all, none in jhub), the runtime bounded by the partition's limit, a
reservation's remaining lifetime shown and put into the runtime (and the job gets that limit).
Without JavaScript the fields allow the most any place has and the server refuses the rest,
naming the field next to it (templates/spawn_form_fields_script.html, appliance/hub/form_limits.py).
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from tests.browser.test_browser_spawn import _advanced, _login, _stop
from tests.conftest import site_exec, wait_for

pytestmark = [pytest.mark.minisite, pytest.mark.browser]


def _reservation_end(name: str) -> float:
    r = site_exec("slurmctld", "scontrol", "show", "reservation", name, "--json")
    end = json.loads(r.stdout)["reservations"][0]["end_time"]
    return float(end["number"] if isinstance(end, dict) else end)


def _gpu_field(page) -> tuple[bool, str]:
    shown = page.locator("#gpus").is_visible()
    assert shown == page.locator("#gpus").is_enabled()  # hidden = not submitted
    return shown, page.get_attribute("#gpus", "max")


@contextlib.contextmanager
def carol_spawn_page(browser, site, users, **context):
    """carol (group belle2: partitions jhub, maxwell, all; reservation belle2) on the spawn page
    with every field open; her server is stopped before and after."""
    _stop(site, users, "carol")
    ctx = browser.new_context(ignore_https_errors=True, **context)
    try:
        page = ctx.new_page()
        _login(page, site, "carol", users["carol"]["password"])
        _advanced(page)
        yield page
    finally:
        ctx.close()
        _stop(site, users, "carol")
        wait_for("carol's Slurm jobs to leave the queue",  # a COMPLETING one holds its node
                 lambda: not site_exec("slurmctld", "squeue", "-h", "-u", "carol").stdout.strip(),
                 timeout=120, interval=1)


def test_gpu_and_runtime_fields_follow_the_place(browser, site, users, artifacts):
    with carol_spawn_page(browser, site, users, viewport={"width": 1280, "height": 800}) as page:
        page.check("#backend-htcondor")
        assert _gpu_field(page) == (True, "2")  # exec1's two
        page.check("#backend-slurm")
        page.select_option("#reservation", "")
        page.select_option("#partition", "jhub")
        assert _gpu_field(page) == (False, "0")
        assert page.get_attribute("#runtime_hours", "max") == "168"
        page.select_option("#partition", "maxwell")
        assert _gpu_field(page) == (True, "2")
        assert page.get_attribute("#runtime_hours", "max") == "8"  # notebooks there: 8 h
        assert page.inner_text("#runtime-max") == "8"
        page.screenshot(path=str(artifacts / "spawn-form-gpu-field.png"))
        page.select_option("#partition", "all")
        assert _gpu_field(page) == (True, "2")

        # the reservation: its remaining lifetime, and the runtime set from it
        page.select_option("#partition", "jhub")
        page.select_option("#reservation", "belle2")
        left = (_reservation_end("belle2") - time.time()) / 3600
        runtime = float(page.input_value("#runtime_hours"))
        assert left - 0.25 - 1 / 60 - 0.01 < runtime <= left, (runtime, left)
        assert runtime * 4 == int(runtime * 4)  # in the field's steps: the browser accepts it
        text = page.inner_text("#reservation-ends")
        assert text.startswith("Reservation belle2 ends in ") and f"set to {runtime:g} h" in text
        assert float(page.get_attribute("#runtime_hours", "max")) <= left
        page.locator("#reservation").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "spawn-form-reservation-runtime.png"))
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/user/carol/lab**", timeout=240000)
        r = site_exec("slurmctld", "squeue", "-u", "carol", "-h", "-O", "partition,reservation,timelimit")
        part, name, limit = r.stdout.split()
        assert (part, name) == ("jhub", "belle2")
        h, m, s = (int(x) for x in limit.split("-")[-1].split(":"))
        days = int(limit.split("-")[0]) if "-" in limit else 0
        assert abs((days * 24 + h + m / 60 + s / 3600) - runtime) < 1 / 60, (limit, runtime)


def test_without_javascript_the_server_refuses_gpus_where_none_exist(browser, site, users):
    with carol_spawn_page(browser, site, users, java_script_enabled=False) as page:
        assert page.get_attribute("#gpus", "max") == "2"
        assert "SLURM partitions maxwell, all: up to 2" in page.inner_text("label[for=gpus]")
        page.check("#preset-custom")
        page.check("#backend-slurm")
        page.select_option("#partition", "jhub")
        page.select_option("#reservation", "")
        page.fill("#gpus", "1")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_selector("#gpus-error", timeout=30000)
        assert "no node of partition jhub has 1 GPU" in page.inner_text("#gpus-error")
        assert page.get_attribute("#gpus", "aria-invalid") == "true"


def _constraint_state(page) -> tuple[bool, str]:
    valid = page.evaluate("document.getElementById('constraint').validity.valid")
    assert page.get_attribute("#constraint", "aria-invalid") == ("false" if valid else "true")
    return valid, page.inner_text("#constraint-check")


def test_constraint_checked_as_you_type_and_refused_by_the_server(browser, site, users, artifacts):
    with carol_spawn_page(browser, site, users, viewport={"width": 1280, "height": 800}) as page:
        page.check("#preset-custom")
        page.check("#backend-slurm")
        page.select_option("#partition", "jhub")
        page.select_option("#reservation", "")
        boxes = page.locator(".constraint-feature")
        assert sorted(boxes.evaluate_all("bs => bs.map(b => b.value)")) == ["avx512", "epyc", "gpu"]

        # the feature checkboxes write the text
        page.fill("#constraint", "")
        page.check("#constraint-features input[value=epyc]")
        page.check("#constraint-features input[value=avx512]")
        assert page.input_value("#constraint") == "epyc&avx512"
        assert _constraint_state(page) == (True, "")
        page.uncheck("#constraint-features input[value=epyc]")
        assert page.input_value("#constraint") == "avx512"
        page.fill("#constraint", "gpu & epyc")  # typing checks the boxes it names
        assert page.is_checked("#constraint-features input[value=gpu]")
        assert not page.is_checked("#constraint-features input[value=avx512]")

        # invalid: flagged while typing, next to the field, and the browser will not submit it
        page.fill("#constraint", "epyc|(avx512")
        assert _constraint_state(page) == (False, "unbalanced parentheses")
        page.fill("#constraint", "epyc&foo")
        valid, text = _constraint_state(page)
        assert not valid and text.startswith("Slurm knows no node feature foo")
        page.locator("#constraint").press_sequentially("&")  # as typed, key by key
        valid, text = _constraint_state(page)
        assert not valid and "an operator between every two features" in text
        page.screenshot(path=str(artifacts / "spawn-form-constraint-invalid.png"))
        page.click("input[type=submit], button[type=submit]")
        assert "/hub/spawn" in page.url and page.locator("#constraint-error").count() == 0

        # submitted anyway (the page's check bypassed): the server refuses it, naming the field
        page.fill("#constraint", "epyc&&avx512")
        page.evaluate("document.getElementById('constraint').form.noValidate = true")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_selector("#constraint-error", timeout=30000)
        assert "unexpected '&'" in page.inner_text("#constraint-error")
        assert page.input_value("#constraint") == "epyc&&avx512"
        # the page flags the returned value at once too
        assert _constraint_state(page)[0] is False
