"""OpenRouter Fusion's request shapes as this server reads them: the `fusion` plugin, the
`openrouter:fusion` server tool and the `openrouter/fusion` model alias.

The fields follow the official `openrouter` Python SDK's models (FusionPlugin,
FusionServerToolConfig, FusionServerToolOpenRouter), which is what a client serializes with.
Every object forbids unknown fields, and a field fusiongraph cannot honour is refused by name
(`plugins[0].tools[0].parameters`): a setting silently dropped would change what a caller pays
for or gets without telling them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fusiongraph.graph.models import OPENROUTER_DEPTH_HEADER
from fusiongraph.graph.specs import ReasoningEffort

ALIAS = "openrouter/fusion"
PLUGIN_ID = "fusion"
TOOL_TYPE = "openrouter:fusion"
# The inner-call tools OpenRouter defaults to; fusiongraph's panel gets both or none.
WEB_TOOLS = ("openrouter:web_search", "openrouter:web_fetch")
# The header OpenRouter's inner calls carry (and fusiongraph's: graph/models.py); a request
# holding it asks for fusion from inside one.
DEPTH_HEADER = OPENROUTER_DEPTH_HEADER
# OpenRouter's caps: at most 8 analysis models, at most 16 tool steps.
MAX_ANALYSIS_MODELS = 8
MAX_TOOL_CALLS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InnerTool(_Strict):
    """`{type, parameters?}`: a server tool for the panelists' and the analyst's inner calls."""

    type: str
    parameters: dict[str, Any] | None = None


class Reasoning(_Strict):
    """Reasoning forwarded to the panelists and the analyst; only `effort` has a fusiongraph
    counterpart (reasoning_effort)."""

    effort: ReasoningEffort | Literal["max"] | None = None
    max_tokens: int | None = Field(default=None, ge=1)


class _FusionFields(_Strict):
    """What the plugin and the server tool share."""

    analysis_models: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_ANALYSIS_MODELS
    )
    model: str | None = Field(default=None, min_length=1)
    max_tool_calls: int | None = Field(default=None, ge=1, le=MAX_TOOL_CALLS)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[InnerTool] | None = None


class FusionPlugin(_FusionFields):
    """`plugins: [{"id": "fusion", ...}]` (the SDK's FusionPlugin; `max_completion_tokens` is
    accepted here too, as the server tool has it)."""

    id: Literal["fusion"]
    enabled: bool | None = None
    preset: str | None = None


class FusionToolParameters(_FusionFields):
    """The `parameters` of `{"type": "openrouter:fusion"}` (the SDK's FusionServerToolConfig)."""

    reasoning: Reasoning | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    cache_control: dict[str, Any] | None = None


class FusionServerTool(_Strict):
    """`tools: [{"type": "openrouter:fusion", "parameters": {...}}]`."""

    type: Literal["openrouter:fusion"]
    parameters: FusionToolParameters | None = None
