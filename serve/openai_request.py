"""Read an OpenAI chat-completions request: validate it and turn it into messages and a context.

Validation happens here, before any model is called, so a bad request is a 400 naming the
offending parameter (`messages[2].role`, `tools[0]`, `fusion.panel`) rather than a failure deep
inside a run or, worse, an error event after a stream has already started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusiongraph.graph.config import FusionContext
from fusiongraph.serve.openai_errors import bad_request

# What a request's `fusion` object may set. Left out on purpose: settings that would let a caller
# reach the server's files or network (corpus_dir, searxng_url, fetch_allow_private) and the
# synthesis settings that have their own top-level OpenAI parameters (temperature, max_tokens,
# tools, tool_choice). Operators configure the rest through aliases.
REQUEST_OVERRIDES = frozenset(
    {
        "panel",
        "judge",
        "synthesizer",
        "tool_mode",
        "max_tool_calls",
        "panel_max_tokens",
        "panel_timeout_s",
        "quorum",
        "straggler_grace_s",
        "deadline_s",
        "judge_input_chars",
        "include_raw_answers",
        "search_provider",
        "max_cost_usd",
        "prices",
    }
)
# Server-side options in the `fusion` object that are not part of the run's context.
REQUEST_OPTIONS = frozenset({"progress"})
# A model spec object from a request may not choose the endpoint or the key: the server's keys
# would otherwise go wherever the caller points them.
_SPEC_FORBIDDEN = ("base_url", "api_key_env")


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The parameters we act on; other OpenAI ones (top_p, user, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Any]
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    response_format: dict[str, Any] | None = None
    fusion: dict[str, Any] | None = None


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """Malformed JSON and wrong types are 400s with `param` set, like OpenAI's own."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or None
        raise bad_request(f"{param}: {err['msg']}", param) from None
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", "n")
    fmt = (request.response_format or {}).get("type", "text")
    if fmt != "text":
        raise bad_request(
            f"response_format {fmt!r} is not supported; use tools instead", "response_format"
        )
    return request


def _text_parts(content: list[Any], param: str, *, allow_images: bool) -> str | list[Any]:
    """Join text parts into a string (what every model accepts); keep images as OpenAI parts."""
    parts: list[Any] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        elif kind == "image_url" and allow_images and isinstance(part.get("image_url"), dict):
            parts.append(part)
        else:
            raise bad_request(f"unsupported content part {kind!r}", f"{param}[{i}]")
    if all(isinstance(p, str) for p in parts):
        return "\n".join(parts)
    return [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]


def _content(
    message: dict[str, Any], param: str, *, required: bool, allow_images: bool = False
) -> str | list[Any]:
    content = message.get("content")
    if content is None and not required:
        return ""
    if isinstance(content, str):
        value: str | list[Any] = content
    elif isinstance(content, list):
        value = _text_parts(content, f"{param}.content", allow_images=allow_images)
    else:
        raise bad_request("content must be a string or a list of content parts", f"{param}.content")
    if required and not (value.strip() if isinstance(value, str) else value):
        raise bad_request("content is empty", f"{param}.content")
    return value


def _tool_calls(raw: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise bad_request("tool_calls must be a list", param)
    calls = []
    for j, call in enumerate(raw):
        where = f"{param}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request("a tool call needs function.name", where)
        if not isinstance(call.get("id"), str):
            raise bad_request("a tool call needs an id", f"{where}.id")
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise bad_request(
                "function.arguments must be a JSON object (as a string)",
                f"{where}.function.arguments",
            )
        calls.append(
            {"name": function["name"], "args": args, "id": call["id"], "type": "tool_call"}
        )
    return calls


def convert_messages(raw: list[Any]) -> list[AnyMessage]:
    """OpenAI messages -> LangChain messages (system/developer, user, assistant, tool)."""
    if not raw:
        raise bad_request(
            "messages is empty; send at least one user message", "messages", code="invalid_input"
        )
    out: list[AnyMessage] = []
    for i, message in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request("a message must be an object", param)
        role = message.get("role")
        name = message.get("name") if isinstance(message.get("name"), str) else None
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_content(message, param, required=True), name=name))
        elif role == "user":
            out.append(
                HumanMessage(
                    content=_content(message, param, required=True, allow_images=True), name=name
                )
            )
        elif role == "assistant":
            calls = (
                _tool_calls(message["tool_calls"], f"{param}.tool_calls")
                if message.get("tool_calls")
                else []
            )
            out.append(
                AIMessage(
                    content=_content(message, param, required=not calls),
                    tool_calls=calls,
                    name=name,
                )
            )
        elif role == "tool":
            if not isinstance(message.get("tool_call_id"), str):
                raise bad_request("a tool message needs tool_call_id", f"{param}.tool_call_id")
            out.append(
                ToolMessage(
                    content=_content(message, param, required=False),
                    tool_call_id=message["tool_call_id"],
                    name=name,
                )
            )
        else:
            raise bad_request(
                f"unsupported role {role!r}; use system, developer, user, assistant or tool",
                f"{param}.role",
            )
    return out


def _check_tools(tools: list[Any]) -> list[dict[str, Any]]:
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise bad_request(
                'a tool must be {"type": "function", "function": {"name": ...}}', f"tools[{i}]"
            )
    return tools


def _check_tool_choice(choice: str | dict[str, Any], tools: list[Any] | None) -> None:
    if not tools:
        raise bad_request("tool_choice is only allowed when tools are given", "tool_choice")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_request(
                "tool_choice must be none, auto, required or a function", "tool_choice"
            )
        return
    name = (choice.get("function") or {}).get("name")
    names = {t["function"]["name"] for t in tools}
    if choice.get("type") != "function" or name not in names:
        raise bad_request("tool_choice must name one of the given tools", "tool_choice")


def _check_spec(spec: Any, param: str) -> None:
    if isinstance(spec, dict):
        for key in _SPEC_FORBIDDEN:
            if key in spec:
                raise bad_request(
                    f"{key} cannot be set per request; configure an alias on the server",
                    f"{param}.{key}",
                    code="invalid_config",
                )


def fusion_overrides(fusion: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the request's `fusion` object into context overrides and server options."""
    context, options = {}, {}
    for key, value in fusion.items():
        if key in REQUEST_OPTIONS:
            options[key] = value
        elif key in REQUEST_OVERRIDES:
            context[key] = value
        elif key in FusionContext.__dataclass_fields__:
            raise bad_request(
                f"{key} cannot be set per request", f"fusion.{key}", code="invalid_config"
            )
        else:
            raise bad_request(
                f"unknown fusion setting {key!r}", f"fusion.{key}", code="invalid_config"
            )
    if isinstance(context.get("panel"), list):
        for i, spec in enumerate(context["panel"]):
            _check_spec(spec, f"fusion.panel[{i}]")
    for key in ("judge", "synthesizer"):
        _check_spec(context.get(key), f"fusion.{key}")
    if not isinstance(options.get("progress", False), bool):
        raise bad_request("progress must be true or false", "fusion.progress")
    return context, options


@dataclass
class RunRequest:
    """Everything one chat-completions call asks of the graph."""

    model: str
    messages: list[AnyMessage]
    context: dict[str, Any]
    stream: bool
    include_usage: bool
    progress: bool


def build_run(request: ChatCompletionRequest, base_context: dict[str, Any]) -> RunRequest:
    """Combine the model's configuration, the `fusion` overrides and the OpenAI parameters."""
    messages = convert_messages(request.messages)
    overrides, options = fusion_overrides(request.fusion or {})
    context = {**base_context, **overrides}
    if request.tools:
        context["synthesis_tools"] = _check_tools(request.tools)
    if request.tool_choice is not None:
        _check_tool_choice(request.tool_choice, request.tools)
        context["tool_choice"] = request.tool_choice
    if request.temperature is not None:
        context["temperature"] = request.temperature
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        context["max_tokens"] = max_tokens
    return RunRequest(
        model=request.model,
        messages=messages,
        context=context,
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        progress=options.get("progress", False),
    )
