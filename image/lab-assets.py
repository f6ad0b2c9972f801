#!/usr/bin/env python3
"""Build the appliance's store of JupyterLab's content-hashed static assets (issue 16).

Every user's server ships the same JupyterLab, and a JupyterLab page loads ~2 MB (compressed) of
JavaScript and fonts whose file names carry a hash of their content (webpack's
``[name].[contenthash].js``). nginx serves those files from this store, with a one-year
``immutable`` lifetime and precompressed, instead of fetching them through CHP from the user's
node. Only content-hashed names are kept: such a name can only ever mean these bytes, whichever
user asks and whatever that user's server would send (a server runs the user's code, so nothing
it answers is ever cached for anyone else; docs/security.md, "Static assets").

Usage: lab-assets.py OUT WHEEL... — reads the wheels (zipfile, no install) and writes
  OUT/lab/<file>                  from <pkg>.data/data/share/jupyter/lab/static/<file>
  OUT/extensions/<ext>/static/<f> from <pkg>.data/data/share/jupyter/labextensions/<ext>/static/<f>
plus ``<file>.gz`` (gzip -9, no timestamp) next to every compressible one, for gzip_static.
A site with another JupyterLab puts the same layout under /etc/appliance/lab-assets (docs/admin.md).
"""

from __future__ import annotations

import gzip
import re
import sys
import zipfile
from pathlib import Path

# A content-hashed file name: an optional chunk name, 16+ hex digits, an extension. The same
# patterns are in nginx/appliance.conf's asset locations (tests/unit/test_lab_assets.py checks both).
HASHED = re.compile(r"(?:[A-Za-z0-9_-]+\.)?[0-9a-f]{16,}\.[a-z0-9]+")
# An extension's (npm) name, optionally scoped; never "." or ".." (nothing outside OUT).
EXT_NAME = re.compile(r"(?:@[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")
COMPRESS = {".js", ".css", ".svg", ".json", ".ttf", ".eot", ".wasm", ".map", ".txt"}
LAB = re.compile(r"[^/]+\.data/data/share/jupyter/lab/static/(?P<f>[^/]+)")
EXT = re.compile(r"[^/]+\.data/data/share/jupyter/labextensions/(?P<ext>.+)/static/(?P<f>[^/]+)")


def target(member: str) -> str | None:
    """The store path of a wheel member, or None when it is not a content-hashed asset."""
    m = LAB.fullmatch(member)
    if m and HASHED.fullmatch(m["f"]):
        return f"lab/{m['f']}"
    m = EXT.fullmatch(member)
    if m and EXT_NAME.fullmatch(m["ext"]) and HASHED.fullmatch(m["f"]):
        return f"extensions/{m['ext']}/static/{m['f']}"
    return None


def build(out: Path, wheels: list[Path]) -> tuple[int, int]:
    files = size = 0
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                rel = target(member)
                if rel is None:
                    continue
                data = z.read(member)
                path = out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                if path.suffix in COMPRESS:
                    path.with_name(path.name + ".gz").write_bytes(
                        gzip.compress(data, compresslevel=9, mtime=0))
                files += 1
                size += len(data)
    return files, size


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: lab-assets.py OUT WHEEL...", file=sys.stderr)
        return 2
    files, size = build(Path(argv[0]), [Path(w) for w in argv[1:]])
    if not files:
        print("lab-assets: no content-hashed asset in the wheels", file=sys.stderr)
        return 1
    print(f"lab-assets: {files} files, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
