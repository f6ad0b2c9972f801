"""The spawn page's "Available now" panel in Debian chromium: rendered by the server (JavaScript
off too), its numbers those of GET /hub/api/batch/availability, refreshed every few seconds with
the data's age counting, and asking again for the size the form shows. Screenshot:
docs/img/spawn-availability.png (and tests/artifacts/)."""

from __future__ import annotations

import shutil

import pytest

from tests.browser.test_browser_spawn import _advanced, _login, _stop

pytestmark = [pytest.mark.minisite, pytest.mark.browser]

DOCS_IMG = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "img"


def _cells(page) -> dict[str, dict[str, str]]:
    """{pool: {field: text}} of the panel as shown."""
    return page.evaluate("""() => {
      const out = {};
      document.querySelectorAll('#availability tr[data-pool]').forEach(tr => {
        const row = {};
        tr.querySelectorAll('td[data-field]').forEach(td => { row[td.dataset.field] = td.textContent.trim(); });
        out[tr.closest('[data-backend]').dataset.backend + '/' + tr.dataset.pool] = row;
      });
      return out;
    }""")


def _expected(answer: dict) -> dict[str, dict[str, str]]:
    out = {}
    for b in answer["backends"]:
        for p in b["pools"]:
            out[f"{b['backend']}/{p['kind']}:{p['name']}"] = {
                "fits_now": str(p["fits_now"]),
                "idle_nodes": f"{p['idle_nodes']} of {p['nodes']}",
                "free_cores": f"{p['free_cores']} of {p['total_cores']}",
                "largest_free_memory_mb": f"{p['largest_free_memory_mb'] / 1024:.1f} GiB",
            }
    return out


def _numbers(cells: dict) -> dict:
    keep = ("fits_now", "idle_nodes", "free_cores", "largest_free_memory_mb")
    return {k: {f: v[f] for f in keep} for k, v in cells.items()}


def test_panel_matches_the_endpoint_refreshes_and_ages(browser, site, users, artifacts):
    user = "bob"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        panel = page.locator("#availability")
        assert panel.locator("[data-backend=htcondor] tr[data-pool='lane:lane']").count() == 1
        assert panel.locator("[data-backend=slurm] tr[data-pool='partition:upex']").count() == 1
        # the page's own refresh: the DOM then shows exactly that answer
        with page.expect_response(lambda r: "/hub/api/batch/availability" in r.url,
                                  timeout=20000) as resp:
            pass
        answer = resp.value.json()
        page.wait_for_function("n => +document.getElementById('availability').dataset.updates >= n",
                               arg=1, timeout=10000)
        assert _numbers(_cells(page)) == _expected(answer)
        # the age counts up between refreshes
        age = page.locator("#availability-status-htcondor .availability-age")
        first = int(age.inner_text())
        page.wait_for_function(
            "a => +document.querySelector('#availability-status-htcondor .availability-age')"
            ".textContent !== a", arg=first, timeout=10000)
        assert "s ago; refreshed every 5 s." in page.inner_text("#availability-status-htcondor")
        # another size: asked again at once, for that size
        _advanced(page)
        with page.expect_response(lambda r: "/hub/api/batch/availability" in r.url
                                  and "cpus=4" in r.url, timeout=20000) as resp:
            page.fill("#cpus", "4")
            page.dispatch_event("#cpus", "change")
        answer = resp.value.json()
        assert answer["request"]["cpus"] == 4
        page.wait_for_function("() => document.getElementById('availability-size')"
                               ".textContent.startsWith('for 4 CPUs')", timeout=10000)
        assert _numbers(_cells(page)) == _expected(answer)
        path = artifacts / "spawn-availability.png"
        panel.screenshot(path=str(path))
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / "spawn-availability.png")
    finally:
        ctx.close()


def test_panel_without_javascript(browser, site, users):
    user = "carol"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, java_script_enabled=False,
                              viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        rows = page.locator("#availability tr[data-pool]")
        pools = [rows.nth(i).get_attribute("data-pool") for i in range(rows.count())]
        assert pools == ["lane:lane", "partition:jhub", "partition:all", "partition:maxwell",
                         "reservation:belle2"]
        for backend in ("htcondor", "slurm"):
            assert "s ago; refreshed every 5 s." in page.inner_text(
                f"#availability-status-{backend}")
    finally:
        ctx.close()


def test_spawn_page_load_time(browser, site, users, artifacts):
    """Figures for docs/admin.md: the spawn page's time in the hub (its log) and in the browser
    (Navigation Timing), median of 10 loads with the availability view warm."""
    import json
    import re
    import statistics

    from tests.conftest import container, podman

    user = "alice"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        since = podman("exec", container("appliance"), "date", "+%s").stdout.strip()
        timings = []
        for _ in range(10):
            page.goto(f"{site}/hub/spawn", wait_until="load")
            timings.append(page.evaluate("""() => {
              const n = performance.getEntriesByType('navigation')[0];
              return {ttfb: n.responseStart - n.requestStart, dom: n.domContentLoadedEventEnd,
                      load: n.loadEventEnd || performance.now()};
            }"""))
        logs = podman("logs", "--since", since, container("appliance")).stdout + \
            podman("logs", "--since", since, container("appliance")).stderr
        hub_ms = [float(m) for m in re.findall(
            rf"200 GET /hub/spawn \({user}@[^)]*\) ([0-9.]+)ms", logs)]
        figures = {
            "loads": len(timings),
            "hub_ms_median": statistics.median(hub_ms) if hub_ms else None,
            "ttfb_ms_median": round(statistics.median(t["ttfb"] for t in timings), 1),
            "dom_content_loaded_ms_median": round(statistics.median(t["dom"] for t in timings), 1),
            "load_ms_median": round(statistics.median(t["load"] for t in timings), 1),
        }
        (artifacts / "spawn-page-timing.json").write_text(json.dumps(figures, indent=1))
        print(json.dumps(figures))
        assert len(hub_ms) >= 10, logs[-2000:]
        assert figures["load_ms_median"] < 10000
    finally:
        ctx.close()


def test_panel_says_when_slurm_cannot_be_queried(browser, site, users, artifacts):
    """slurmctld paused while the page is open: the next refreshes say SLURM could not be
    queried and keep the last numbers with their age; HTCondor's part stays live.
    Screenshot: docs/img/spawn-availability-down.png."""
    from tests.conftest import container, podman

    user = "alice"
    _stop(site, users, user)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, user, users[user]["password"])
        assert page.get_attribute("[data-backend=slurm]", "data-ok") == "true"
        podman("pause", container("slurmctld"))
        try:
            # Slurm's client gives up after its message timeout (~20 s), the hub's after 30 s
            page.wait_for_selector("[data-backend=slurm][data-ok=false]", timeout=70000)
            status = page.inner_text("#availability-status-slurm")
            assert "SLURM could not be queried" in status
            assert "You can still start a notebook." in status
            assert "The numbers below are from an earlier answer." in status
            assert page.locator("[data-backend=slurm] tr[data-pool='partition:jhub']").count() == 1
            assert page.get_attribute("[data-backend=htcondor]", "data-ok") == "true"
            path = artifacts / "spawn-availability-down.png"
            page.locator("#availability").screenshot(path=str(path))
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / "spawn-availability-down.png")
        finally:
            podman("unpause", container("slurmctld"))
        page.wait_for_selector("[data-backend=slurm][data-ok=true]", timeout=30000)
    finally:
        ctx.close()


def test_page_numbers_follow_the_scheduler_when_a_notebook_starts(browser, site, users):
    """bob's open page: alice's HTCondor notebook starts -> the lane's row shows one notebook
    core less, as condor_status says."""
    from tests.browser.test_browser_axe import _client
    from tests.conftest import site_exec

    def lane_free() -> int:
        out = site_exec("condor-lane", "condor_status", "-const", "NotebookSlot =?= true",
                        "-af", "SlotType", "Cpus").stdout.split("\n")
        return sum(int(r.split()[1]) for r in out if r.startswith("Partitionable"))

    def shown(page) -> int:
        text = page.inner_text("[data-backend=htcondor] tr[data-pool='lane:lane'] "
                               "td[data-field=free_cores]")
        return int(text.split()[0])

    for u in ("alice", "bob"):
        _stop(site, users, u)
    alice = _client(site, users, "alice")
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _login(page, site, "bob", users["bob"]["password"])
        before = lane_free()
        page.wait_for_function(
            "n => +document.querySelector(\"[data-backend=htcondor] tr[data-pool='lane:lane'] "
            "td[data-field=free_cores]\").textContent.split(' ')[0] === n", arg=before,
            timeout=20000)
        r = alice.spawn({"backend": "htcondor", "cpus": 1, "memory_gb": 1})
        assert r.status_code in (201, 202), r.text
        alice.wait_ready()
        assert lane_free() == before - 1
        page.wait_for_function(
            "n => +document.querySelector(\"[data-backend=htcondor] tr[data-pool='lane:lane'] "
            "td[data-field=free_cores]\").textContent.split(' ')[0] === n", arg=before - 1,
            timeout=20000)
        assert shown(page) == lane_free()
    finally:
        ctx.close()
        alice.stop()
