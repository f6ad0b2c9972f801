"""image/lab-assets.py: which wheel members become store assets, the store's layout and its
precompressed copies; its name patterns are nginx's; its pins are the notebook environment's."""

from __future__ import annotations

import gzip
import importlib.util
import re
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lab_assets", ROOT / "image" / "lab-assets.py")
lab_assets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_assets)

D = "jupyterlab-4.6.6.data/data/share/jupyter"


@pytest.mark.parametrize("member, rel", [
    (f"{D}/lab/static/main.efd36b46f3b45eb8.js", "lab/main.efd36b46f3b45eb8.js"),
    (f"{D}/lab/static/1014.073326ef5d98db5e.js", "lab/1014.073326ef5d98db5e.js"),
    (f"{D}/lab/static/0031b1860ea4ad75.woff", "lab/0031b1860ea4ad75.woff"),
    (f"{D}/labextensions/@jupyter-widgets/jupyterlab-manager/static/remoteEntry.c8c9eed2cdefdeac.js",
     "extensions/@jupyter-widgets/jupyterlab-manager/static/remoteEntry.c8c9eed2cdefdeac.js"),
    (f"{D}/labextensions/jupyterlab_pygments/static/568.1e2faa2ba0bbe59c4780.js",
     "extensions/jupyterlab_pygments/static/568.1e2faa2ba0bbe59c4780.js"),
    # not content-hashed: the same name may mean other bytes in another version
    (f"{D}/lab/static/index.html", None), (f"{D}/lab/static/bootstrap.js", None),
    (f"{D}/lab/static/style.js", None), (f"{D}/lab/static/package.json", None),
    (f"{D}/lab/static/main.efd36b46.js", None),  # too short a hash
    (f"{D}/labextensions/x/static/third-party-licenses.json", None),
    (f"{D}/labextensions/x/package.json", None),
    # never outside the store, never anything but static/
    (f"{D}/labextensions/../static/1014.073326ef5d98db5e.js", None),
    (f"{D}/labextensions/@a/../static/1014.073326ef5d98db5e.js", None),
    (f"{D}/labextensions/x/schemas/1014.073326ef5d98db5e.js", None),
    (f"{D}/lab/static/sub/1014.073326ef5d98db5e.js", None),
    ("jupyterlab/static/1014.073326ef5d98db5e.js", None),
])
def test_which_members_are_assets(member, rel):
    assert lab_assets.target(member) == rel


def test_build_writes_the_layout_and_gzip_copies(tmp_path):
    wheel = tmp_path / "x.whl"
    js = b"console.log('x');" * 200
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{D}/lab/static/main.efd36b46f3b45eb8.js", js)
        z.writestr(f"{D}/lab/static/0031b1860ea4ad75.woff", b"wOFF" * 10)
        z.writestr(f"{D}/lab/static/index.html", b"<html>")
        z.writestr(f"{D}/labextensions/@s/e/static/remoteEntry.c8c9eed2cdefdeac.js", b"r")
    out = tmp_path / "store"
    assert lab_assets.build(out, [wheel]) == (3, len(js) + 40 + 1)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["extensions/@s/e/static/remoteEntry.c8c9eed2cdefdeac.js",
                     "extensions/@s/e/static/remoteEntry.c8c9eed2cdefdeac.js.gz",
                     "lab/0031b1860ea4ad75.woff",  # fonts are compressed already
                     "lab/main.efd36b46f3b45eb8.js", "lab/main.efd36b46f3b45eb8.js.gz"]
    gz = (out / "lab/main.efd36b46f3b45eb8.js.gz").read_bytes()
    assert gzip.decompress(gz) == js and len(gz) < len(js) / 10
    assert lab_assets.main([str(tmp_path / "empty")]) == 2


def test_nginx_matches_the_same_names():
    conf = (ROOT / "nginx" / "appliance.conf").read_text()
    assert conf.count(f"(?<jba_asset>{lab_assets.HASHED.pattern})") == 2
    assert f"(?<jba_ext>{lab_assets.EXT_NAME.pattern})" in conf


def test_pins_are_the_notebook_environments():
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if m:
                out[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
        return out
    shipped = pins(ROOT / "image" / "lab-assets.txt")
    nodes = pins(ROOT / "minisite" / "singleuser" / "constraints.txt")
    assert "jupyterlab" in shipped
    assert {k: nodes.get(k) for k in shipped} == shipped
