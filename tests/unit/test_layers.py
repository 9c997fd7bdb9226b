"""Imports point one way: surfaces (serve/, the chat model, the tool) -> graph -> nodes -> tools,
and the bundled local model sits in its own package that graph/ reaches only through the model
factory (graph/models.py).

Static: every module is parsed with `ast`, and every import counts, including those inside
functions and `importlib.import_module("...")` calls with a literal name, since a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fusiongraph"
CORE = ("graph", "nodes", "tools")

SERVE = f"{PACKAGE}.serve"
LOCAL_MODEL = f"{PACKAGE}.local_model"
# The surfaces that live in graph/: nodes and tools run inside them and must not reach back.
SURFACES = tuple(f"{PACKAGE}.graph.{name}" for name in ("chat_model", "tool", "builder", "graph"))
# The one graph module that may reach the local model: the model factory.
FACTORY = f"{PACKAGE}.graph.models"
# What the local model may import from the project: the model name the presets give it.
LOCAL_MODEL_ALLOWED = (LOCAL_MODEL, f"{PACKAGE}.graph.presets")


def module_name(path: Path) -> str:
    """`graph/models.py` -> `fusiongraph.graph.models` (packaging maps each folder so)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def imported_names(
    source: str, module: str, *, is_package: bool = False
) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, wherever the import statement is."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from fusiongraph import serve` imports a module too
                yield node.lineno, f"{target}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def violations(folders: tuple[str, ...], forbidden: tuple[str, ...], unless: str = "") -> list[str]:
    """Every import, in the modules under `folders`, of a module under one of `forbidden`
    (a module named `unless` may import them)."""
    found = []
    for path in modules(*folders):
        module = module_name(path)
        if module == unless:
            continue
        source = path.read_text(encoding="utf-8")
        for line, name in imported_names(source, module, is_package=path.stem == "__init__"):
            if any(within(name, prefix) for prefix in forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} ({module}) imports {name}")
    return sorted(set(found))


def test_the_core_never_imports_the_serving_surfaces() -> None:
    assert violations(CORE, (SERVE,)) == [], "graph/, nodes/ and tools/ must not import serve/"


def test_nodes_and_tools_never_import_the_surfaces_built_on_them() -> None:
    assert violations(("nodes", "tools"), SURFACES) == [], (
        "nodes/ and tools/ run inside the graph: they must not import the builder, the compiled "
        "graph, the chat model or the tool"
    )


def test_tools_import_neither_graph_nor_nodes() -> None:
    assert violations(("tools",), (f"{PACKAGE}.graph", f"{PACKAGE}.nodes")) == []


def test_only_the_model_factory_reaches_the_local_model() -> None:
    assert violations(CORE, (LOCAL_MODEL,), unless=FACTORY) == [], (
        "the local model is a model provider: only graph/models.py (the factory) may import it"
    )


def test_the_core_never_imports_the_evals() -> None:
    assert violations(CORE, (f"{PACKAGE}.evals",)) == [], (
        "evals/ measure the graph from outside: graph/, nodes/ and tools/ must not import them"
    )


def test_the_evals_never_import_the_cli_or_server() -> None:
    # `fusiongraph eval` (serve/cli.py) drives the eval engine, never the reverse.
    assert violations(("evals",), (SERVE,)) == []


def test_only_the_inspect_modules_import_inspect_ai() -> None:
    # inspect-ai comes with the optional `eval` extra: the rest of the package runs without it.
    found = [
        v
        for v in violations((*CORE, "serve", "evals", "local_model"), ("inspect_ai",))
        if not v.startswith("evals/inspect_")
    ]
    assert found == []


def test_the_local_model_imports_only_its_name_from_the_project() -> None:
    found = []
    for path in modules("local_model"):
        module = module_name(path)
        for line, name in imported_names(path.read_text(encoding="utf-8"), module):
            if within(name, PACKAGE) and not any(within(name, ok) for ok in LOCAL_MODEL_ALLOWED):
                found.append(f"{path.relative_to(ROOT)}:{line} ({module}) imports {name}")
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    from fusiongraph.serve.cli import app\n", "fusiongraph.serve.cli"),
        ("import fusiongraph.serve.server as s\n", "fusiongraph.serve.server"),
        ("from fusiongraph import serve\n", "fusiongraph.serve"),
        ("from ..serve import cli\n", "fusiongraph.serve"),
        ("importlib.import_module('fusiongraph.serve.cli')\n", "fusiongraph.serve.cli"),
    ],
)
def test_the_import_walk_sees_every_kind_of_import(source: str, expected: str) -> None:
    names = [name for _, name in imported_names(source, "fusiongraph.graph.example")]
    assert any(within(name, SERVE) for name in names)
    assert expected in names


def test_the_walk_covers_every_module() -> None:
    # A moved or renamed folder would silently make every check above pass.
    found = {module_name(path) for path in modules(*CORE, "local_model")}
    assert {FACTORY, f"{PACKAGE}.nodes.dispatch", f"{PACKAGE}.tools.web"} <= found
    assert f"{LOCAL_MODEL}.launcher" in found
