"""The suite's layering, read from the code's imports (every import, also those inside functions).

From the bottom: ``benchmarks.core`` (imports nothing else of the suite), ``datasets``, ``methods``, the evaluator
``benchmarks.evaluation``, ``benchmarks.training``, then ``benchmarks.reports`` and ``benchmarks.speed``, and
``benchmarks.commands`` on top. No import runs upwards, no two modules import each other (directly or round a
longer circle), and no module is over 400 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks.core.provenance import REPO_ROOT

LAYERS = (("benchmarks.core",), ("datasets",), ("methods",), ("benchmarks.evaluation",), ("benchmarks.training",),
          ("benchmarks.reports", "benchmarks.speed"), ("benchmarks.commands",), ("benchmarks.__main__",))
PACKAGES = ("benchmarks", "datasets", "methods")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int | None:
    """The layer index of a suite module (None: a package's own ``__init__`` above its sub-packages)."""
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def imports_of(path: Path) -> set[str]:
    """The suite modules ``path`` imports, anywhere in it (``from a.b import c`` names ``a.b.c`` if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES and name in MODULES}
    return found


GRAPH = {module: imports_of(path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == ["benchmarks"]  # the top package's docstring only


def test_no_import_runs_upwards():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, targets in GRAPH.items() for target in sorted(targets)
              if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module)]
    assert upward == []


def test_core_imports_nothing_else_of_the_suite():
    outside = {f"{m} -> {t}" for m, ts in GRAPH.items() if m.startswith("benchmarks.core") for t in ts
               if not t.startswith("benchmarks.core")}
    assert outside == set()


def test_no_circle_of_imports():
    """Depth-first search for a back edge; the circle found is named in the failure."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            assert visit(module) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module]}: {lines} lines (split it)"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rules bite: a core module importing the evaluator is an upward import."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from benchmarks.evaluation.metrics import recall_at_n\n")
    assert imports_of(module) == {"benchmarks.evaluation.metrics"}
    assert layer_of("benchmarks.evaluation.metrics") > layer_of("benchmarks.core.errors")
