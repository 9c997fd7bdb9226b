"""fusiongraph's public names: `from fusiongraph import build_graph, FusionChatModel, ...`.

Loaded on first use (PEP 562), so `import fusiongraph.serve.cli` does not pay for the graph.
The compiled default graph (langgraph.json's) is `default_graph`: the name `graph` is taken by
the subpackage `fusiongraph.graph` (Python sets a package's attribute to each subpackage it
imports), so `from fusiongraph import graph` is that package, as it must stay for every
`fusiongraph.graph.<module>` path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusiongraph.graph.builder import build_graph, open_graph
    from fusiongraph.graph.builder import graph as default_graph
    from fusiongraph.graph.chat_model import FusionChatModel
    from fusiongraph.graph.config import FusionContext
    from fusiongraph.graph.errors import FusionConfigError, FusionError
    from fusiongraph.graph.tool import fusion_tool

_PUBLIC = {
    "build_graph": ("fusiongraph.graph.builder", "build_graph"),
    "default_graph": ("fusiongraph.graph.builder", "graph"),
    "open_graph": ("fusiongraph.graph.builder", "open_graph"),
    "FusionChatModel": ("fusiongraph.graph.chat_model", "FusionChatModel"),
    "fusion_tool": ("fusiongraph.graph.tool", "fusion_tool"),
    "FusionContext": ("fusiongraph.graph.config", "FusionContext"),
    "FusionError": ("fusiongraph.graph.errors", "FusionError"),
    "FusionConfigError": ("fusiongraph.graph.errors", "FusionConfigError"),
}
__all__ = [
    "FusionChatModel",
    "FusionConfigError",
    "FusionContext",
    "FusionError",
    "build_graph",
    "default_graph",
    "fusion_tool",
    "open_graph",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fusiongraph' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
