"""The tree's shape, kept honest: no import cycle (imports inside functions count), the
service never imports the benchmarks, no service module past its size, and the README's
layout section names every module there is and none that is not."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Each package and the folder it lives in (the client is its own distribution).
PACKAGES = {"app": "app", "rowstream": "client/rowstream", "bench": "bench"}
#: Lines a service module may have; the type map may reach the second figure.
MAX_LINES, MAX_LINES_TYPE_MAP = 400, 500


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = (package, *path.relative_to(ROOT / folder).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _typing_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``: names for the type checker, not
    imports that run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules that ``path`` imports when it runs, anywhere in it (inside
    functions too)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = _typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(name for name in names if name in modules)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ importing its own modules is no cycle of theirs
    return {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], dict.fromkeys(graph, 0)
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state[dep] == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif state[dep] == 0:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node)
    return cycles


def test_no_import_cycle_even_inside_functions() -> None:
    assert _cycles(_graph()) == []


def test_the_service_imports_neither_the_benchmarks_nor_the_tests() -> None:
    graph = _graph()
    offending = {
        name: sorted(d for d in deps if d.startswith(("bench", "tests")))
        for name, deps in graph.items()
        if name.startswith(("app", "rowstream"))
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_no_service_module_is_past_its_size() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in _modules().items()
        if name.startswith(("app", "rowstream"))
    }
    limit = {"app.pgtypes": MAX_LINES_TYPE_MAP}
    assert {n: s for n, s in sizes.items() if s > limit.get(n, MAX_LINES)} == {}


def test_the_readme_layout_names_every_module_and_only_those() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("\nLayout:", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+\.py)`", section))
    files = {
        path.name
        for name, path in _modules().items()
        if path.name != "__init__.py" and name.count(".") == 1
    }
    assert sorted(files - named) == [], "modules the README's layout does not name"
    assert sorted(named - files) == [], "names in the README's layout that are no module"
