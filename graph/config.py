"""The run's configuration: the graph's `context_schema` and its resolution into a plan.

`FusionContext` is what a caller (or LangGraph Studio) sets: a preset name plus optional
overrides. `resolve_config` expands the preset, applies the overrides and environment fallbacks,
and validates everything before any model is called, naming the offending field.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.presets import PRESETS
from fusiongraph.graph.specs import ModelSpec, Price, ToolMode
from fusiongraph.tools.settings import FetchSettings, SearchSettings

MAX_PANEL = 8


@dataclass(kw_only=True)
class FusionContext:
    """Per-run settings (LangGraph `context_schema`). Unset fields come from the preset."""

    preset: str = field(default="", metadata={"description": "local | quality | budget"})
    panel: list[str | dict[str, Any]] | None = field(
        default=None, metadata={"description": "1-8 model specs, e.g. openai:gpt-5.5"}
    )
    judge: str | dict[str, Any] | None = None
    synthesizer: str | dict[str, Any] | None = None
    tool_mode: ToolMode | None = field(
        default=None, metadata={"description": "agentic | prefetch | off, for every panelist"}
    )
    max_tool_calls: int | None = field(default=None, metadata={"description": "1-16 tool steps"})
    temperature: float | None = field(default=None, metadata={"description": "synthesis step"})
    max_tokens: int | None = field(default=None, metadata={"description": "synthesis step"})
    panel_max_tokens: int | None = None
    panel_timeout_s: float | None = None
    quorum: int | None = None
    straggler_grace_s: float | None = None
    deadline_s: float | None = None
    judge_input_chars: int | None = None
    include_raw_answers: bool | None = None
    search_provider: str | None = None
    corpus_dir: str | None = None
    searxng_url: str | None = None
    fetch_allow_private: list[str] | None = None
    max_cost_usd: float | None = None
    prices: dict[str, dict[str, float]] | None = None
    # The caller's tools (OpenAI function format), bound on the synthesis step only.
    synthesis_tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class FusionConfig(BaseModel):
    """A validated, fully expanded plan for one run (frozen: runs with equal settings share it)."""

    model_config = ConfigDict(frozen=True)

    preset: str
    panel: list[ModelSpec] = Field(min_length=1, max_length=MAX_PANEL)
    judge: ModelSpec
    synthesizer: ModelSpec
    tool_mode: ToolMode = "agentic"
    max_tool_calls: int = Field(default=8, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    panel_max_tokens: int | None = Field(default=None, ge=1)
    panel_timeout_s: float = Field(default=120.0, gt=0)
    quorum: int | None = Field(default=None, ge=1)
    straggler_grace_s: float = Field(default=0.0, ge=0)
    deadline_s: float | None = Field(default=None, gt=0)
    judge_input_chars: int = Field(default=8000, ge=200)
    include_raw_answers: bool = False
    search: SearchSettings = Field(default_factory=SearchSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    max_cost_usd: float | None = Field(default=None, gt=0)
    prices: dict[str, Price] = Field(default_factory=dict)
    synthesis_tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> FusionConfig:
        if self.quorum is not None and self.quorum > len(self.panel):
            raise ValueError(f"quorum {self.quorum} exceeds the panel size {len(self.panel)}")
        return self

    def panel_tool_mode(self, spec: ModelSpec) -> ToolMode:
        return spec.tool_mode or self.tool_mode

    def panel_max_tool_calls(self, spec: ModelSpec) -> int:
        return spec.max_tool_calls or self.max_tool_calls

    def all_specs(self) -> list[ModelSpec]:
        return [*self.panel, self.judge, self.synthesizer]


def _overrides(ctx: FusionContext) -> dict[str, Any]:
    """The fields the caller set, mapped onto FusionConfig's shape."""
    values = {k: v for k, v in asdict(ctx).items() if v is not None and k != "preset"}
    search = {}
    for key, target in (
        ("search_provider", "provider"),
        ("corpus_dir", "corpus_dir"),
        ("searxng_url", "searxng_url"),
    ):
        if key in values:
            search[target] = values.pop(key)
    fetch = {}
    if "fetch_allow_private" in values:
        fetch["allow_private"] = values.pop("fetch_allow_private")
    return {**values, "search": search, "fetch": fetch}


def _env_fallbacks() -> dict[str, Any]:
    search: dict[str, Any] = {}
    if os.environ.get("FUSIONGRAPH_SEARCH_PROVIDER"):
        search["provider"] = os.environ["FUSIONGRAPH_SEARCH_PROVIDER"]
    if os.environ.get("FUSIONGRAPH_CORPUS_DIR"):
        search["corpus_dir"] = os.environ["FUSIONGRAPH_CORPUS_DIR"]
    if os.environ.get("SEARXNG_URL"):
        search["searxng_url"] = os.environ["SEARXNG_URL"]
    return {"search": search}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "prices":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _field_name(loc: tuple[Any, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in ("function-after[_check()]",) or str(part).startswith(("function-", "str")):
            continue
        else:
            name += f".{part}" if name else str(part)
    return name or "config"


# Every node of a run resolves the same context (N+3 times a run): validated plans are kept by
# what they were built from. 0.3 ms each, before every panel request. FusionConfig is frozen.
MAX_RESOLVED = 256
_RESOLVED: dict[tuple[str, str, str], FusionConfig] = {}


def resolve_config(ctx: FusionContext | dict[str, Any] | None = None) -> FusionConfig:
    """Expand the preset, apply overrides and validate; raise FusionConfigError naming the field."""
    if ctx is None:
        ctx = FusionContext()
    elif isinstance(ctx, dict):
        unknown = set(ctx) - set(FusionContext.__dataclass_fields__)
        if unknown:
            raise FusionConfigError(sorted(unknown)[0], "unknown setting")
        ctx = FusionContext(**ctx)
    preset = ctx.preset or os.environ.get("FUSIONGRAPH_PRESET") or "local"
    if preset not in PRESETS:
        raise FusionConfigError("preset", f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if ctx.panel is not None and not isinstance(ctx.panel, list | tuple):
        raise FusionConfigError("panel", "must be a list of model specs")
    if ctx.panel is not None and not 1 <= len(ctx.panel) <= MAX_PANEL:
        raise FusionConfigError("panel", f"needs 1 to {MAX_PANEL} models, got {len(ctx.panel)}")
    fallbacks = _env_fallbacks()
    key = (preset, repr(fallbacks), repr(ctx))
    config = _RESOLVED.get(key)
    if config is None:
        raw = {k: v for k, v in PRESETS[preset].items() if k != "description"}
        raw = _merge(_merge(raw, fallbacks), _overrides(ctx))
        try:
            config = FusionConfig(preset=preset, **raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise FusionConfigError(_field_name(tuple(err["loc"])), err["msg"]) from None
        if len(_RESOLVED) >= MAX_RESOLVED:
            _RESOLVED.clear()
        _RESOLVED[key] = config
    _check_runnable(config)  # every time: it reads API keys from the environment
    return config


def _check_runnable(config: FusionConfig) -> None:
    """Refuse what would fail on the first call: recursion, missing keys, missing packages."""
    named = [(f"panel[{i}]", s) for i, s in enumerate(config.panel)]
    named += [("judge", config.judge), ("synthesizer", config.synthesizer)]
    for field_name, spec in named:
        if spec.is_fusion():
            raise FusionConfigError(
                field_name, f"{spec.name} is a fusion model; a fusion run cannot contain itself"
            )
        key_env = spec.resolved_key_env()
        if key_env and not os.environ.get(key_env):
            raise FusionConfigError(
                field_name, f"{spec.name} needs the environment variable {key_env} (API key)"
            )
        if spec.provider == "anthropic":
            try:
                import langchain_anthropic  # noqa: F401
            except ImportError:
                raise FusionConfigError(
                    field_name, "anthropic: models need the package langchain-anthropic"
                ) from None
        if spec.provider == "openai_compatible" and not spec.base_url:
            raise FusionConfigError(field_name, "an object model spec needs base_url")
