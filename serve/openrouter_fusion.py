"""OpenRouter Fusion's API on fusiongraph's runs: a translation at the edge, not a second pipeline.

A request that asks for OpenRouter Fusion (the `openrouter/fusion` alias, a `fusion` plugin or
an `openrouter:fusion` server tool) becomes an ordinary fusiongraph run:

- `analysis_models` -> the panel, `model` -> the judge (OpenRouter's analyst) and, for the alias
  and the plugin, the synthesizer (the calling model that writes the final answer);
  `max_tool_calls` -> the panel's and the judge's tool steps, `max_completion_tokens` -> each
  panelist's and the judge's max_tokens, `temperature` -> the panelists', `reasoning.effort` ->
  reasoning_effort, `tools: []` -> no tools, `preset` -> a model the operator serves.
- OpenRouter's slugs go through the operator's table (`--openrouter-models`); with
  OPENROUTER_API_KEY set, an unmapped slug is that model on OpenRouter (`openrouter:<slug>`).
- The router's choice is the calling model's: it gets the fusion tool (and the caller's own
  function tools) and decides; `tool_choice: "required"` skips the question. When it calls the
  tool, the graph runs and its synthesizer, the same calling model, writes the answer from the
  analysis. When nothing usable comes back (every panelist failed, rate limits, the budget), the
  calling model answers alone, as OpenRouter's does with a failed tool result.

The result is read from the run's record (`response_metadata["fusion"]`): the
`openrouter:fusion` output item on /v1/responses (and its `response.fusion_call.*` stream
events), a `reasoning.server_tool_call` entry in the message's `reasoning_details` on chat
completions. fusiongraph's own record stays in the top-level `fusion` field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage, AnyMessage
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.models import ModelFactory, close_model, default_model_factory
from fusiongraph.graph.runner import RunEvent
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.openai_errors import OpenAIError, bad_request, from_fusion_error
from fusiongraph.serve.openai_request import error_param, load_json, parse_request
from fusiongraph.serve.openai_response import (
    ChunkWriter,
    completion_body,
    completion_id,
)
from fusiongraph.serve.openrouter_protocol import (
    ALIAS,
    DEPTH_HEADER,
    PLUGIN_ID,
    TOOL_TYPE,
    WEB_TOOLS,
    FusionPlugin,
    FusionServerTool,
    InnerTool,
)
from fusiongraph.serve.responses_api import (
    RESPONSE_PREFIX,
    TOOL_HINT,
    ResponseStreamWriter,
    convert_request,
    finished,
    output_items,
    previous_conversation,
    response_skeleton,
)
from fusiongraph.serve.responses_protocol import RESPONSES_TAGS, ResponsesRequest
from fusiongraph.serve.runs import (
    THREAD_HEADER,
    ClientGone,
    PreparedRun,
    RunService,
    as_error,
    chat_request,
    open_stream,
    parse_body,
    race_disconnect,
)
from fusiongraph.tools.aio import Pump

MODELS_ENV = "FUSIONGRAPH_OPENROUTER_MODELS"
OPENROUTER_KEY_ENV = "OPENROUTER_API_KEY"
# OpenRouter's named presets -> the served model (a `fusion-<preset>` or an alias) they run.
DEFAULT_PRESETS = {
    "general-high": "fusion-quality",
    "general-budget": "fusion-budget",
    "general-fast": "fusion-budget",
}
# The fusion tool as the calling model sees it (a function name: OpenAI's allow no colon).
TOOL_FUNCTION = "openrouter_fusion"
TOOL_DESCRIPTION = (
    "Ask a panel of independent models to answer the user's request in parallel; an analyst "
    "compares their answers (consensus, contradictions, partial coverage, unique insights, "
    "blind spots) and you then write the final answer from that analysis. Call it only when "
    "the task deserves several perspectives: research, expert critique, compare and contrast, "
    "or anything where being wrong is expensive. Do not call it for short tactical requests."
)
# fusiongraph's failures that OpenRouter reports as a failed tool (the calling model then
# answers alone), with OpenRouter's names for them.
FALLBACK_REASONS = {
    "all_panelists_failed": "all_panels_failed",
    "rate_limited": "rate_limited",
    "budget_exceeded": "insufficient_credits",
}
# The judge's failure reasons (nodes/judge.py) as OpenRouter's analysis-stage codes.
JUDGE_REASONS = {"invalid_response": "judge_not_valid_json", "empty": "judge_empty_completion"}


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
        return f"plugins.{name}"


@dataclass
class Taken:
    """A request that asked for OpenRouter Fusion: its body without the Fusion parts and what
    it asked, or the error that the asking already is (answered in OpenRouter's shape)."""

    fields: dict[str, Any]
    ask: FusionAsk
    error: OpenAIError | None = None


def openrouter_error(exc: OpenAIError) -> JSONResponse:
    """An error in OpenRouter's shape (`code` is the HTTP status, details in `metadata`), which
    its SDK reads into its typed errors and the openai SDK reads as any API error."""
    metadata = {"param": exc.param, "reason": exc.code, "type": exc.error_type, **exc.extra}
    message = exc.message
    if exc.param and exc.param not in message:
        message = f"{exc.param}: {message}"  # the message names the field too
    body = {"error": {"code": exc.status, "message": message, "metadata": metadata}}
    return JSONResponse(jsonable_encoder(body), status_code=exc.status, headers=exc.headers)


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
                "plugins.preset",
                code="invalid_config",
            )
        base_name = settings.presets[plugin.preset]
    elif ask.model in service.models:
        base_name = ask.model
    if base_name not in service.models:
        raise bad_request(
            f"the preset's model {base_name!r} is not served here",
            "plugins.preset",
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
            calling_slug, "model" if not ask.alias else "plugins.model"
        )
    analyst_slug = (params.model if params is not None else None) or calling_slug
    if analyst_slug is not None:
        analyst_param = ask.where("model") if params and params.model else "model"
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
        raise from_fusion_error(exc) from None
    tokens, temperature = pick("max_completion_tokens"), pick("temperature")
    if tokens is not None or temperature is not None:
        update = {"max_tokens": tokens} if tokens is not None else {}
        panel_update = {**update, **({"temperature": temperature} if temperature else {})}
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


# ------------------------------------------------------------------------------- the result


def _slug(names: dict[str, str], panelist: Any) -> str:
    return names.get(str(panelist), str(panelist))


def analysis_of(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """fusiongraph's analysis (keyed by panelist id) as OpenRouter's FusionAnalysisResult
    (keyed by the model slugs the caller sent)."""
    analysis = record.get("analysis")
    if not isinstance(analysis, dict):
        return None
    return {
        "consensus": list(analysis.get("consensus") or []),
        "contradictions": [
            {
                "topic": c.get("topic", ""),
                "stances": [
                    {"model": _slug(names, s.get("panelist")), "stance": s.get("stance", "")}
                    for s in c.get("stances") or []
                ],
            }
            for c in analysis.get("contradictions") or []
        ],
        "partial_coverage": [
            {
                "point": p.get("point", ""),
                "models": [_slug(names, x) for x in p.get("panelists") or []],
            }
            for p in analysis.get("partial_coverage") or []
        ],
        "unique_insights": [
            {"insight": u.get("insight", ""), "model": _slug(names, u.get("panelist"))}
            for u in analysis.get("unique_insights") or []
        ],
        "blind_spots": list(analysis.get("blind_spots") or []),
    }


_STATUS_OF_REASON = {"rate_limited": 429, "auth": 401, "budget_exceeded": 402}


def failed_models(record: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for failure in record.get("failed_models") or []:
        entry = {
            "model": _slug(names, failure.get("panelist")),
            "error": f"{failure.get('reason')}: {failure.get('message') or ''}".rstrip(": "),
        }
        status = _STATUS_OF_REASON.get(str(failure.get("reason")))
        if status is not None:
            entry["status_code"] = status
        out.append(entry)
    return out


def sources_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """The pages the panel read, once each (OpenRouter's `sources`)."""
    seen: dict[str, str] = {}
    for entry in record.get("panel") or []:
        for source in entry.get("sources") or []:
            url = source.get("url")
            if url and url not in seen:
                seen[url] = source.get("title") or url
    return [{"url": url, "title": title} for url, title in seen.items()]


def judge_failure(record: dict[str, Any]) -> str | None:
    """OpenRouter's analysis-stage code for a judge that gave no analysis (None: it did)."""
    judge = record.get("judge") or {}
    if record.get("analysis") is not None or not judge.get("model") or judge.get("ok"):
        return None
    reason = str((judge.get("error") or {}).get("reason") or "")
    return JUDGE_REASONS.get(reason, "judge_upstream_error")


def fusion_item(
    record: dict[str, Any] | None,
    names: dict[str, str],
    *,
    iid: str,
    failure: tuple[str, str] | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    """The `openrouter:fusion` output item (the SDK's OutputFusionServerToolItem). `failure`:
    (OpenRouter's failure_reason, message) of a run that produced nothing usable."""
    record = record or {}
    item: dict[str, Any] = {"id": iid, "type": TOOL_TYPE, "status": status}
    if status == "in_progress":
        return item
    analysis = analysis_of(record, names)
    if analysis is not None:
        item["analysis"] = analysis
    responses = [
        {"model": _slug(names, p.get("panelist")), "content": p.get("content", "")}
        for p in record.get("panel") or []
    ]
    if responses:
        item["responses"] = responses
    failed = failed_models(record, names)
    if failed:
        item["failed_models"] = failed
    sources = sources_of(record)
    if sources:
        item["sources"] = sources
    if failure is not None:
        item["status"] = "incomplete"
        item["failure_reason"], item["error"] = failure
    elif analysis is None and (code := judge_failure(record)) is not None:
        # The judge gave no analysis: still a usable result from the raw answers (OpenRouter's
        # "judge degradation"), with why there is no analysis.
        message = ((record.get("judge") or {}).get("error") or {}).get("message") or ""
        item["error"] = f"{code}: {message}".rstrip(": ")
    return item


def tool_result(item: dict[str, Any]) -> dict[str, Any]:
    """The tool's result as the calling model and a chat-completions caller read it (the
    server-tool guide's shape: status ok or error, then the item's fields)."""
    ok = item.get("status") == "completed"
    body = {"status": "ok" if ok else "error"}
    body.update({k: v for k, v in item.items() if k not in ("id", "type", "status")})
    return body


def server_tool_detail(item: dict[str, Any], call_id: str) -> dict[str, Any]:
    """The chat-completions form of the fusion call: a `reasoning.server_tool_call` entry of the
    message's reasoning_details (the SDK's ReasoningDetailServerToolCall)."""
    return {
        "type": "reasoning.server_tool_call",
        "id": item["id"],
        "tool_call_id": call_id,
        "tool_name": TOOL_TYPE,
        "arguments": "{}",
        "result": json.dumps(tool_result(item), ensure_ascii=False),
        "index": 0,
    }


def failure_of(exc: FusionError) -> tuple[str, str] | None:
    """OpenRouter's failure_reason for a run that failed in a way its tool reports as failed
    (the calling model then answers alone); None for the failures that stay errors."""
    reason = FALLBACK_REASONS.get(exc.reason)
    return (reason, exc.message) if reason else None


# ---------------------------------------------------------------------- the calling model


def _fusion_function() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": TOOL_FUNCTION,
            "description": TOOL_DESCRIPTION,
            "parameters": {"type": "object", "properties": {}},
        },
    }


async def ask_calling_model(
    settings: OpenRouterSettings,
    spec: ModelSpec,
    messages: list[AnyMessage],
    tools: list[dict[str, Any]],
    choice: str | dict[str, Any] | None,
    *,
    offer_fusion: bool,
) -> AIMessage:
    """One call of the calling model, with the fusion tool when `offer_fusion` and the caller's
    function tools; no web tools (OpenRouter's outer call has none)."""
    model = settings.model_factory(spec)
    try:
        offered = ([_fusion_function()] if offer_fusion else []) + list(tools)
        bound: Any = model
        if offered:
            kwargs = {"tool_choice": choice} if choice not in (None, "auto") else {}
            bound = model.bind_tools(offered, **kwargs)
        reply = await bound.ainvoke(messages, {"tags": ["nostream"]})
    except Exception as exc:
        # The calling model writes the answer, as the synthesizer does: its failure is that one.
        message = f"the calling model {spec.name} failed: {str(exc)[:500] or type(exc).__name__}"
        raise FusionError("synthesis_failed", message) from exc
    finally:
        await close_model(model)
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=str(getattr(reply, "content", reply)))
    return reply


def calls_fusion(reply: AIMessage) -> bool:
    return any(call["name"] == TOOL_FUNCTION for call in reply.tool_calls)


# ------------------------------------------------------------------------------- the route


@dataclass
class Outcome:
    """How an OpenRouter Fusion request was answered."""

    run: PreparedRun
    plan: FusionPlan
    ask: FusionAsk
    item_id: str = field(default_factory=lambda: f"fus_{uuid.uuid4().hex}")
    call_id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


class OpenRouterFusion:
    """The OpenRouter Fusion requests of /v1/chat/completions and /v1/responses."""

    def __init__(self, service: RunService, settings: OpenRouterSettings) -> None:
        self.service = service
        self.settings = settings

    @staticmethod
    def maybe(raw: bytes) -> bool:
        """Cheap test first: a plain fusiongraph request is parsed once, as before."""
        return b"openrouter" in raw or b'"plugins"' in raw

    def take(self, request: Request, raw: bytes) -> Taken | None:
        """The request's OpenRouter Fusion parts; None for a plain fusiongraph request (and for
        a body that is not JSON: the usual path answers that)."""
        if not self.maybe(raw):
            return None
        try:
            body = load_json(raw)
        except OpenAIError:
            return None
        if not isinstance(body, dict):
            return None
        ask = FusionAsk(model=str(body.get("model") or ""))
        try:
            found = take_fusion(body)
        except OpenAIError as exc:
            return Taken(body, ask, exc)
        if found is None:
            return None
        depth = request.headers.get(DEPTH_HEADER, "0").strip()
        if found.enabled and depth not in ("", "0"):
            error = OpenAIError(
                400,
                f"this request comes from inside a fusion run ({DEPTH_HEADER}: {depth}): "
                "Fusion cannot be invoked recursively",
                param="model",
                code="recursion",
            )
            return Taken(body, found, error)
        return Taken(body, found)

    async def answer(self, request: Request, taken: Taken, api_key: str | None) -> Response:
        """Answer a Fusion request of either surface; every error in OpenRouter's shape."""
        try:
            if taken.error is not None:
                raise taken.error
            if request.url.path.endswith("/responses"):
                return await self.responses(request, taken.fields, taken.ask, api_key)
            return await self.chat(request, taken.fields, taken.ask, api_key)
        except FusionError as exc:
            return openrouter_error(from_fusion_error(exc))
        except OpenAIError as exc:
            return openrouter_error(exc)

    async def prepare(
        self,
        body: Any,
        ask: FusionAsk,
        *,
        api_key: str | None,
        thread_id: str | None,
        origins: list[str] | None = None,
    ) -> Outcome:
        """Validate and plan: every 400 comes before any model is called."""
        plan = plan_fusion(ask, self.service, self.settings)
        service = dataclasses.replace(self.service, models={ask.model: plan.context})
        run = await service.prepare(body, api_key=api_key, thread_id=thread_id, origins=origins)
        return Outcome(run=run, plan=plan, ask=ask)

    async def direct(self, outcome: Outcome, *, offer_fusion: bool) -> AIMessage:
        """The calling model's own turn (the router's question, or its answer alone)."""
        context = outcome.run.run.context
        tools = context.get("synthesis_tools")
        choice = context.get("tool_choice")  # a named function of the caller's
        if outcome.ask.choice != "auto" and (offer_fusion or tools):
            choice = outcome.ask.choice
        return await ask_calling_model(
            self.settings,
            outcome.plan.calling,
            list(outcome.run.run.messages),
            list(context.get("synthesis_tools") or []),
            choice,
            offer_fusion=offer_fusion,
        )

    async def decide(self, outcome: Outcome) -> AIMessage | None:
        """None: deliberate. Else the calling model's answer without Fusion."""
        ask = outcome.ask
        if not ask.enabled or ask.choice == "none":
            return await self.direct(outcome, offer_fusion=False)
        tools = outcome.run.run.context.get("synthesis_tools")
        if ask.choice == "required" and not tools:
            return None  # forced: the tool is the only one the model may call
        reply = await self.direct(outcome, offer_fusion=True)
        return None if calls_fusion(reply) else reply

    # ------------------------------------------------------------------ chat completions

    async def chat(
        self, request: Request, fields: dict[str, Any], ask: FusionAsk, api_key: str | None
    ) -> Response:
        body = parse_request(json.dumps(fields).encode())
        outcome = await self.prepare(
            body, ask, api_key=api_key, thread_id=request.headers.get(THREAD_HEADER)
        )
        try:
            reply = await self._race(request, self.decide(outcome))
            if outcome.run.run.stream:
                response = await self._chat_stream(request, outcome, reply)
            else:
                final, item = await self._final(request, outcome, reply)
                response = JSONResponse(self._chat_body(final, outcome, item))
        except ClientGone:
            return Response(status_code=499)
        if outcome.run.plan.thread_id:
            response.headers[THREAD_HEADER] = outcome.run.plan.thread_id
        return response

    async def _race(self, request: Request, work: Any) -> Any:
        import asyncio

        task = asyncio.ensure_future(work)
        try:
            gone = await race_disconnect(request, task)
        except BaseException:
            task.cancel()
            raise
        if gone:
            task.cancel()
            raise ClientGone
        return task.result()

    async def _final(
        self, request: Request, outcome: Outcome, reply: AIMessage | None
    ) -> tuple[AIMessage, dict[str, Any] | None]:
        """The final message and the fusion item (None: Fusion was not called)."""
        if reply is not None:
            return reply, None
        try:
            final = await outcome.run.final(request)
        except FusionError as exc:
            failure = failure_of(exc)
            if failure is None:
                raise
            record = exc.details
            item = fusion_item(record, outcome.plan.slugs, iid=outcome.item_id, failure=failure)
            alone = await self._race(request, self.direct(outcome, offer_fusion=False))
            return alone, item
        record = (final.response_metadata or {}).get("fusion") or {}
        return final, fusion_item(record, outcome.plan.slugs, iid=outcome.item_id)

    def _chat_body(
        self, final: AIMessage, outcome: Outcome, item: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = completion_body(
            final, model=outcome.ask.model, cid=completion_id(), created=int(time.time())
        )
        body["system_fingerprint"] = None  # a field OpenRouter's ChatResult requires
        if item is not None:
            body["choices"][0]["message"]["reasoning_details"] = [
                server_tool_detail(item, outcome.call_id)
            ]
        return body

    async def _chat_stream(
        self, request: Request, outcome: Outcome, reply: AIMessage | None
    ) -> Response:
        run = outcome.run.run
        if reply is not None:
            return EventSourceResponse(self._chat_sse_message(outcome, reply, None), sep="\n")
        handle = outcome.run.events()
        try:
            first = await open_stream(handle, False, request)
        except FusionError as exc:
            failure = failure_of(exc)
            if failure is None:
                return openrouter_error(from_fusion_error(exc))
            record = exc.details
            item = fusion_item(record, outcome.plan.slugs, iid=outcome.item_id, failure=failure)
            alone = await self._race(request, self.direct(outcome, offer_fusion=False))
            return EventSourceResponse(self._chat_sse_message(outcome, alone, item), sep="\n")
        except OpenAIError as exc:
            return openrouter_error(exc)
        del run
        return EventSourceResponse(self._chat_sse_run(outcome, handle, first), sep="\n")

    def _writer(self, outcome: Outcome) -> ChunkWriter:
        return ChunkWriter(model=outcome.ask.model, include_usage=outcome.run.run.include_usage)

    async def _chat_sse_message(
        self, outcome: Outcome, message: AIMessage, item: dict[str, Any] | None
    ) -> AsyncIterator[ServerSentEvent]:
        writer = self._writer(outcome)
        yield _data(writer.start())
        if item is not None:
            yield _data(self._detail_chunk(writer, outcome, item))
        for chunk in writer.finish(message):
            yield _data(chunk)
        yield ServerSentEvent(data="[DONE]")

    def _detail_chunk(
        self, writer: ChunkWriter, outcome: Outcome, item: dict[str, Any]
    ) -> dict[str, Any]:
        delta = {"reasoning_details": [server_tool_detail(item, outcome.call_id)]}
        return writer._chunk(delta)

    async def _chat_sse_run(
        self, outcome: Outcome, handle: Pump[RunEvent], first: RunEvent | None
    ) -> AsyncIterator[ServerSentEvent]:
        """The run's tokens as chunks; the fusion call as a reasoning_details delta before the
        finish chunk (the record is complete only when the run is)."""
        writer = self._writer(outcome)
        try:
            try:
                yield _data(writer.start())
                event = first
                while event is not None:
                    if event.kind == "token" and event.chunk is not None:
                        for chunk in writer.token(event.chunk):
                            yield _data(chunk)
                    elif event.kind == "final" and isinstance(event.message, AIMessage):
                        record = (event.message.response_metadata or {}).get("fusion") or {}
                        item = fusion_item(record, outcome.plan.slugs, iid=outcome.item_id)
                        yield _data(self._detail_chunk(writer, outcome, item))
                        for chunk in writer.finish(event.message):
                            yield _data(chunk)
                    event = await anext(handle, None)
            except Exception as exc:
                yield _data(json.loads(openrouter_error(as_error(exc)).body))
            yield ServerSentEvent(data="[DONE]")
        finally:
            await handle.cancel()

    # ------------------------------------------------------------------------ responses

    async def responses(
        self, request: Request, fields: dict[str, Any], ask: FusionAsk, api_key: str | None
    ) -> Response:
        raw = json.dumps(fields).encode()
        body = parse_body(raw, ResponsesRequest, tags=RESPONSES_TAGS, tool_hint=TOOL_HINT)
        history = []
        if body.previous_response_id:
            history = await previous_conversation(
                self.service.graph, body.previous_response_id, api_key
            )
        chat_fields, origins = convert_request(body, history)
        outcome = await self.prepare(
            chat_request(chat_fields, origins),
            ask,
            api_key=api_key,
            thread_id=request.headers.get(THREAD_HEADER),
            origins=origins,
        )
        thread_id = outcome.run.plan.thread_id
        rid = RESPONSE_PREFIX + (thread_id or uuid.uuid4().hex)
        base = response_skeleton(body, rid=rid, model=ask.model, stored=thread_id is not None)
        # Fields OpenRouter's response object requires (OpenAI's has them as optional).
        base.update(completed_at=None, frequency_penalty=None, presence_penalty=None)
        try:
            reply = await self._race(request, self.decide(outcome))
            if outcome.run.run.stream:
                response = await self._responses_stream(request, outcome, base, reply)
            else:
                final, item = await self._final(request, outcome, reply)
                output = ([item] if item is not None else []) + output_items(final)
                done = {**finished(base, output, final), "completed_at": int(time.time())}
                response = JSONResponse(done)
        except ClientGone:
            return Response(status_code=499)
        if thread_id:
            response.headers[THREAD_HEADER] = thread_id
        return response

    async def _responses_stream(
        self, request: Request, outcome: Outcome, base: dict[str, Any], reply: AIMessage | None
    ) -> Response:
        writer = FusionStreamWriter(base, outcome)
        if reply is not None:
            return EventSourceResponse(_plain_events(writer, reply), sep="\n")
        outcome.run.run.progress = True  # the panel's progress becomes fusion_call events
        handle = outcome.run.events()
        try:
            first = await open_stream(handle, True, request)
        except FusionError as exc:
            failure = failure_of(exc)
            if failure is None:
                return openrouter_error(from_fusion_error(exc))
            item = fusion_item(
                exc.details, outcome.plan.slugs, iid=outcome.item_id, failure=failure
            )
            alone = await self._race(request, self.direct(outcome, offer_fusion=False))
            return EventSourceResponse(_failed_events(writer, item, alone), sep="\n")
        except OpenAIError as exc:
            return openrouter_error(exc)
        return EventSourceResponse(self._responses_sse(outcome, writer, handle, first), sep="\n")

    async def _responses_sse(
        self,
        outcome: Outcome,
        writer: FusionStreamWriter,
        handle: Pump[RunEvent],
        first: RunEvent | None,
    ) -> AsyncIterator[ServerSentEvent]:
        """The run as Responses events: the fusion item first (its panel and analysis events
        as the run goes), then the answer's message item."""
        try:
            try:
                for sse in writer.start() + writer.fusion_start():
                    yield sse
                event = first
                while event is not None:
                    if event.kind == "progress" and event.progress:
                        for sse in writer.progress(event.progress):
                            yield sse
                    elif event.kind == "token" and event.chunk is not None:
                        for sse in writer.token(event.chunk):
                            yield sse
                    elif event.kind == "final" and isinstance(event.message, AIMessage):
                        for sse in writer.finish(event.message):
                            yield sse
                    event = await anext(handle, None)
            except FusionError as exc:
                failure = failure_of(exc)
                if failure is None:
                    raise
                item = fusion_item(
                    exc.details, outcome.plan.slugs, iid=outcome.item_id, failure=failure
                )
                for sse in writer.fusion_done(item):
                    yield sse
                alone = await self.direct(outcome, offer_fusion=False)
                for sse in writer.finish(alone):
                    yield sse
        except Exception as exc:
            for sse in writer.fail(as_error(exc)):
                yield sse
        finally:
            await handle.cancel()


class FusionStreamWriter(ResponseStreamWriter):
    """The Responses stream of an OpenRouter Fusion run: OpenAI's events for the answer, and
    before them the `openrouter:fusion` item with its `response.fusion_call.*` events (the
    SDK's FusionCall*Event): in_progress, panel.added / panel.failed as panelists start and
    fail, analysis.in_progress when the judge starts; panel.completed, analysis.completed and
    completed once the run's record holds the answers and the analysis."""

    def __init__(self, base: dict[str, Any], outcome: Outcome) -> None:
        super().__init__(base)
        self.outcome = outcome
        self.fusion_index: int | None = None

    def _fusion(self, kind: str, **data: Any) -> ServerSentEvent:
        return self._event(
            f"response.fusion_call.{kind}",
            item_id=self.outcome.item_id,
            output_index=self.fusion_index,
            **data,
        )

    def fusion_start(self) -> list[ServerSentEvent]:
        item = {"id": self.outcome.item_id, "type": TOOL_TYPE, "status": "in_progress"}
        self.items.append(item)
        self.fusion_index = len(self.items) - 1
        return [
            self._event("response.output_item.added", output_index=self.fusion_index, item=item),
            self._fusion("in_progress"),
        ]

    def progress(self, progress: dict[str, Any]) -> list[ServerSentEvent]:
        if self.fusion_index is None:
            return []
        names = self.outcome.plan.slugs
        kind = progress.get("event")
        panelist = str(progress.get("panelist", ""))
        if kind == "panelist_started":
            return [self._fusion("panel.added", model=names.get(panelist, panelist))]
        if kind == "panelist_failed":
            error = f"{progress.get('reason')}: {progress.get('message') or ''}".rstrip(": ")
            extra = {}
            status = _STATUS_OF_REASON.get(str(progress.get("reason")))
            if status is not None:
                extra["status_code"] = status
            return [
                self._fusion(
                    "panel.failed", model=names.get(panelist, panelist), error=error, **extra
                )
            ]
        if kind == "judge_started":
            analyst = self.outcome.plan.analyst
            return [
                self._fusion("analysis.in_progress", analyst_model=analyst, judge_model=analyst)
            ]
        return []

    def fusion_done(self, item: dict[str, Any]) -> list[ServerSentEvent]:
        if self.fusion_index is None:
            return []
        out = [
            self._fusion("panel.completed", model=r["model"], content=r.get("content", ""))
            for r in item.get("responses") or []
        ]
        if "analysis" in item:
            out.append(self._fusion("analysis.completed", analysis=item["analysis"]))
        out.append(self._fusion("completed"))
        self.items[self.fusion_index] = item
        out.append(
            self._event("response.output_item.done", output_index=self.fusion_index, item=item)
        )
        self.fusion_index = None
        return out

    def finish(self, message: AIMessage) -> list[ServerSentEvent]:
        """The answer's remaining events; the fusion item is done before response.completed."""
        out = super().finish(message)
        if self.fusion_index is None:
            return out
        out.pop()  # response.completed, written again once the fusion item is done
        self.sequence -= 1
        record = (message.response_metadata or {}).get("fusion") or {}
        item = fusion_item(record, self.outcome.plan.slugs, iid=self.outcome.item_id)
        out += self.fusion_done(item)
        out.append(
            self._event("response.completed", response=finished(self.base, self.items, message))
        )
        return out


async def _plain_events(
    writer: ResponseStreamWriter, message: AIMessage
) -> AsyncIterator[ServerSentEvent]:
    """The calling model's answer without Fusion, as Responses events."""
    for sse in writer.start() + writer.finish(message):
        yield sse


async def _failed_events(
    writer: FusionStreamWriter, item: dict[str, Any], message: AIMessage
) -> AsyncIterator[ServerSentEvent]:
    """A Fusion call that failed before its stream opened, then the calling model's answer."""
    for sse in writer.start() + writer.fusion_start() + writer.fusion_done(item):
        yield sse
    for sse in writer.finish(message):
        yield sse


def _data(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
