"""`fusion_tool`: the deliberation tool (graph/deliberation.py) with a FusionChatModel, given or
built from a preset, a context or a compiled graph, for an agent to call."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool

from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.deliberation import deliberation_tool


def fusion_tool(
    *,
    preset: str = "",
    context: dict[str, Any] | None = None,
    graph: Any = None,
    model: FusionChatModel | None = None,
    name: str = "deliberate",
    description: str | None = None,
) -> BaseTool:
    """Build the deliberation tool around a FusionChatModel (given, or built from preset/context
    /graph)."""
    fusion = model or FusionChatModel(preset=preset, context=context or {}, graph=graph)
    return deliberation_tool(fusion, name=name, description=description)


as_tool = fusion_tool
