"""No private API of a dependency outside the compatibility modules, and their fallbacks work.

A private module (`openai._types`) or name (`from x import _y`) of a dependency can move in any
release. The product code imports none, except in `graph/compat_*.py`: each of those keeps a
public-API fallback that FUSIONGRAPH_PUBLIC_APIS_ONLY=1 forces, and the core of the unit suite
runs once more with it set.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI
from openai.resources.chat.completions import AsyncCompletions

from fusiongraph.graph import compat_openai
from fusiongraph.graph.models import DEFAULT_CALL_TIMEOUT_S, default_model_factory
from fusiongraph.graph.specs import ModelSpec
from tests.support.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("fusiongraph", "graph", "nodes", "tools", "serve", "evals", "local_model")
OWN = "fusiongraph"
# The core of the unit suite, run again with every fallback forced (well under a minute).
CORE_TESTS = (
    "tests/unit/test_graph.py",
    "tests/unit/test_chat_model.py",
    "tests/unit/test_server.py",
    "tests/unit/test_server_stream.py",
)


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _is_compat(path: Path) -> bool:
    return path.name.startswith("compat_")


def product_modules() -> Iterator[Path]:
    for folder in PRODUCT:
        yield from sorted((ROOT / folder).rglob("*.py"))


def private_imports(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Every import in `path` of a dependency's private module or name, lazy ones included
    (inside functions, `importlib.import_module("...")` with a literal name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        found: list[tuple[str, str]] = []
        if isinstance(node, ast.Import):
            found = [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found = [(node.module, alias.name) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found = [(node.args[0].value, "")]
        for module, name in found:
            if module.split(".")[0] != OWN and (_private(module) or _private(name)):
                where = f"{path.relative_to(root)}:{node.lineno}"
                yield f"{where}: {module}{f' import {name}' if name else ''}"


def test_the_scan_sees_a_private_import(tmp_path: Path) -> None:
    """The check can fail: each shape of private import is found, a public one is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "import openai._types\n"
        "from httpx import _config\n"
        "from langgraph._internal._runnable import RunnableCallable\n"
        "def later():\n"
        "    import importlib\n"
        "    importlib.import_module('anyio._backends._asyncio')\n"
        "from inspect_ai.model import StopReason\n"
        "from fusiongraph.graph.models import _http_client\n",
        encoding="utf-8",
    )
    found = [line.split(": ", 1)[1] for line in private_imports(sample, tmp_path)]
    assert found == [
        "openai._types",
        "httpx import _config",
        "langgraph._internal._runnable import RunnableCallable",
        "anyio._backends._asyncio",
    ]


def test_no_private_api_of_a_dependency_outside_the_compat_modules() -> None:
    found = [
        line for path in product_modules() if not _is_compat(path) for line in private_imports(path)
    ]
    assert not found, (
        "private modules of dependencies may move in any release: use a public API, or put the "
        "use in a graph/compat_*.py module with a public fallback:\n" + "\n".join(found)
    )


def test_each_compat_module_has_a_public_fallback() -> None:
    """A compatibility module reads the switch that forces its fallback."""
    modules = [path for path in product_modules() if _is_compat(path)]
    assert modules, "no compatibility module left: drop this test and the switch"
    for path in modules:
        assert "public_apis_only()" in path.read_text(encoding="utf-8"), path


def _spec(name: str) -> ModelSpec:
    return ModelSpec.model_validate({"provider": "openai", "model": name})


async def test_the_forced_fallback_keeps_the_sdks_own_completions(
    openai_env: str, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compat_openai.PUBLIC_APIS_ONLY_ENV, "1")
    model = default_model_factory(_spec("public-only"))
    assert isinstance(model, ChatOpenAI)
    assert type(model.async_client) is AsyncCompletions  # the SDK's own `create`
    assert model.stream_chunk_timeout == DEFAULT_CALL_TIMEOUT_S  # langchain-openai's own guard
    assert (await model.ainvoke("[bench:pa1] hello")).text
    streamed = [chunk async for chunk in model.astream("[bench:pa2] hello")]
    assert "".join(chunk.text for chunk in streamed)
    assert any(chunk.usage_metadata for chunk in streamed)


def test_without_the_switch_the_models_take_the_direct_path(openai_env: str) -> None:
    if compat_openai.public_apis_only():
        pytest.skip("this run forces the public fallback")
    model = default_model_factory(_spec("direct-path"))
    assert compat_openai.DirectCompletions is not None
    assert isinstance(model.async_client, compat_openai.DirectCompletions)  # type: ignore[attr-defined]


@pytest.mark.timeout(300)
def test_the_core_unit_tests_pass_with_every_fallback_forced() -> None:
    if compat_openai.public_apis_only():
        pytest.skip("already the forced run")
    env = {**os.environ, compat_openai.PUBLIC_APIS_ONLY_ENV: "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CORE_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
