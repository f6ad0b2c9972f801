"""Issue 16: JupyterLab's content-hashed static assets come from the appliance's own store
(image/lab-assets.py, nginx/appliance.conf), with a year in every cache; nothing else does.

* the store holds every content-hashed asset of the notebook environment's JupyterLab and lab
  extensions, byte for byte (a drift between image/lab-assets.txt and the nodes would show here);
* an asset JupyterLab's page asks for is answered from the store: gzip, the JavaScript type, a
  one-year immutable lifetime, the same bytes as the user's own server sends;
* a user's server cannot put its bytes under a store name, for others or for itself: mallory
  starts her server with her own JupyterLab directory (LabApp.app_dir in her own Jupyter config,
  a directory in her home where her copy of main.<hash>.js is changed), and every user, mallory included, still gets the store's;
* what is not a store asset is the user's own server's answer, never kept by nginx: a hashed name
  the store lacks reaches mallory's server (her changed copy, no store header, no public
  lifetime); alice's files and API answers carry no public lifetime, and another user asking for
  the same URLs, before or after alice, never gets alice's bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import uuid

import pytest

from tests.conftest import site_exec

pytestmark = pytest.mark.minisite

NODE_LAB = "/opt/jupyter/share/jupyter"
STORE = "/opt/appliance/lab-assets/image"
HASHED = r"(?:[A-Za-z0-9_-]+\.)?[0-9a-f]{16,}\.[a-z0-9]+"
LIST = ("cd {root} && find lab/static labextensions/*/static labextensions/@*/*/static "
        "-maxdepth 1 -type f 2>/dev/null | sort")


def sums(service: str, script: str) -> dict[str, str]:
    out = site_exec(service, "bash", "-c", script).stdout
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines() if line}


def test_the_store_holds_the_notebook_environments_hashed_assets(site):
    node = sums("condor-exec1", f"{LIST.format(root=NODE_LAB)} | xargs sha256sum")
    node = {re.sub(r"^lab/static/", "lab/", re.sub(r"^labextensions/", "extensions/", k)): v
            for k, v in node.items() if re.fullmatch(HASHED, k.rsplit("/", 1)[1])}
    store = sums("appliance", f"cd {STORE} && find . -type f ! -name '*.gz' | sed 's#^./##' | "
                 "sort | xargs sha256sum")
    assert len(node) > 250, f"the node's JupyterLab has only {len(node)} hashed assets"
    missing = sorted(set(node) - set(store))
    differ = sorted(k for k in node if k in store and node[k] != store[k])
    assert not missing and not differ, (missing[:10], differ[:10])
    assert set(store) == set(node), sorted(set(store) - set(node))[:10]  # nothing else in it
    # the precompressed copies (gzip_static) are the same bytes
    out = site_exec("appliance", "bash", "-c", f"cd {STORE} && n=0 && for f in $(find . -name "
                    "'*.gz'); do n=$((n+1)); gunzip -c $f | cmp -s - ${f%.gz} || echo BAD $f; "
                    "done; echo $n").stdout.split()
    assert int(out[-1]) > 200 and "BAD" not in out, out[:10]


def lab_assets(page: str, user: str) -> list[str]:
    return re.findall(rf'(?:src|href)="(/user/{user}/static/lab/{HASHED})(?:\?[^"]*)?"', page)


def get_raw(c, path: str):
    """GET on the user's own origin with the user's token; the answer and its body as sent
    (still compressed)."""
    import requests

    with requests.Session() as s:
        s.trust_env = False
        r = s.get(c.user_url(path), headers={"Authorization": f"token {c.token}",
                                             "Accept-Encoding": "gzip"},
                  verify=c.s.verify, timeout=30, stream=True)
        return r, r.raw.read()


def test_assets_come_from_the_store_and_user_answers_never_do(client_for):
    alice, bob, mallory = client_for("alice"), client_for("bob"), client_for("mallory")
    # mallory's own JupyterLab directory: a copy of the node's, with main.<hash>.js changed
    tag = uuid.uuid4().hex
    labdir = f"/home/mallory/.lab-assets-{tag[:8]}"
    # (on a node: the appliance has no notebook environment; the homes are the same everywhere)
    site_exec("condor-exec1", "runuser", "-u", "mallory", "--", "bash", "-c",
              f"mkdir -p {labdir} && cp -r {NODE_LAB}/lab/static {labdir}/static && "
              f"cp -r {NODE_LAB}/lab/settings {labdir}/settings 2>/dev/null; "
              f"for f in {labdir}/static/main.*.js; do echo '/*POISON-{tag}*/' >> $f; done; "
              f"printf '/*POISON-{tag}*/' > {labdir}/static/0123456789abcdef0123.js && "
              # her server's JupyterLab uses it (JUPYTERLAB_DIR is reserved on the form;
              # her own Jupyter config is not: it is in her home)
              f"mkdir -p ~/.jupyter && echo '{{\"LabApp\": {{\"app_dir\": \"{labdir}\"}}}}' "
              "> ~/.jupyter/jupyter_server_config.json")
    started = []
    try:
        for c, opts in ((alice, {"backend": "htcondor"}), (bob, {"backend": "slurm"}),
                        (mallory, {"backend": "htcondor"})):
            r = c.spawn(opts)
            assert r.status_code in (201, 202), (c.user, r.text)
            started.append(c)
        for c in started:
            c.wait_ready(timeout=180)

        page = alice.user_api("GET", "/lab")
        assert page.status_code == 200
        assets = lab_assets(page.text, "alice")
        main = [a for a in assets if "/main." in a]
        assert main, page.text[:1500]
        name = main[0].rsplit("/", 1)[1]
        node_bytes = site_exec("condor-exec1", "cat", f"{NODE_LAB}/lab/static/{name}").stdout
        # mallory's server really serves her changed copy (asked past nginx, through CHP)
        code = ("import sys, urllib.request as u; r = u.urlopen(u.Request(sys.argv[1], headers="
                "{'Authorization': 'token ' + sys.stdin.read().strip(), 'Host': sys.argv[2]})); "
                "sys.stdout.write(r.read().decode())")
        own = site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", code,
                        f"http://127.0.0.1:8000/user/mallory/static/lab/{name}",
                        mallory.user_url().split("/")[2], input=mallory.token).stdout
        assert f"POISON-{tag}" in own, "mallory's server does not serve her own copy"

        for c in (alice, bob, mallory):
            r, raw = get_raw(c, f"/static/lab/{name}")
            assert r.status_code == 200, (c.user, r.status_code)
            assert r.headers.get("X-Appliance-Asset") == "store", (c.user, r.headers)
            assert r.headers.get("Content-Encoding") == "gzip"
            assert r.headers.get("Content-Type", "").startswith(
                ("application/javascript", "text/javascript")), r.headers
            assert r.headers.get("Cache-Control") == "public, max-age=31536000, immutable"
            assert gzip.decompress(raw).decode() == node_bytes, c.user  # not POISON
        # without a session at all: JupyterLab's public code, nothing of anyone's
        import requests
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(alice.user_url(f"/static/lab/{name}"), verify=alice.s.verify, timeout=30)
        assert r.status_code == 200 and r.text == node_bytes

        # a hashed name the store lacks: mallory's own server answers, nothing is kept
        for _ in range(2):
            r = mallory.user_api("GET", "/static/lab/0123456789abcdef0123.js")
            assert r.status_code == 200 and f"POISON-{tag}" in r.text, r.status_code
            assert "X-Appliance-Asset" not in r.headers  # (its Cache-Control is Jupyter's own)
        r = alice.user_api("GET", "/static/lab/0123456789abcdef0123.js")
        assert r.status_code == 404 and f"POISON-{tag}" not in r.text, r.status_code

        # alice's files and API answers: hers, never kept, never anyone else's
        secret = f"alice-only-{uuid.uuid4().hex}"
        fname = f"asset-{uuid.uuid4().hex[:8]}.0123456789abcdef.js"
        r = alice.user_api("PUT", f"/api/contents/{fname}",
                           json={"type": "file", "format": "text", "content": secret})
        assert r.status_code in (200, 201), r.text
        try:
            for path in (f"/files/{fname}", f"/api/contents/{fname}", "/api/contents"):
                for who in (bob, alice, bob):  # the other user before and after alice
                    r = who.user_api("GET", path, owner="alice", allow_redirects=False)
                    assert "X-Appliance-Asset" not in r.headers, (who.user, path)
                    assert "public" not in r.headers.get("Cache-Control", ""), (path, r.headers)
                    if who is alice:
                        assert r.status_code == 200 and (path == "/api/contents"
                                                         or secret in r.text), (path, r.status_code)
                    else:
                        assert r.status_code in (302, 403, 404) and secret not in r.text, (
                            who.user, path, r.status_code)
        finally:
            alice.user_api("DELETE", f"/api/contents/{fname}")
    finally:
        for c in started:
            c.stop()
        site_exec("condor-exec1", "rm", "-rf", labdir, "/home/mallory/.jupyter", check=False)
