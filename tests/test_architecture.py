"""The package's shape: stages without import cycles, small modules, a torch-free front end.
(The extension points, each one place, are tests/test_extension_points.py.)"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mi_dsl"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    """mi_dsl modules `path` imports (at any depth: lazy imports count, a cycle is a cycle)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mi_dsl"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import cache`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mi_dsl"))
    return found


def _graph() -> dict:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {t for t in _imports(path) if t in modules and t != name}
    return graph


def _cycle(graph: dict):
    """One import cycle among modules, or None.

    Two edges are not cycles: a package importing its own submodules (its `__init__`
    re-exports), and a submodule importing its package (the analysis registry imports
    `mi_dsl.analyses` inside `load_all()` to discover the analyses beside it)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodule
            if node.startswith(nxt + ".") and nxt in graph:
                continue  # a submodule importing its package's __init__ re-exports
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# The stages, bottom to top: a package (or top-level module) imports only its own layer and those
# below it, at any depth (a function-level import counts: hiding an upward arrow in a function does
# not make it point down). Same-layer entries may import each other only as listed in one layer.
LAYERS = [
    ("_version", "errors", "suggest", "limits"),
    ("expr",),
    ("metrics", "metric_expr"),
    ("models",),          # model sources, shapes, loaders (torch only inside the loaders)
    ("core",),            # plan, typed params, registry, result envelope, run log: torch-free
    ("spec",),
    ("dataset",),
    ("compile", "causal"),  # causal: the causal_model block's variables and counterfactuals (prepare checks it)
    ("runtime",),         # the kit analyses use (executor, unembed, context, pipeline) and the runner
    ("analyses",),
    ("report",),          # reads the run log
    ("results",),
    ("running",),         # prepare + execute + report: the front layer's one entry
    ("sweep",),
    ("api",),
    ("cli",),
    ("mi_dsl",),          # the package root re-exports the API
]


def _layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "mi_dsl"
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py's LAYERS: place it")


def _upward(graph: dict) -> list:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if _layer_of(b) > _layer_of(a))


def _function_level_imports() -> int:
    """In-package imports inside functions (deferred: torch, plotly, or a heavy stage at call time)."""
    count = 0
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("mi_dsl")):
                        count += 1
    return count


def test_stages_only_look_down():
    graph = _graph()
    upward = _upward(graph)
    print(f"{_function_level_imports()} function-level in-package imports (each checked as any import)")
    assert not upward, "imports up the stages (tests/test_architecture.py LAYERS):\n" + "\n".join(upward)


def test_the_layer_check_finds_a_planted_upward_import():
    graph = {"mi_dsl.runtime.run": {"mi_dsl.report.html"}, "mi_dsl.report.html": {"mi_dsl.core.log"}}
    assert _upward(graph) == ["mi_dsl.runtime.run -> mi_dsl.report.html"]


def test_no_import_cycle_inside_the_package():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_planted_cycle():
    graph = {"mi_dsl.a": {"mi_dsl.b"}, "mi_dsl.b": {"mi_dsl.c"}, "mi_dsl.c": {"mi_dsl.a"}}
    assert _cycle(graph) == ["mi_dsl.a", "mi_dsl.b", "mi_dsl.c", "mi_dsl.a"]


@pytest.mark.parametrize("folder", ["mi_dsl", "benchmarks"])
def test_no_module_is_over_the_size_limit(folder):
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by job): {big}"


def test_front_end_stages_never_import_torch():
    """Loading, validating and compiling a spec (the stages CI runs) stay torch-free."""
    code = ("import sys, mi_dsl.spec, mi_dsl.compile, mi_dsl.dataset, mi_dsl.metrics, mi_dsl.cli.main, "
            "mi_dsl.core.registry as r; r.load_all(); "
            "print(sorted(m for m in ('torch', 'transformers', 'transformer_lens', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_model_source_declares_a_loader():
    """Each source in models/sources.py loads its own weights (the base class has no loader)."""
    from mi_dsl.models.sources import SOURCES, ModelSource

    assert set(SOURCES) == {"embedded", "gguf", "local", "pretrained", "random"}
    for source in SOURCES.values():
        assert type(source).load is not ModelSource.load, source.name
