"""From an OpenRouter Fusion request to a fusiongraph run: the operator's table of OpenRouter
slugs and presets, the Fusion parts taken out of a request body, and the run's settings.

`analysis_models` -> the panel, `model` -> the judge (OpenRouter's analyst) and, for the alias
and the plugin, the synthesizer (the calling model, which writes the final answer);
`max_tool_calls` -> the panel's and the judge's tool steps, `max_completion_tokens` -> each
panelist's and the judge's max_tokens, `temperature` -> the panelists', `reasoning.effort` ->
reasoning_effort, `tools: []` -> no tools, `preset` -> a model the operator serves. Every
setting is checked here, so a bad one is a 400 naming it before any model is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.models import ModelFactory, default_model_factory
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.openai_errors import OpenAIError, bad_request, from_fusion_error
from fusiongraph.serve.openai_request import error_param
from fusiongraph.serve.openrouter_protocol import (
    ALIAS,
    PLUGIN_ID,
    TOOL_TYPE,
    WEB_TOOLS,
    FusionPlugin,
    FusionServerTool,
    InnerTool,
)
from fusiongraph.serve.runs import RunService

MODELS_ENV = "FUSIONGRAPH_OPENROUTER_MODELS"
OPENROUTER_KEY_ENV = "OPENROUTER_API_KEY"
# OpenRouter's named presets -> the served model (a `fusion-<preset>` or an alias) they run.
DEFAULT_PRESETS = {
    "general-high": "fusion-quality",
    "general-budget": "fusion-budget",
    "general-fast": "fusion-budget",
}
# ------------------------------------------------------------------------------ the settings


@dataclass
class OpenRouterSettings:
    """The operator's side of the translation: which model each OpenRouter slug is, which served
    model each OpenRouter preset runs, and what builds the calling model for the router's step.

    The `--openrouter-models` file (or FUSIONGRAPH_OPENROUTER_MODELS) holds
    `{"models": {slug: spec}, "presets": {preset: served model}, "default": served model}`;
    every part is optional. `passthrough` (default: whether OPENROUTER_API_KEY is set when a
    request comes) sends an unmapped slug to OpenRouter itself."""

    models: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PRESETS))
    default: str = "fusion"
    passthrough: bool | None = None
    model_factory: ModelFactory = default_model_factory

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Any:
        """From a JSON file (default: the path in FUSIONGRAPH_OPENROUTER_MODELS, else none)."""
        path = path or os.environ.get(MODELS_ENV) or None
        data: dict[str, Any] = {}
        if path:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict) or set(data) - {"models", "presets", "default"}:
                raise ValueError(
                    f"{path}: an OpenRouter models file is a JSON object with models "
                    "(slug -> spec), presets (OpenRouter preset -> served model) and default"
                )
        settings = cls(
            models=dict(data.get("models") or {}),
            presets={**DEFAULT_PRESETS, **(data.get("presets") or {})},
            default=data.get("default") or "fusion",
        )
        return dataclasses.replace(settings, **overrides)

    def check(self, served: dict[str, Any]) -> None:
        """Fail at start-up on a spec that cannot be read or a preset naming nothing served."""
        for slug, spec in self.models.items():
            try:
                ModelSpec.model_validate(spec)
            except ValidationError as exc:
                raise ValueError(f"OpenRouter model {slug!r}: {exc.errors()[0]['msg']}") from None
        if self.default not in served:
            raise ValueError(f"OpenRouter Fusion's default model {self.default!r} is not served")
        # A preset naming a model this server does not serve stays unusable, not fatal: the
        # built-in table names fusion-quality and fusion-budget, which every server has.

    def spec(self, slug: str, param: str) -> Any:
        """The operator's model for an OpenRouter slug; a 400 that says how to map it."""
        if slug in self.models:
            return self.models[slug]
        passthrough = self.passthrough
        if passthrough is None:
            passthrough = bool(os.environ.get(OPENROUTER_KEY_ENV))
        if passthrough:
            return f"openrouter:{slug}"
        raise bad_request(
            f"the OpenRouter model {slug!r} is not mapped to a model of this server: add it to "
            f'the file of `fusiongraph serve --openrouter-models` ({{"models": {{"{slug}": '
            '"provider:model"}}), or set OPENROUTER_API_KEY to run OpenRouter slugs on OpenRouter',
            param,
            code="model_not_mapped",
        )


# ------------------------------------------------------------------------------- the request


@dataclass
class FusionAsk:
    """What a request asked of OpenRouter Fusion, taken out of its body."""

    model: str  # the request's model: the alias, an OpenRouter slug or a served model
    plugin: FusionPlugin | None = None
    tool: FusionServerTool | None = None
    tool_param: str = "tools"
    plugin_param: str = "plugins"
    choice: Literal["auto", "required", "none"] = "auto"

    @property
    def alias(self) -> bool:
        return self.model == ALIAS

    @property
    def enabled(self) -> bool:
        """A plugin with `enabled: false` turns Fusion off (the tool is not offered)."""
        return not (self.plugin is not None and self.plugin.enabled is False and not self.tool)

    def where(self, name: str) -> str:
        """The request parameter a setting came from (for errors)."""
        params = self.tool.parameters if self.tool is not None else None
        if params is not None and name in params.model_fields_set:
            return f"{self.tool_param}.parameters.{name}"
        return f"{self.plugin_param}.{name}"


def _validated(model: type[BaseModel], value: Any, param: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = error_param(err) or ""
        name = f"{param}.{where}" if where else param
        if err["type"] == "extra_forbidden":
            message = f"{name}: unknown or unsupported OpenRouter Fusion field"
        else:
            message = f"{name}: {err['msg'].removeprefix('Value error, ')}"
        raise bad_request(message, name, code="invalid_config") from None


def take_fusion(body: dict[str, Any]) -> FusionAsk | None:
    """The OpenRouter Fusion parts of a request body, removed from it (so what remains is a
    plain fusiongraph request); None when it asks for none."""
    plugins = body.get("plugins")
    tools = body.get("tools")
    model = body.get("model")
    asks_tool = isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == TOOL_TYPE for t in tools
    )
    if plugins is None and not asks_tool and model != ALIAS:
        return None
    ask = FusionAsk(model=str(model or ""))
    if plugins is not None:
        if not isinstance(plugins, list):
            raise bad_request("plugins must be a list", "plugins")
        for i, plugin in enumerate(plugins):
            kind = plugin.get("id") if isinstance(plugin, dict) else None
            if kind != PLUGIN_ID:
                raise bad_request(
                    f"the plugin {kind!r} is not supported here: fusiongraph serves only "
                    'the "fusion" plugin',
                    f"plugins[{i}].id",
                    code="unsupported_parameter",
                )
            if ask.plugin is not None:
                raise bad_request("only one fusion plugin", f"plugins[{i}]")
            ask.plugin = _validated(FusionPlugin, plugin, f"plugins[{i}]")
            ask.plugin_param = f"plugins[{i}]"
        del body["plugins"]
    if isinstance(tools, list):
        kept = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind == TOOL_TYPE:
                if ask.tool is not None:
                    raise bad_request("only one openrouter:fusion tool", f"tools[{i}]")
                ask.tool = _validated(FusionServerTool, tool, f"tools[{i}]")
                ask.tool_param = f"tools[{i}]"
            elif isinstance(kind, str) and kind.startswith("openrouter:"):
                raise bad_request(
                    f"the server tool {kind!r} is not offered here: the outer call has no "
                    "server tools (the panel searches the web on its own)",
                    f"tools[{i}].type",
                    code="unsupported_parameter",
                )
            else:
                kept.append(tool)
        body["tools"] = kept or None
    if ask.plugin is None and ask.tool is None and not ask.alias:
        return None  # `plugins: []`: nothing asked of Fusion
    ask.choice = _take_choice(body, ask)
    return ask


def _take_choice(body: dict[str, Any], ask: FusionAsk) -> Literal["auto", "required", "none"]:
    """The request's tool_choice as it applies to the fusion tool; removed from the body when
    it was about that tool (the caller's own tools keep theirs)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == TOOL_TYPE:
        body.pop("tool_choice")
        return "required"
    if choice in ("auto", "required", "none"):
        # The router's step reads it; a deliberated answer is written with the caller's tools
        # offered, not forced.
        body.pop("tool_choice")
        return choice
    return "auto"


# -------------------------------------------------------------------------------- the plan


@dataclass
class FusionPlan:
    """An OpenRouter Fusion request as a fusiongraph run: the settings it runs with, the calling
    model, and the slug each panelist answers under."""

    context: dict[str, Any]
    calling: ModelSpec
    slugs: dict[str, str]  # panelist id (p1, ...) -> the slug the caller knows it by
    analyst: str


def _as_dict(spec: Any) -> dict[str, Any]:
    return ModelSpec.model_validate(spec).model_dump(exclude_defaults=True, exclude_none=True)


def _inner_tools(tools: list[InnerTool] | None, param: str) -> str | None:
    """The panel's tool mode for OpenRouter's inner-call tools: `[]` is none; the web tools
    (both, without parameters: fusiongraph's own search settings apply) keep the run's mode."""
    if tools is None:
        return None
    if not tools:
        return "off"
    kinds = []
    for i, tool in enumerate(tools):
        if tool.type not in WEB_TOOLS:
            raise bad_request(
                f"{tool.type!r}: the panel's tools here are web search and web fetch only",
                f"{param}[{i}].type",
                code="unsupported_parameter",
            )
        if tool.parameters:
            raise bad_request(
                "tool parameters are not supported: the operator sets the search settings",
                f"{param}[{i}].parameters",
                code="unsupported_parameter",
            )
        kinds.append(tool.type)
    if sorted(set(kinds)) != sorted(WEB_TOOLS):
        raise bad_request(
            "fusiongraph's panel gets web search and web fetch together: send both, or [] for none",
            param,
            code="unsupported_parameter",
        )
    return None


def _in_callers_terms(
    error: OpenAIError, ask: FusionAsk, analysis_models: list[str] | None
) -> OpenAIError:
    """A configuration error about `panel[1]` or `judge` named as the request named it
    (`plugins[0].analysis_models[1]`, `tools[0].parameters.model`)."""
    param = error.param or ""
    if param.startswith("panel[") and analysis_models is not None:
        renamed = ask.where("analysis_models") + param.removeprefix("panel")
    elif param == "judge":
        renamed = ask.where("model")
    elif param == "synthesizer":
        renamed = ask.where("model") if ask.alias else "model"
    else:
        return error
    error.message = error.message.replace(param, renamed, 1)
    error.param = renamed
    return error


def plan_fusion(ask: FusionAsk, service: RunService, settings: OpenRouterSettings) -> FusionPlan:
    """The run an OpenRouter Fusion request stands for (every setting checked: a 400 first)."""
    plugin, params = ask.plugin, ask.tool.parameters if ask.tool else None
    # Where the run starts from: a named preset, the served model the request names, or the
    # operator's default for OpenRouter Fusion.
    base_name = settings.default
    if plugin is not None and plugin.preset is not None:
        if plugin.preset not in settings.presets:
            raise bad_request(
                f"unknown preset {plugin.preset!r}; this server has {sorted(settings.presets)}",
                ask.where("preset"),
                code="invalid_config",
            )
        base_name = settings.presets[plugin.preset]
    elif ask.model in service.models:
        base_name = ask.model
    if base_name not in service.models:
        raise bad_request(
            f"the preset's model {base_name!r} is not served here",
            ask.where("preset"),
            "invalid_config",
        )
    context = dict(service.models[base_name])

    def pick(name: str) -> Any:
        for source in (params, plugin):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                return value
        return None

    analysis_models = pick("analysis_models")
    if analysis_models is not None:
        where = ask.where("analysis_models")
        context["panel"] = [
            settings.spec(slug, f"{where}[{i}]") for i, slug in enumerate(analysis_models)
        ]
    # The calling model: the request's own model, except the alias, which the plugin's `model`
    # (else the preset's synthesizer) stands for.
    calling_slug = None
    if ask.alias:
        calling_slug = plugin.model if plugin is not None else None
    elif ask.model not in service.models:
        calling_slug = ask.model
    if calling_slug is not None:
        context["synthesizer"] = settings.spec(
            calling_slug, ask.where("model") if ask.alias else "model"
        )
    # The analyst: the server tool's or the plugin's `model`, else the calling model.
    analyst_slug = pick("model") or calling_slug
    if analyst_slug is not None:
        analyst_param = ask.where("model") if pick("model") else "model"
        context["judge"] = settings.spec(analyst_slug, analyst_param)
    steps = pick("max_tool_calls")
    if steps is not None:
        context["max_tool_calls"] = steps
        context["judge_max_tool_calls"] = steps
    mode = _inner_tools(pick("tools"), ask.where("tools"))
    if mode is not None:
        context["tool_mode"] = mode
    if params is not None:
        if params.cache_control is not None:
            raise bad_request(
                "cache_control is not supported: fusiongraph does not set prompt-cache breakpoints",
                ask.where("cache_control"),
                code="unsupported_parameter",
            )
        if params.reasoning is not None:
            if params.reasoning.max_tokens is not None:
                raise bad_request(
                    "reasoning.max_tokens is not supported: use reasoning.effort",
                    ask.where("reasoning") + ".max_tokens",
                    code="unsupported_parameter",
                )
            effort = params.reasoning.effort
            if effort is not None:
                context["reasoning_effort"] = "xhigh" if effort == "max" else effort
    try:
        config = resolve_config(FusionContext(**context))
    except FusionError as exc:
        raise _in_callers_terms(from_fusion_error(exc), ask, analysis_models) from None
    tokens, temperature = pick("max_completion_tokens"), pick("temperature")
    if tokens is not None or temperature is not None:
        update = {"max_tokens": tokens} if tokens is not None else {}
        panel_update = {
            **update,
            **({"temperature": temperature} if temperature is not None else {}),
        }
        context["panel"] = [_as_dict(s.model_copy(update=panel_update)) for s in config.panel]
        if tokens is not None:
            context["judge"] = _as_dict(config.judge.model_copy(update=update))
        config = resolve_config(FusionContext(**context))
    slugs = {
        f"p{i + 1}": (analysis_models[i] if analysis_models else spec.name)
        for i, spec in enumerate(config.panel)
    }
    return FusionPlan(
        context=context,
        calling=config.synthesizer,
        slugs=slugs,
        analyst=analyst_slug or config.judge.name,
    )
