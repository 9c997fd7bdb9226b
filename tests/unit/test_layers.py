"""Imports point down, and only down: the surfaces (serve/, evals/, and graph/'s builder, chat
model, tool and runner) import nodes/, nodes/ import graph/'s core (config, state, specs, models,
...), and the core imports tools/ and local_model/, which import nothing of the project but
themselves; in graph/, only the model factory (graph/models.py, which starts the local model)
and the presets (graph/presets.py, which name its model) reach local_model/; and no module
imports another that imports it back, however indirectly.

Static: every module is parsed with `ast`, and every import counts, including those inside
functions and `importlib.import_module("...")` calls with a literal name, since a lazy import
is still a dependency. Only the cycle check leaves out two kinds of block: `if TYPE_CHECKING:`,
whose imports name types for annotations and never run, and `if __name__ == "__main__":`, which
runs only when the file is run as a script, as a module of its own (`__main__`).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fusiongraph"
FOLDERS = ("graph", "nodes", "tools", "local_model", "serve", "evals")

SERVE = f"{PACKAGE}.serve"
LOCAL_MODEL = f"{PACKAGE}.local_model"
# graph/'s modules that build or drive the compiled graph, or are surfaces themselves: they sit
# above the nodes. Every other graph/ module is the core the nodes are made of.
GRAPH_SURFACES = frozenset(
    f"{PACKAGE}.graph.{name}"
    for name in ("builder", "graph", "chat_model", "tool", "deliberation", "runner")
)
# graph/'s modules that may import the local model: the factory starts it, the presets name it.
LOCAL_MODEL_USERS = frozenset({f"{PACKAGE}.graph.models", f"{PACKAGE}.graph.presets"})

# The layers, top to bottom: a module imports its own layer or those below it.
SURFACES, NODES, CORE, LEAVES = 3, 2, 1, 0


def layer(module: str) -> int:
    if module in GRAPH_SURFACES or module == PACKAGE:  # the package: its public names
        return SURFACES
    top = module.removeprefix(f"{PACKAGE}.").split(".")[0]
    return {
        "serve": SURFACES,
        "evals": SURFACES,
        "nodes": NODES,
        "graph": CORE,
        "tools": LEAVES,
        "local_model": LEAVES,
    }[top]


def module_name(path: Path) -> str:
    """`graph/models.py` -> `fusiongraph.graph.models` (packaging maps each folder so; the
    `fusiongraph/` folder holds the package's own `__init__`)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] == PACKAGE:
        parts.pop(0)
    return ".".join([PACKAGE, *parts])


def _not_imported_at_run_time(tree: ast.AST) -> set[int]:
    """The ids of the nodes under `if TYPE_CHECKING:` or `if __name__ == "__main__":`."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
            "__name__ == '__main__'",
        ):
            ids.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return ids


def imported_names(
    source: str, module: str, *, is_package: bool = False, runtime_only: bool = False
) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, wherever the import statement is
    (`runtime_only`: not those under `if TYPE_CHECKING:` or `if __name__ == "__main__":`)."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    skipped = _not_imported_at_run_time(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def all_modules() -> dict[str, Path]:
    paths = [*modules(*FOLDERS), ROOT / PACKAGE / "__init__.py"]
    return {module_name(path): path for path in paths}


def project_imports(runtime_only: bool = False) -> Iterator[tuple[str, int, str, Path]]:
    """(module, line, imported module, path) for every import of a project module; a name
    imported from a module counts as that module."""
    known = all_modules()
    for module, path in known.items():
        source = path.read_text(encoding="utf-8")
        is_package = path.stem == "__init__"
        for line, name in imported_names(
            source, module, is_package=is_package, runtime_only=runtime_only
        ):
            if not within(name, PACKAGE):
                continue
            target = name
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != module:
                yield module, line, target, path


def violations(rule: Callable[[str, str], bool]) -> list[str]:
    """Every project import for which `rule(module, target)` is false."""
    return sorted(
        {
            f"{path.relative_to(ROOT)}:{line} ({module}) imports {target}"
            for module, line, target, path in project_imports()
            if not rule(module, target)
        }
    )


def test_every_import_points_down_the_layers() -> None:
    assert violations(lambda module, target: layer(target) <= layer(module)) == [], (
        "surfaces -> nodes -> graph's core -> tools and local_model: never up"
    )


def test_tools_and_the_local_model_import_nothing_of_the_project_but_themselves() -> None:
    def rule(module: str, target: str) -> bool:
        if layer(module) != LEAVES:
            return True
        return within(target, module.rsplit(".", 1)[0]) or within(module, target)

    assert violations(rule) == []


def test_only_the_factory_and_the_presets_reach_the_local_model() -> None:
    def rule(module: str, target: str) -> bool:
        if not within(target, LOCAL_MODEL) or layer(module) in (SURFACES, LEAVES):
            return True  # the CLI's `local` commands manage the server themselves
        return module in LOCAL_MODEL_USERS

    assert violations(rule) == [], (
        "the local model is a model provider: graph/models.py starts it, graph/presets.py names "
        "its model; nodes/ and the rest of graph/ never reach it"
    )


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges: dict[str, set[str]] = {}
    for module, _, target, _ in project_imports(runtime_only=True):
        edges.setdefault(module, set()).add(target)
    cycles = _cycles(edges)
    assert cycles == [], f"import cycles: {cycles}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_evals_never_import_the_cli_or_server() -> None:
    # `fusiongraph eval` (serve/cli.py) drives the eval engine, never the reverse.
    assert violations(lambda m, t: not (within(m, f"{PACKAGE}.evals") and within(t, SERVE))) == []


def test_only_the_inspect_modules_import_inspect_ai() -> None:
    # inspect-ai comes with the optional `eval` extra: the rest of the package runs without it.
    found = []
    for module, path in all_modules().items():
        if path.parent.name == "evals" and path.stem.startswith("inspect_"):
            continue
        source = path.read_text(encoding="utf-8")
        for line, name in imported_names(source, module, is_package=path.stem == "__init__"):
            if within(name, "inspect_ai"):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
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


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import() -> None:
    a = "def f():\n    from fusiongraph.graph.b import x\n"
    names = {name for _, name in imported_names(a, "fusiongraph.graph.a", runtime_only=True)}
    assert "fusiongraph.graph.b" in names
    typed = "if TYPE_CHECKING:\n    from fusiongraph.graph.b import X\n"
    assert not list(imported_names(typed, "fusiongraph.graph.a", runtime_only=True))
    script = "if __name__ == '__main__':\n    from fusiongraph.graph.b import main\n"
    assert not list(imported_names(script, "fusiongraph.graph.a", runtime_only=True))
    assert list(imported_names(script, "fusiongraph.graph.a"))  # the layers still see it
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_walk_covers_every_module() -> None:
    # A moved or renamed folder would silently make every check above pass.
    found = set(all_modules())
    assert {
        f"{PACKAGE}.graph.models",
        f"{PACKAGE}.graph.config",
        f"{PACKAGE}.nodes.dispatch",
        f"{PACKAGE}.tools.web",
        f"{LOCAL_MODEL}.launcher",
        f"{SERVE}.cli",
        f"{PACKAGE}.evals.runner",
        PACKAGE,
    } <= found
    assert {layer(module) for module in found} == {SURFACES, NODES, CORE, LEAVES}
    assert any(True for _ in project_imports())
