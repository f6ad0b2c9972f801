"""axe-core (npm, installed by scripts/host-setup.sh into build/npm) injected into a Playwright
page: the serious and critical accessibility violations of what the page shows."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "build" / "npm" / "node_modules" / "axe-core" / "axe.min.js"


def violations(page, impacts=("serious", "critical")) -> list[dict]:
    """Run axe on the page as it is now; the violations of those impacts (id, impact, help,
    the offending elements' selectors)."""
    assert AXE_JS.is_file(), f"{AXE_JS} missing: run `make deps` (scripts/host-setup.sh)"
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in impacts]
