"""The layout docs/architecture.md describes, checked on the source: import directions, purity, commands.

Read with `ast`, nothing imported: a rule broken here is a design regression even when every behaviour
test still passes (a base module importing its implementation, a decision reaching for the API, a command
defined outside its area's cli.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "okvqa_k8s"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, *, module_level_only: bool) -> set[str]:
    """okvqa_k8s modules `name` imports (`from pkg import mod` counts as mod); TYPE_CHECKING blocks never
    run, so they do not count."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("okvqa_k8s"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("okvqa_k8s"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else str(node.module))
        for child in ast.iter_child_nodes(node):
            if not (module_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)):
                visit(child)

    visit(tree)
    return found & set(MODULES)


def test_no_import_cycles() -> None:
    """Module-level imports form a DAG: no module needs another that needs it back."""
    graph = {name: _imports(name, module_level_only=True) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " → ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [name])


def test_storage_implementations_depend_only_on_base() -> None:
    """base ← local, s3 ← registry: no implementation imports another or the registry, even lazily."""
    storage = {name for name in MODULES if name.startswith("okvqa_k8s.storage.")}
    assert _imports("okvqa_k8s.storage.base", module_level_only=False) & storage == set()
    for impl in ("okvqa_k8s.storage.local", "okvqa_k8s.storage.s3"):
        assert _imports(impl, module_level_only=False) & storage <= {
            "okvqa_k8s.storage.base",
            "okvqa_k8s.storage.uri",
        }, impl
    knows_both = [
        name
        for name in storage
        if {"okvqa_k8s.storage.local", "okvqa_k8s.storage.s3"} <= _imports(name, module_level_only=False)
    ]
    assert knows_both == ["okvqa_k8s.storage.registry"]


PURE = ("decide", "pods", "render", "states", "names", "schema", "cluster")
IO = ("okvqa_k8s.kube.client", "okvqa_k8s.kube.operator", "okvqa_k8s.kube.driver", "okvqa_k8s.kube.observe")


@pytest.mark.parametrize("module", PURE)
def test_decisions_are_pure(module: str) -> None:
    """What decides imports no API client, backend, driver or storage I/O (it is tested table-driven)."""
    name = f"okvqa_k8s.kube.{module}"
    imported = _imports(name, module_level_only=False)
    assert not {m for m in imported if m in IO or m.startswith("okvqa_k8s.kube.backends")}, imported
    assert not {m for m in imported if m.startswith("okvqa_k8s.storage") and m != "okvqa_k8s.storage.uri"}
    source = MODULES[name].read_text(encoding="utf-8")
    for library in ("kubernetes", "kopf", "boto3", "subprocess", "socket", "urllib"):
        assert f"import {library}" not in source and f"from {library}" not in source, (module, library)


def test_commands_live_in_each_areas_cli_module() -> None:
    """Every click command or group is defined in a `cli.py`; the top-level one only assembles them."""
    outside = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any(".command(" in d or ".group(" in d for d in decorators) and path.name != "cli.py":
                    outside.append(f"{name}.{node.name}")
    assert outside == []
    top = ast.parse(MODULES["okvqa_k8s.cli"].read_text(encoding="utf-8"))
    defined = [n.name for n in top.body if isinstance(n, ast.FunctionDef) and n.decorator_list]
    assert defined == ["cli"], "okvqa_k8s/cli.py defines commands instead of assembling them"
