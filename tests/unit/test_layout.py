"""The import structure: no cycle, ``shared`` below ``services``, each service on ``shared`` alone.

Imports are read from the source (every ``import`` and ``from ... import``, including those inside
functions and under ``TYPE_CHECKING``), so a cycle that only type hints close still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SERVICES = ("upload", "chunked_upload", "transcoder", "origin", "edge", "redirector", "balancer")
TOOLS = ("cli", "runtime", "configs")
# shared's groups, lowest first: a group may import only the groups before it (and itself).
SHARED_LAYERS = ("core", "storage", "db", "accounts", "mq", "media", "runtime", "http", "videos")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, resolved to the longest existing module name."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("shared", "services")}


def _graph() -> dict[str, set[str]]:
    files = [p for top in ("shared", "services") for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in files if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


GRAPH = _graph()


def _group(module: str) -> tuple[str, str | None]:
    parts = module.split(".")
    return parts[0], parts[1] if len(parts) > 1 else None


def test_the_graph_covers_the_tree() -> None:
    assert "shared.core.errors" in GRAPH
    assert "services.edge.app" in GRAPH
    assert any(GRAPH.values())


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            # A package imports its own modules to re-export them; that is not a cycle.
            if node.startswith(nxt + ".") or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_shared_never_imports_services() -> None:
    wrong = {
        (m, dep)
        for m, deps in GRAPH.items()
        if m.startswith("shared")
        for dep in deps
        if dep.startswith("services")
    }
    assert not wrong


def test_each_service_imports_only_shared_and_itself() -> None:
    wrong = set()
    for module, deps in GRAPH.items():
        top, group = _group(module)
        if top != "services" or group not in SERVICES:
            continue
        for dep in deps:
            dep_top, dep_group = _group(dep)
            if dep_top == "services" and dep_group != group:
                wrong.add((module, dep))
    assert not wrong


def test_services_holds_the_services_and_the_tool_folders_only() -> None:
    folders = {p.name for p in (ROOT / "services").iterdir() if p.is_dir() and p.name[0] != "_"}
    loose = {p.name for p in (ROOT / "services").glob("*.py") if p.name != "__init__.py"}
    assert folders == set(SERVICES) | set(TOOLS)
    assert not loose


def test_shared_imports_run_downward() -> None:
    folders = {p.name for p in (ROOT / "shared").iterdir() if p.is_dir() and p.name[0] != "_"}
    loose = {p.name for p in (ROOT / "shared").glob("*.py") if p.name != "__init__.py"}
    assert folders == set(SHARED_LAYERS)
    assert not loose
    rank = {name: i for i, name in enumerate(SHARED_LAYERS)}
    upward = set()
    for module, deps in GRAPH.items():
        top, group = _group(module)
        if top != "shared" or group is None:
            continue
        for dep in deps:
            _, dep_group = _group(dep)
            if dep_group is not None and rank[dep_group] > rank[group]:
                upward.add((module, dep))
    assert not upward


DOC = ROOT / "docs" / "ARCHITECTURE.md"
PICTURE_START = "<!-- layout picture: start -->"
PICTURE_END = "<!-- layout picture: end -->"


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return "/".join(parts[:2]) if len(parts) > 2 else None


def folder_edges() -> set[tuple[str, str]]:
    """Imports between folders (``services/edge`` -> ``shared/http``), from the code."""
    edges = set()
    for module, deps in GRAPH.items():
        src = _folder(module)
        for dep in deps:
            dst = _folder(dep)
            if src and dst and src != dst:
                edges.add((src, dst))
    return edges


def picture() -> str:
    """The layout as a Mermaid diagram: folders as boxes, imports as arrows."""

    def node(folder: str) -> str:
        return folder.replace("/", "_")

    lines = ["```mermaid", "flowchart LR"]
    lines.append('  subgraph services["services/ (deployables and their tools)"]')
    for name in (*SERVICES, *TOOLS):
        lines.append(f'    {node("services/" + name)}["{name}/"]')
    lines.append("  end")
    lines.append('  subgraph shared["shared/ (the library, lowest group last)"]')
    for name in reversed(SHARED_LAYERS):
        lines.append(f'    {node("shared/" + name)}["{name}/"]')
    lines.append("  end")
    for src, dst in sorted(folder_edges()):
        lines.append(f"  {node(src)} --> {node(dst)}")
    lines.append("```")
    return "\n".join(lines)


def test_the_architecture_picture_matches_the_code() -> None:
    text = DOC.read_text()
    drawn = text.split(PICTURE_START, 1)[1].split(PICTURE_END, 1)[0].strip()
    assert drawn == picture(), "regenerate it: python -m tests.unit.test_layout"


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(PICTURE_START, 1)
    tail = rest.split(PICTURE_END, 1)[1]
    DOC.write_text(f"{head}{PICTURE_START}\n{picture()}\n{PICTURE_END}{tail}")
    print(f"updated the picture in {DOC}")
