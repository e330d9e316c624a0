"""The arrows of docs/architecture.md, read from the code's own imports (late ones included)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = "diagnostics"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / APP).rglob("*.py"):
        if "migrations" not in path.parts:
            found[_module_name(path)] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module this file imports, at the top or inside a function."""
    names: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            # `from diagnostics.workflows import fixes` imports the submodule fixes.
            names.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return names


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) for name, path in modules.items()}


def _app_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}


def test_the_app_has_no_import_circle(graph):
    edges = _app_edges(graph)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circle = " -> ".join([*path[path.index(module) :], module])
            pytest.fail(f"import circle: {circle}")
        if module in done:
            return
        for target in sorted(edges[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def _importers(graph: dict[str, set[str]], target: str) -> set[str]:
    return {
        m
        for m, imports in graph.items()
        if any(i == target or i.startswith(target + ".") for i in imports)
    }


def test_only_remote_imports_pywinrm(graph):
    assert _importers(graph, "winrm") == {"diagnostics.remote"}


def test_the_engine_knows_no_workflow_task_or_view(graph):
    engine = graph["diagnostics.jobs"]
    assert not {i for i in engine if i.startswith(("diagnostics.workflows", "diagnostics.views"))}
    assert "diagnostics.tasks" not in engine


def test_no_view_or_command_talks_to_a_machine(graph):
    talkers = {m for m in _importers(graph, "diagnostics.remote")}
    assert not {m for m in talkers if m.startswith(("diagnostics.views", "diagnostics.management"))}
    assert "diagnostics.connectivity" not in talkers


def test_pure_layers_import_neither_django_nor_the_models(graph):
    pure_layers = ("diagnostics.matching", "diagnostics.plans", "diagnostics.catalog")
    for pure in [m for m in graph if m.startswith(pure_layers)]:  # a package: every module
        impure = {i for i in graph[pure] if i.startswith(("django", "diagnostics.models"))}
        assert not impure, f"{pure} imports {impure}"


def test_workflows_are_reached_only_through_views_commands_tasks_and_each_other(graph):
    allowed = ("diagnostics.views", "diagnostics.management", "diagnostics.workflows")
    users = _importers(graph, "diagnostics.workflows") - {"diagnostics.tasks"}
    assert {m for m in users if not m.startswith(allowed)} == set()
