"""The import graph of the core: it never imports a plugin (`eimsdk_*`), and its module-level imports form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "eimsdk"


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names an import statement names (relative imports resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    return []


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    """Imports that run when the module is imported: top level, and inside top-level if/try (not TYPE_CHECKING)."""
    out: list[str] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        else:
            out += _imported(node, module, is_package)
    return out


def _core_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def test_the_core_never_imports_a_plugin():
    offenders = []
    for module, path in _core_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node, module, path.name == "__init__.py"):
                if name.split(".")[0].startswith("eimsdk_"):
                    offenders.append(f"{path.relative_to(CORE.parent)}:{node.lineno} imports {name}")
    assert len(_core_modules()) > 30  # the walk saw the whole core
    assert not offenders, "the core imports plugins:\n" + "\n".join(offenders)


def test_module_level_imports_form_no_cycle():
    modules = _core_modules()
    graph = {}
    for module, path in modules.items():
        names = _module_level_imports(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py")
        graph[module] = sorted({n for n in names if n in modules and n != module})
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert sum(len(deps) for deps in graph.values()) > 30  # the graph has the core's real edges
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_imports_in_functions_and_skips_type_checking():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
                     "def f():\n    from eimsdk_x import y\ntry:\n    import b\nexcept ImportError:\n    import c\n")
    assert sorted(_module_level_imports(tree, "eimsdk.m", False)) == ["b", "c", "typing", "typing.TYPE_CHECKING"]
    assert "eimsdk_x.y" in [n for node in ast.walk(tree) for n in _imported(node, "eimsdk.m", False)]
    rel = ast.parse("from .records import Direction\nfrom .. import hookspecs\n")
    assert [n for node in rel.body for n in _imported(node, "eimsdk.bench.runner", False)] == [
        "eimsdk.bench.records", "eimsdk.bench.records.Direction", "eimsdk", "eimsdk.hookspecs"]


def test_the_toy_plugin_does_not_import_the_test_kit():
    toy = CORE.parent / "plugins" / "eimsdk_toy"
    offenders = [f"{path.name}:{node.lineno}" for path in sorted(toy.glob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text(), str(path)))
                 for name in _imported(node, f"eimsdk_toy.{path.stem}", path.name == "__init__.py")
                 if name.startswith("eimsdk.testing")]
    assert len(list(toy.glob("*.py"))) >= 7 and not offenders, offenders
