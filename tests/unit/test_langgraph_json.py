"""`langgraph.json` loads: every graph it names imports the way `langgraph dev` imports it.

langgraph-api loads `./path.py:attr` by file path (`importlib.util.spec_from_file_location`, module
name derived from the path), not as a package module, so a relative import in the graph file would
fail there while passing under pytest. This test repeats that loading step.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel import Pregel
from langgraph_cli.config import validate_config_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / "langgraph.json"


def _config() -> dict[str, Any]:
    return json.loads(CONFIG_PATH.read_text(encoding="utf-8"))


def _graph_specs() -> list[tuple[str, str]]:
    graphs = _config()["graphs"]
    return [(gid, v["path"] if isinstance(v, dict) else v) for gid, v in graphs.items()]


def _load_by_path(spec: str, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Any]:
    """What langgraph_api.graph._graph_from_spec does for a `./file.py:variable` spec."""
    path, variable = spec.rsplit(":", maxsplit=1)
    assert path.endswith(".py"), f"{spec}: langgraph dev loads graphs from a file path"
    modname = path.replace("/", "__").replace(".py", "").replace(" ", "_").lstrip(".")
    modspec = importlib.util.spec_from_file_location(modname, ROOT / path)
    assert modspec is not None and modspec.loader is not None, f"no python file for {spec}"
    module = importlib.util.module_from_spec(modspec)
    monkeypatch.setitem(sys.modules, modname, module)  # removed again after the test
    modspec.loader.exec_module(module)
    return module, module.__dict__[variable]


def test_config_is_valid_for_the_cli() -> None:
    config = validate_config_file(CONFIG_PATH)  # the check `langgraph dev` runs first
    assert config["dependencies"] == ["."]
    assert set(config["graphs"]) == {"fusion"}
    # Secrets (OPENROUTER_API_KEY, ...) stay out of the committed file: they come from .env,
    # the same file `fusiongraph` loads; `langgraph dev` starts fine when it does not exist.
    assert config["env"] == ".env"


def test_python_version_matches_the_package() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "requires-python"
    ]
    assert requires == f">={_config()['python_version']}"


@pytest.mark.parametrize(("graph_id", "spec"), _graph_specs())
def test_graph_loads_by_path_from_the_installed_package(
    graph_id: str, spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, graph = _load_by_path(spec, monkeypatch)
    assert isinstance(graph, Pregel) and isinstance(graph, CompiledStateGraph)
    assert graph.name == graph_id
    # The file only re-exports the package's graph: the by-path module adds no second copy.
    installed = importlib.import_module(f"fusiongraph.graph.{Path(module.__file__).stem}")
    assert graph is installed.graph


@pytest.mark.parametrize(("graph_id", "spec"), _graph_specs())
def test_schemas_studio_shows(graph_id: str, spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON schemas langgraph-api serves at /assistants/{id}/schemas (Studio's forms)."""
    _, graph = _load_by_path(spec, monkeypatch)

    context = graph.get_context_jsonschema()
    assert context is not None
    props = context["properties"]
    assert {"preset", "panel"} <= set(props)
    assert "local" in props["preset"]["description"]
    assert "description" in props["panel"]

    # langgraph-api logs and serves null when these raise, and Studio then has no input form.
    assert "messages" in graph.get_input_jsonschema()["properties"]
    assert "messages" in graph.get_output_jsonschema()["properties"]
