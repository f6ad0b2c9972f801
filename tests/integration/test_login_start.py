"""Start on login on the mini site (``BatchSpawner.start_on_login``, appliance/hub/login_start.py):
with the setting on, a user with last options who logs in through the form gets a server started
without any spawn request of hers (HTCondor lane, her Kerberos ticket handed over by the login),
the home page says so, and "Choose other options" stops it (its lane job removed) and opens the
form, whose other options then start the server that replaces it.

The setting is off by default and the mini site's appliance_config.py is a read-only mount: the
module turns it on with a drop-in, ``/etc/appliance/appliance_config.d/`` in the appliance
container (loaded after the site file, appliance/hub/jupyterhub_config.py), and a hub restart,
and removes it again (another restart) at the end. Sessions survive hub restarts
(test_htcondor_e2e.py). User: bench85 (demo/users.tsv), which no other test uses.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import HubClient, demo_users, site_exec, wait_for
from tests.integration.test_zy_faults import hub_healthy

pytestmark = [pytest.mark.minisite, pytest.mark.timeout(420)]

USER = "bench85"
DROP_IN_DIR = "/etc/appliance/appliance_config.d"
DROP_IN = f"{DROP_IN_DIR}/50-test-login-start.py"
SUPERVISOR = ["supervisorctl", "-c", "/etc/supervisor/appliance.conf"]
LAST = {"backend": "htcondor", "cpus": 1, "memory_gb": 2}


def restart_hub() -> None:
    site_exec("appliance", *SUPERVISOR, "restart", "jupyterhub")
    wait_for("the hub after its restart", hub_healthy, timeout=120, interval=0.5)


def login(c: HubClient | None = None) -> tuple[HubClient, str]:
    """A form login of USER; the client (with an API token) and where the login redirected."""
    c = c or HubClient()
    r = c.login(USER, demo_users()[USER]["password"])
    assert r.status_code == 302, f"login of {USER} failed: {r.status_code}"
    c.make_token()
    return c, r.headers["Location"]


def server(c: HubClient) -> dict | None:
    return c.user_model().get("servers", {}).get("")


def stop_if_any(c: HubClient) -> None:
    if server(c) is not None:
        c.stop(timeout=90)


def lane_jobs() -> list[dict]:
    r = site_exec("condor-lane", "condor_q", "-all", "-json", "-constraint",
                  f'JupyterHubUser == "{USER}"', "-af:j", "ClusterId", "RequestCpus", check=False)
    return json.loads(r.stdout) if r.stdout.strip() else []


def session(c: HubClient) -> dict:
    r = c.api("GET", "/batch/session", timeout=20)
    r.raise_for_status()
    return r.json()


def form_xsrf(html: str, form_id: str) -> str:
    m = re.search(rf'id="{form_id}".*?name="_xsrf" value="([^"]+)"', html, re.S)
    assert m, f"no form {form_id!r} on the page"
    return m.group(1)


@pytest.fixture(scope="module")
def start_on_login(site):
    """The setting on for this module (a drop-in + hub restart), off again afterwards."""
    site_exec("appliance", "sh", "-c", f"mkdir -p {DROP_IN_DIR} && cat > {DROP_IN}",
              input="c = get_config()  # noqa: F821\nc.BatchSpawner.start_on_login = True\n")
    try:
        restart_hub()
        yield
    finally:
        site_exec("appliance", "sh", "-c", f"rm -f {DROP_IN}; rmdir {DROP_IN_DIR} 2>/dev/null; "
                  "true")
        restart_hub()
        stop_if_any(login()[0])  # after the restart: this login starts nothing


def test_login_starts_the_last_options_and_other_options_replace_them(start_on_login):
    # Her last options: a server of hers started with them through the API, then stopped.
    c, _ = login()
    stop_if_any(c)
    r = c.spawn(LAST)
    assert r.status_code in (201, 202), r.text
    c.wait_ready(timeout=240)
    c.stop(timeout=90)
    wait_for(f"{USER}'s lane job removed", lambda: lane_jobs() == [], timeout=60, interval=0.5)

    # A fresh login through the form: no spawn request, and a server starts.
    b, location = login()
    assert location.endswith("/hub/home"), (
        f"the login went to {location}, not the home page: is start_on_login on (drop-in "
        f"{DROP_IN} loaded at the hub's restart)?")
    srv = wait_for(f"{USER}'s server started by the login", lambda: server(b), timeout=30,
                   interval=0.25)
    assert srv["user_options"] == LAST
    home = b.s.get(f"{b.base}/hub/home")
    home.raise_for_status()
    assert re.search(r"Your server is (starting|running) with your last options: HTCondor, "
                     r"1 CPU, 2 GiB", home.text), home.text[-3000:]
    b.wait_ready(timeout=240)  # her ticket went with it: the HTCondor lane needs it
    assert session(b)["server"]["started_on_login"] is True  # (the view needs the job's id)
    [job] = wait_for(f"{USER}'s lane job", lane_jobs, timeout=30, interval=0.5)

    # "Choose other options": that server stops, its job goes, the form opens.
    r = b.s.post(f"{b.base}/hub/batch/other-options",
                 data={"_xsrf": form_xsrf(home.text, "login-start")}, allow_redirects=False,
                 timeout=60)
    assert r.status_code == 302 and r.headers["Location"].endswith("/hub/spawn"), r.status_code
    wait_for(f"{USER}'s server gone", lambda: server(b) is None, timeout=60, interval=0.25)
    wait_for(f"lane job {job['ClusterId']} removed",
             lambda: all(j["ClusterId"] != job["ClusterId"] for j in lane_jobs()), timeout=60,
             interval=0.5)
    form = b.s.get(f"{b.base}/hub/spawn", allow_redirects=False)
    assert form.status_code == 200 and 'name="cpus"' in form.text, form.status_code

    # Other options, through the form: they start the server that replaces it.
    r = b.s.post(f"{b.base}/hub/spawn/{USER}", allow_redirects=False, timeout=60,
                 data={"_xsrf": b.xsrf(), "backend": "htcondor", "cpus": "2", "memory_gb": "2"})
    assert r.status_code == 302 and "/hub/spawn-pending/" in r.headers["Location"], r.text[-2000:]
    srv = b.wait_ready(timeout=240)
    assert srv["user_options"] == {"backend": "htcondor", "cpus": 2, "memory_gb": 2.0}
    assert session(b)["server"]["started_on_login"] is False
    assert [j["RequestCpus"] for j in lane_jobs()] == [2]
    b.stop(timeout=90)
