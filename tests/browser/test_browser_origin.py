"""Issue 9, hole 1 (an origin per user): a page mallory serves from her own server cannot act as
alice on the hub.

mallory (demo/users.tsv) adds a static directory of her home to her own Jupyter server through
her ~/.jupyter config (a user controls that file; the server serves static files to anyone,
without login) and puts a page there that, opened by a logged-in alice, reads /hub/home for
alice's XSRF token and creates an API token for alice through /hub/api/users/alice/tokens.
alice opens it in Chromium. Asserted: no token was created, alice's token list is unchanged, and
the page could not read alice's hub pages. With one origin for the hub and every user server
(before subdomain_host) the page did both. docs/security.md, "An origin per user".
"""

from __future__ import annotations

import json
import shlex
import uuid

import pytest

from tests.browser.test_browser_spawn import _login
from tests.conftest import HubClient, site_exec

pytestmark = [pytest.mark.minisite, pytest.mark.browser]

HOSTILE, VICTIM = "mallory", "alice"
NOTE = "stolen-by-mallory"
HOME = f"/home/{HOSTILE}"

# The page tries the hub's public URL and, as a same-host request, its own host: it reports what
# it could read and what the token calls answered. It never reads anything it was not given.
PAGE = """<!doctype html><meta charset="utf-8"><title>running</title><pre id="out"></pre>
<script>
const HUB = new URLSearchParams(location.search).get("hub");
const VICTIM = %(victim)s, NOTE = %(note)s;
async function attempt(base) {
  const r = {base: base || location.origin};
  try {
    const home = await fetch(base + "/hub/home", {credentials: "include"});
    const text = await home.text();
    r.home_status = home.status;
    r.home_url = home.url;
    r.read_victims_page = text.includes('user: "' + VICTIM + '"') || text.includes(VICTIM + "'s");
    const m = text.match(/xsrf_token:\\s*"([^"]+)"/);
    r.xsrf = m ? m[1] : "";
  } catch (e) { r.home_error = String(e); }
  try {
    const t = await fetch(base + "/hub/api/users/" + VICTIM + "/tokens", {
      method: "POST", credentials: "include",
      headers: {"X-XSRFToken": r.xsrf || "", "Content-Type": "application/json"},
      body: JSON.stringify({note: NOTE, expires_in: 600})});
    r.token_status = t.status;
    r.token_created = t.status === 201 && (await t.text()).includes('"token"');
  } catch (e) { r.token_error = String(e); }
  try {  // a simple request (no preflight); its answer is opaque to the page
    await fetch(base + "/hub/api/users/" + VICTIM + "/tokens?_xsrf=" + encodeURIComponent(r.xsrf || ""),
      {method: "POST", credentials: "include", mode: "no-cors",
       headers: {"Content-Type": "text/plain"}, body: JSON.stringify({note: NOTE})});
    r.simple_post = "sent";
  } catch (e) { r.simple_post = String(e); }
  return r;
}
(async () => {
  const out = [await attempt(HUB), await attempt("")];
  document.getElementById("out").textContent = JSON.stringify(out);
  document.title = "done";
})();
</script>
""" % {"victim": json.dumps(VICTIM), "note": json.dumps(NOTE)}

CONFIG = """# written by tests/browser/test_browser_origin.py: mallory's own server config
c.ServerApp.extra_static_paths = ["%s/.origin-attack"]
""" % HOME


def as_owner(user: str, script: str, stdin: str = ""):
    """A shell script as ``user`` in the shared home (from the appliance, which mounts /home)."""
    return site_exec("appliance", "runuser", "-u", user, "--", "sh", "-c", script, input=stdin)


@pytest.fixture
def mallorys_page(client_for):
    """mallory's server, started with her own config that serves her page; yields its URL."""
    m = client_for(HOSTILE)
    m.stop()
    name = f"page-{uuid.uuid4().hex[:8]}.html"
    as_owner(HOSTILE, f"umask 022; mkdir -p {HOME}/.jupyter {HOME}/.origin-attack; "
             f"cat > {HOME}/.jupyter/jupyter_server_config.py", CONFIG)
    as_owner(HOSTILE, f"umask 022; cat > {HOME}/.origin-attack/{shlex.quote(name)}", PAGE)
    r = m.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    try:
        m.wait_ready()
        url = m.user_url(f"/static/{name}")
        served = m.user_api("GET", f"/static/{name}")
        # the page is really there for anyone: the attack below is not stopped by a 404 or a login
        assert served.status_code == 200 and "attempt(HUB)" in served.text, served.status_code
        yield url
    finally:
        m.stop()
        as_owner(HOSTILE, f"rm -rf {HOME}/.origin-attack {HOME}/.jupyter/jupyter_server_config.py")


def tokens(c: HubClient) -> dict[str, str]:
    """alice's API tokens: id -> note."""
    r = c.api("GET", f"/users/{c.user}/tokens")
    r.raise_for_status()
    return {t["id"]: t["note"] for t in r.json()["api_tokens"]}


def test_mallorys_page_cannot_act_as_alice(browser, site, users, client_for, mallorys_page,
                                           artifacts):
    alice = client_for(VICTIM)
    before = tokens(alice)
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    try:
        _login(page, site, VICTIM, users[VICTIM]["password"])
        # alice is logged in in this browser: her own hub page is hers (so a failed attack below
        # is not a logged-out browser)
        page.goto(f"{site}/hub/home")
        assert f'user: "{VICTIM}"' in page.content()
        page.goto(f"{mallorys_page}?hub={site}")
        page.wait_for_function("document.title === 'done'", timeout=60000)
        results = json.loads(page.locator("#out").inner_text())
        page.screenshot(path=str(artifacts / "origin-attack.png"))
    finally:
        ctx.close()
        after = tokens(alice)
        for tid in set(after) - set(before):  # what the attack made, if it made anything
            alice.api("DELETE", f"/users/{VICTIM}/tokens/{tid}")
    for r in results:  # the XSRF token the page may have read is alice's secret: not in the log
        r["xsrf"] = f"<{len(r['xsrf'])} characters>" if r.get("xsrf") else ""
    print(json.dumps(results, indent=1))
    assert NOTE not in after.values(), f"mallory's page created a token for alice: {results}"
    assert after == before, f"alice's token list changed: {after} (before: {before})"
    for r in results:
        assert not r.get("token_created"), r
        assert not r.get("read_victims_page") and not r.get("xsrf"), (
            f"mallory's page read alice's hub page from {r['base']}: {r}")
