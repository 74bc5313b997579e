"""The package's import direction, read from the source: one way, no cycles.

``_core`` ← ``brokers``, ``client`` ← ``_runner`` ← ``engines`` (the worker side) ←
``executors``, ``web`` ← ``_hub`` ← ``demo`` ← ``cli``; ``client`` uses ``_core`` only. Every
import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from _support import parse_source

PACKAGE = Path(__file__).resolve().parent.parent / "sse_tasks"

LAYERS = {
    "sse_tasks._core": 0,
    "sse_tasks.brokers": 1,
    "sse_tasks.client": 1,  # beside the brokers: the core only
    "sse_tasks._runner": 2,
    "sse_tasks.engines": 3,  # what an engine adapter is built from (public)
    "sse_tasks.executors": 4,
    "sse_tasks.web": 4,
    "sse_tasks._hub": 5,
    "sse_tasks.demo": 6,
    "sse_tasks.cli": 7,
    "sse_tasks.__main__": 8,
    "sse_tasks": 9,  # the package's __init__: the public API
    "sse_tasks.celery": 9,  # public, beside it: needs the celery extra
    "sse_tasks.rq": 9,  # public, beside it: needs the rq extra
    "sse_tasks.huey": 9,  # public, beside it: needs the huey extra
    "sse_tasks.dramatiq": 9,  # public, beside it: needs the dramatiq extra
    "sse_tasks.arq": 9,  # public, beside it: needs the arq extra
    "sse_tasks.django": 9,  # public, beside it: needs the django extra
    "sse_tasks.taskiq": 9,  # public, beside it: needs the taskiq extra
}
CLIENT_MAY_USE = ("sse_tasks._core",)
CORE_MUST_NOT_USE = ("starlette.routing", "starlette.applications", "sse_starlette", "uvicorn")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache  # every parametrized test reads the same graph: parse each file once
def _imports(path: Path) -> frozenset[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(parse_source(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x`` imports the submodule x.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(found)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module ``name`` denotes (a submodule, or the package that defines it)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    graph: dict[str, frozenset[str]] = {}
    for name, path in MODULES.items():
        targets = {_resolve(t) for t in _imports(path) if t == "sse_tasks" or t.startswith("sse_tasks.")}
        graph[name] = frozenset(t for t in targets if t is not None and t != name)
    return graph


def _layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _group(module: str) -> str:
    return max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    for target in _graph()[module]:
        same_group = _group(target) == _group(module)
        assert same_group or _layer(target) < _layer(module), f"{module} imports {target}: up or beside"


def test_the_client_uses_the_core_only() -> None:
    for target in _graph()["sse_tasks.client"]:
        assert target.startswith(CLIENT_MAY_USE), f"sse_tasks.client imports {target}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("sse_tasks._core")))
def test_the_core_knows_no_web_framework(module: str) -> None:
    for target in _imports(MODULES[module]):
        assert not target.startswith(CORE_MUST_NOT_USE), f"{module} imports {target}"


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


MAX_FUNCTION_LINES = 90


def _function_lengths(source: str) -> dict[str, int]:
    """``qualified name -> lines`` of every function and method in ``source`` (nested ones too),
    from its ``def`` to its last line (decorators, such as a command's options, do not count)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = (child.end_lineno or child.lineno) - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(parse_source(source), "")
    return lengths


def test_no_function_is_over_about_90_lines() -> None:
    """Modules are split by concept, not by a line count; a function says one thing."""
    long = {
        f"{module}.{name}": lines
        for module, path in MODULES.items()
        for name, lines in _function_lengths(path.read_text()).items()
        if lines > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_the_function_length_check_sees_nested_functions_and_methods() -> None:
    source = "class A:\n    @staticmethod\n    def f():\n        def g():\n" + "            x = 1\n" * 95
    assert _function_lengths(source) == {"A.f": 97, "A.f.g": 96}


def test_every_module_has_a_layer() -> None:
    loose = [m for m in MODULES if _group(m) == "sse_tasks" and m not in ("sse_tasks", "sse_tasks.client")]
    assert loose == []
