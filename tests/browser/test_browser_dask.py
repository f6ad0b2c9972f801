"""A real browser: the example notebook's Dask cells in alice's Slurm notebook show the cluster
widget (ipywidgets) with 2 workers, its dashboard link points to alice's server URL through the
hub (jupyter-server-proxy), and the dashboard renders there.

Screenshots go to tests/artifacts/; with JBA_DOCS_IMG=1 also to docs/img/ (the user guide's).
~1 min (spawn, two whole-node worker processes on node3, page loads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from urllib.parse import urljoin

import pytest

from tests.conftest import ROOT, HubClient

pytestmark = [pytest.mark.minisite, pytest.mark.browser]

EXAMPLE = ROOT / "demo" / "notebooks" / "compute-from-your-notebook.ipynb"


def _dask_cells() -> dict:
    """The example notebook without its batch-job part and without the final close()."""
    nb = json.loads(EXAMPLE.read_text())
    keep = []
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and ("sbatch" in text or "cluster.close()" in text):
            continue
        keep.append(cell)
    # more of the same work, so that the dashboard (opened meanwhile) has a task stream to show
    keep.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                 "id": "busy", "source": ["for _ in range(10):\n", "    (x + x.T).mean().compute()\n",
                                          "print('busy done')"]})
    nb["cells"] = keep
    return nb


def _goto(page, url: str):
    """page.goto, again if chromium saw the host's network change (podman adding interfaces for
    other containers on this machine aborts a navigation with ERR_NETWORK_CHANGED)."""
    for attempt in range(3):
        try:
            return page.goto(url)
        except Exception as e:
            if "ERR_NETWORK_CHANGED" not in str(e) or attempt == 2:
                raise


def _save(page_or_locator, name: str, artifacts) -> None:
    path = artifacts / name
    page_or_locator.screenshot(path=str(path))
    if os.environ.get("JBA_DOCS_IMG") == "1":
        (ROOT / "docs" / "img").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / "img" / name)


def test_dask_widget_and_dashboard_through_the_hub(browser, site, users, artifacts):
    user = "alice"
    api = HubClient(site)
    api.login(user, users[user]["password"])
    api.make_token()
    if "" in api.user_model().get("servers", {}):
        api.stop()
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    try:
        _goto(page, f"{site}/hub/login")
        page.fill("#username_input", user)
        page.fill("#password_input", users[user]["password"])
        page.click("#login_submit")
        page.wait_for_url("**/hub/spawn**", timeout=30000)
        assert api.spawn({"backend": "slurm"}).status_code in (201, 202)
        api.wait_ready(timeout=240)
        r = api.user_api("PUT", "/api/contents/dask-widget.ipynb",
                         json={"type": "notebook", "format": "json", "content": _dask_cells()})
        assert r.status_code in (200, 201), r.text

        _goto(page, api.user_url("/lab/tree/dask-widget.ipynb"))
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120000)
        # the kernel is connected (status bar "... | Idle"), else Run All would queue nothing
        page.wait_for_function("() => /\\| Idle/.test(document.querySelector('#jp-main-statusbar')"
                               "?.innerText || '')", timeout=120000)
        page.click("text=Run")  # the menu bar
        page.click("li.lm-Menu-item:has-text('Run All Cells')")
        # the widget: a Tab with the cluster's status, 2 workers, the dashboard link
        link = page.wait_for_selector(".jp-OutputArea-output a[href*='/proxy/']", timeout=240000)
        href = link.get_attribute("href")
        assert re.fullmatch(r"/user/alice/proxy/\d+/status", href), href
        page.wait_for_selector(".jp-OutputArea-output .widget-tab, .jp-OutputArea-output .lm-TabBar",
                               timeout=30000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(o => /Workers:?\\s*2/.test(o.innerText))", timeout=120000)
        widget = page.locator(".jp-Cell").filter(has=page.locator("a[href*='/proxy/']")).first
        widget.scroll_into_view_if_needed()
        _save(widget, "dask-widget.png", artifacts)

        # the widget's link, opened while the computation cells run
        dash = ctx.new_page()
        resp = _goto(dash, urljoin(page.url, href))  # on alice's origin, as a click opens it
        assert resp.status == 200, resp.status
        assert "/user/alice/proxy/" in dash.url
        dash.wait_for_selector("canvas", timeout=60000)
        # the computation cell has run on the cluster: its output names the worker node
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(o => /workers ran on .*node3\\.mini\\.test/.test(o.innerText))", timeout=240000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(o => o.innerText.includes('busy done'))", timeout=240000)
        dash.wait_for_load_state("networkidle", timeout=60000)
        _save(dash, "dask-dashboard.png", artifacts)
    finally:
        ctx.close()
        if "" in api.user_model().get("servers", {}):
            api.stop()
