"""The dependency order, checked on the source files: no import cycle among the modules of any package (every
import counts: module level, ``TYPE_CHECKING`` blocks and function bodies), the coordinator's services never reach up
into the job runner, the queue, a job handler or the composition root, and no module grows much over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# what a service module may never import: the layers built on top of the services
ABOVE_SERVICES = ("backend.runtime", "backend.jobs", "backend.web", "backend.worker", "backend.huey_app", "backend.cli")
SERVICES_MAY_USE = {"backend.jobs.context"}  # what a job handler sees: a few job steps live in services


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a.b import c`` counts ``a.b`` and, when it is a module,
    ``a.b.c``; relative imports resolved)."""
    files = [p for p in (root / package).rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(root, p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_coordinator_has_no_import_cycle():
    found = cycles(import_graph(REPO, "backend"))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


@pytest.mark.parametrize("package", ["vl4pose", "ml_backend", "stack", "common"])
def test_the_other_packages_have_no_import_cycle(package):
    """Every import counts here too (module level, ``TYPE_CHECKING``, function bodies); across packages the layer
    rules of ``test_import_rules.py`` already forbid every import that could close a circle."""
    found = cycles(import_graph(REPO, package))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


MAX_LINES = 310  # "modules around 300 lines" (docs/ARCHITECTURE.md); a little slack, no exceptions


@pytest.mark.parametrize("folder", ["vl4pose", "ml_backend", "backend", "stack", "common", "scripts"])
def test_no_module_is_much_over_300_lines(folder):
    too_long = {str(p.relative_to(REPO)): n for p in sorted((REPO / folder).rglob("*.py"))
                if "migrations" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"


def test_services_never_import_the_layers_above_them():
    graph = import_graph(REPO, "backend")
    offences = [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        if module.startswith("backend.services")
        for target in sorted(targets)
        if target.startswith(ABOVE_SERVICES) and target not in SERVICES_MAY_USE
    ]
    assert not offences, "\n".join(offences)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (package / "d.py").write_text("import pkg.c\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [{"pkg.a", "pkg.sub.b", "pkg.c"}]
