"""The package's public names import from the top (`from fusiongraph import ...`), lazily."""

from __future__ import annotations

import subprocess
import sys

import fusiongraph


def test_public_names_import_from_the_package() -> None:
    from fusiongraph import (
        FusionChatModel,
        FusionConfigError,
        FusionContext,
        FusionError,
        build_graph,
        default_graph,
        fusion_tool,
        open_graph,
    )
    from fusiongraph.graph.builder import graph

    assert default_graph is graph and callable(build_graph) and callable(open_graph)
    assert issubclass(FusionConfigError, FusionError) and "panel" in FusionContext.model_fields
    assert FusionChatModel.__name__ == "FusionChatModel" and callable(fusion_tool)
    assert set(fusiongraph.__all__) <= set(dir(fusiongraph))


def test_importing_a_submodule_does_not_build_the_graph() -> None:
    """The CLI imports fusiongraph.serve.cli on every command: the graph loads only when used."""
    code = "import sys, fusiongraph.graph.errors; print('fusiongraph.graph.builder' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_public_list_is_the_lazy_table() -> None:
    assert sorted(fusiongraph.__all__) == sorted(fusiongraph._PUBLIC)
