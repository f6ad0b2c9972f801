"""No import cycle inside ``appliance/``: imports go one way (options/ccache at the bottom, hub
on top). The graph is read from the source (AST), function-local imports included, so a cycle
hidden by importing inside a function is found too; ``if TYPE_CHECKING:`` imports do not count.

An edge A -> B means module A imports module B (``import B``, ``from B import x``) or names from
package B's ``__init__`` (``from B import name``); importing ``a.b.c`` is an edge to ``a.b.c`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import appliance

PACKAGE = Path(appliance.__file__).parent
ROOT = PACKAGE.parent


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The appliance modules ``name`` imports, each with the line of its first import."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in modules and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    add(sub, node.lineno)  # a submodule
                else:
                    add(base, node.lineno)  # a name from that module / package __init__
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected component with more than one module."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    out = []
    for comp in comps:
        start = min(comp)
        paths, seen = [[start]], {start}
        while paths:  # breadth first inside the component: the shortest way back to start
            path = paths.pop(0)
            nxt = sorted(w for w in graph[path[-1]] if w in comp)
            if start in nxt:
                out.append(path + [start])
                break
            for w in nxt:
                if w not in seen:
                    seen.add(w)
                    paths.append(path + [w])
    return out


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    files = module_files()
    steps = [f"{a} -> {b} ({files[a].relative_to(ROOT)}:{graph[a][b]})"
             for a, b in zip(cycle, cycle[1:])]
    return "\n  ".join(steps)


def test_no_import_cycle_inside_appliance():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles inside appliance/:\n  " + "\n\n  ".join(
        describe(c, graph) for c in found)


def test_the_checker_sees_function_local_imports_and_reports_the_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "appliance"
    (pkg / "hub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hub" / "__init__.py").write_text("")
    (pkg / "hub" / "form.py").write_text("def render():\n    from .spawner import x\n")
    (pkg / "hub" / "spawner.py").write_text("from . import form\nx = 1\n")
    (pkg / "hub" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .spawner import x\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", pkg)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "ROOT", tmp_path)
    graph = import_graph()
    assert graph["appliance.hub.form"] == {"appliance.hub.spawner": 2}
    assert graph["appliance.hub.typed"] == {}
    [cycle] = cycles(graph)
    assert cycle == ["appliance.hub.form", "appliance.hub.spawner", "appliance.hub.form"]
    assert describe(cycle, graph) == (
        "appliance.hub.form -> appliance.hub.spawner (appliance/hub/form.py:2)\n"
        "  appliance.hub.spawner -> appliance.hub.form (appliance/hub/spawner.py:1)")
