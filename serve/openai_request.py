"""Read an OpenAI chat-completions request: validate it and turn it into messages and a context.

Validation happens here, before any model is called, so a bad request is a 400 naming the
offending parameter (`messages[2].role`, `tools[0]`, `fusion.panel`) rather than a failure deep
inside a run or, worse, an error event after a stream has already started.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusiongraph.graph.config import CONTEXT_FIELDS, MAX_PANEL
from fusiongraph.graph.specs import MAX_PRICE_PER_MTOK
from fusiongraph.nodes.messages import MEDIA_BLOCKS, is_utf8
from fusiongraph.serve.openai_errors import OpenAIError, bad_request

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
# Time limits below this can never be met by any model; refusing them (400) beats a certain 504.
MIN_TIMEOUT_S = 1.0
LIMIT_CODE = "limit_exceeded"
# How deeply a request's JSON may nest (a fixed limit, not an operator setting). json.loads only
# stops near Python's recursion limit (~1000 levels), but the run walks the same values again with
# recursive code (dataclasses.asdict, pydantic, copy.deepcopy, json.dumps to every upstream) from
# deeper in the stack: 700 levels inside a tool's parameters were a 500. Real requests stay far
# below: a tool's JSON schema is rarely 20 levels deep.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server; each breach is a 400 naming the limit (a 408 for
    a body that does not arrive within body_timeout_s).

    Defaults, each overridable by `create_app(limits=...)` or the environment variable
    FUSIONGRAPH_<NAME IN CAPITALS> (e.g. FUSIONGRAPH_MAX_BODY_BYTES). Settings the operator put
    in an alias are trusted; only what the request itself sends is checked.
    """

    max_body_bytes: int = 1024 * 1024
    max_messages: int = 512
    max_panel: int = MAX_PANEL
    max_tokens: int = 32_768
    max_tool_calls: int = 16
    # Seconds for the whole body to arrive: a client that announces more than it sends, or
    # trickles it, would otherwise hold a connection (and its memory) for as long as it likes.
    body_timeout_s: float = 10

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) < 1:
                raise ValueError(f"limit {item.name} must be at least 1")
        if self.max_panel > MAX_PANEL:
            raise ValueError(f"max_panel cannot exceed {MAX_PANEL}, the graph's own limit")
        if self.max_tool_calls > 16:
            raise ValueError("max_tool_calls cannot exceed 16, the graph's own limit")

    @classmethod
    def from_env(cls) -> RequestLimits:
        values = {}
        for item in fields(cls):
            raw = os.environ.get(f"FUSIONGRAPH_{item.name.upper()}", "").strip()
            if raw:
                if not raw.isdigit():
                    raise ValueError(f"FUSIONGRAPH_{item.name.upper()} must be a whole number")
                values[item.name] = int(raw)
        return cls(**values)


def limit_error(param: str | None, what: str, limit: str, value: int | float) -> OpenAIError:
    """A 400 that names the limit, its value and the offending parameter."""
    return OpenAIError(
        400,
        f"{what} is over the server's limit {limit} = {value}",
        param=param,
        code=LIMIT_CODE,
        extra={"limit": limit, "limit_value": value},
    )


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int, timeout_s: float
) -> bytes:
    """The request body, refused as soon as it (or its announced length) passes `limit` bytes,
    and a 408 when all of it has not arrived within `timeout_s`."""
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise limit_error(
            None, f"the request body ({content_length} bytes)", "max_body_bytes", limit
        )
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise limit_error(None, "the request body", "max_body_bytes", limit)
    except TimeoutError:
        raise OpenAIError(
            408,
            f"the request body did not arrive within {timeout_s:g} s "
            f"(body_timeout_s; {len(body)} bytes came)",
            code="body_timeout",
            extra={"limit": "body_timeout_s", "limit_value": timeout_s},
        ) from None
    return bytes(body)


def _number(value: Any) -> float | None:
    """A numeric setting as the configuration will read it (pydantic accepts "16" too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_spec_limits(spec: Any, param: str, limits: RequestLimits) -> None:
    if not isinstance(spec, dict):
        return
    for key, limit in (
        ("max_tokens", limits.max_tokens),
        ("max_tool_calls", limits.max_tool_calls),
    ):
        value = _number(spec.get(key))
        if value is not None and value > limit:
            raise limit_error(f"{param}.{key}", key, key, limit)
    timeout = _number(spec.get("timeout_s"))
    if timeout is not None and timeout < MIN_TIMEOUT_S:
        raise bad_request(
            f"timeout_s must be at least {MIN_TIMEOUT_S} s", f"{param}.timeout_s", LIMIT_CODE
        )


def check_limits(
    request: ChatCompletionRequest, overrides: dict[str, Any], limits: RequestLimits
) -> None:
    """Message count, panel size, max_tokens and tool steps of one request."""
    if len(request.messages) > limits.max_messages:
        raise limit_error(
            "messages", f"{len(request.messages)} messages", "max_messages", limits.max_messages
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and value > limits.max_tokens:
            raise limit_error(name, name, "max_tokens", limits.max_tokens)
    panel = overrides.get("panel")
    if isinstance(panel, list):
        if len(panel) > limits.max_panel:
            raise limit_error(
                "fusion.panel", f"a panel of {len(panel)}", "max_panel", limits.max_panel
            )
        for i, spec in enumerate(panel):
            _check_spec_limits(spec, f"fusion.panel[{i}]", limits)
    for key in ("judge", "synthesizer"):
        _check_spec_limits(overrides.get(key), f"fusion.{key}", limits)
    for key, limit, name in (
        ("panel_max_tokens", limits.max_tokens, "max_tokens"),
        ("max_tool_calls", limits.max_tool_calls, "max_tool_calls"),
    ):
        value = _number(overrides.get(key))
        if value is not None and value > limit:
            raise limit_error(f"fusion.{key}", key, name, limit)
    for key in ("panel_timeout_s", "deadline_s"):
        value = _number(overrides.get(key))
        if value is not None and value < MIN_TIMEOUT_S:
            raise bad_request(
                f"{key} must be at least {MIN_TIMEOUT_S} s: no model answers sooner",
                f"fusion.{key}",
                LIMIT_CODE,
            )


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


def _union_tag(part: Any) -> bool:
    """pydantic names the member of a union it tried (`tool_choice.str`): not a parameter."""
    text = str(part)
    return text.startswith("function-") or "[" in text or text in ("str", "int", "float", "bool")


class _NotJson:
    """What `NaN`, `Infinity` and `-Infinity` parse to: Python's json module reads them, but they
    are not JSON (RFC 8259), and no upstream or JSON response can carry them."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


# A place in a parsed body: (parent, key), linked, so the walker builds a name only on failure.
_Path = tuple[Any, str | int] | None


def _label(key: str | int) -> str | int:
    """A key as an error may quote it: encodable, and short enough to read."""
    if isinstance(key, int):
        return key
    text = key.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 64 else text[:61] + "..."


def _param(path: _Path) -> str | None:
    """`tools[0].function.parameters` for a linked path; None for the body itself."""
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(_label(key))
    name = ""
    for key in reversed(keys):
        name += f"[{key}]" if isinstance(key, int) else (f".{key}" if name else key)
    return name or None


def _leaf_problem(value: Any) -> str | None:
    """What makes a leaf impossible to carry: a non-JSON number, or text UTF-8 refuses."""
    if isinstance(value, _NotJson):
        return f"{value.literal} is not a JSON number (RFC 8259)"
    if isinstance(value, float) and not math.isfinite(value):
        return "the number is too large (it reads as infinity)"
    if isinstance(value, str) and not is_utf8(value):
        return "text that is not valid Unicode (a lone surrogate such as \\ud800)"
    return None


def _invalid(path: _Path, problem: str) -> OpenAIError:
    param = _param(path)
    return bad_request(f"{param or 'the request body'}: {problem}", param, code="invalid_json")


def check_json_values(value: Any, root: str | None = None) -> None:
    """Walk a parsed JSON value once, iteratively (deep input cannot exhaust the stack here),
    refusing nesting past MAX_JSON_DEPTH, non-finite numbers and lone surrogates in keys or text,
    each a 400 naming where it was found, below `root` when given."""
    stack: list[tuple[Any, _Path, int]] = [(value, None if root is None else (None, root), 1)]
    while stack:
        item, path, depth = stack.pop()
        if not isinstance(item, dict | list):
            problem = _leaf_problem(item)
            if problem:
                raise _invalid(path, problem)
            continue
        if depth > MAX_JSON_DEPTH:
            raise limit_error(_param(path), "the JSON nesting", "max_json_depth", MAX_JSON_DEPTH)
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if isinstance(key, str) and not is_utf8(key):
                raise _invalid((path, key), "a key that is not valid Unicode (a lone surrogate)")
            stack.append((child, (path, key), depth + 1))


def load_json(raw: str | bytes, where: str | None = None) -> Any:
    """json.loads, checked by check_json_values; every failure is a 400 naming `where` (the
    parameter the text came from; None for the request body) or the offending path."""
    what = where or "the request body"
    try:
        value = json.loads(raw, parse_constant=_NotJson)
    except RecursionError:
        raise limit_error(
            where, f"the JSON nesting of {what}", "max_json_depth", MAX_JSON_DEPTH
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"{what} is not valid JSON: {exc}", where, code="invalid_json") from None
    except ValueError as exc:  # an integer past Python's 4300-digit limit
        reason = str(exc).split(";")[0]
        raise bad_request(
            f"{what} holds a number too long to read: {reason}", where, code="invalid_json"
        ) from None
    check_json_values(value, where)
    return value


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """Malformed JSON and wrong types are 400s with `param` set, like OpenAI's own."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not _union_tag(p)) or None
        raise bad_request(f"{param}: {err['msg']}", param) from None
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", "n")
    fmt = (request.response_format or {}).get("type", "text")
    if fmt != "text":
        raise bad_request(
            f"response_format {fmt!r} is not supported; use tools instead", "response_format"
        )
    return request


def _text_parts(content: list[Any], param: str) -> str:
    """Join text parts into a string, what every model accepts. Images, audio and files are
    refused rather than dropped or forwarded: no panelist reads them yet, and forwarding an image
    URL had every panelist's provider fetch wherever it pointed."""
    parts: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        elif isinstance(kind, str) and kind in MEDIA_BLOCKS:
            raise bad_request(
                f"{kind} content is not supported yet: images, audio and files cannot be sent, "
                "only text",
                f"{param}[{i}]",
                code="unsupported_content",
            )
        else:
            raise bad_request(f"unsupported content part {kind!r}", f"{param}[{i}]")
    return "\n".join(parts)


def _content(message: dict[str, Any], param: str, *, required: bool) -> str:
    content = message.get("content")
    if content is None and not required:
        return ""
    if isinstance(content, str):
        value = content
    elif isinstance(content, list):
        value = _text_parts(content, f"{param}.content")
    else:
        raise bad_request("content must be a string or a list of content parts", f"{param}.content")
    if required and not value.strip():
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
        param_args = f"{where}.function.arguments"
        args = load_json(arguments, param_args) if isinstance(arguments, str) else arguments
        if not isinstance(args, dict):
            raise bad_request("function.arguments must be a JSON object (as a string)", param_args)
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
            out.append(HumanMessage(content=_content(message, param, required=True), name=name))
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
        elif key in CONTEXT_FIELDS:
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


def build_run(
    request: ChatCompletionRequest,
    base_context: dict[str, Any],
    limits: RequestLimits | None = None,
) -> RunRequest:
    """Combine the model's configuration, the `fusion` overrides and the OpenAI parameters."""
    overrides, options = fusion_overrides(request.fusion or {})
    check_limits(request, overrides, limits or RequestLimits())
    messages = convert_messages(request.messages)
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


# ------------------------------------------------------------------------- the OpenAPI schema


_PRICE_PER_MTOK = {"type": "number", "minimum": 0, "maximum": MAX_PRICE_PER_MTOK}
_PRICE_SCHEMA = {
    "type": "object",
    "required": ["input", "output"],
    "description": "USD per million tokens",
    "properties": {"input": _PRICE_PER_MTOK, "output": _PRICE_PER_MTOK},
}


def _spec_schema(limits: RequestLimits) -> dict[str, Any]:
    """A model spec a request may send: a string, or an object without base_url/api_key_env."""
    optional = {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "seed": {"type": "integer"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": limits.max_tokens},
        "timeout_s": {"type": "number", "minimum": MIN_TIMEOUT_S},
        "tool_mode": {"type": "string", "enum": ["agentic", "prefetch", "off"]},
        "max_tool_calls": {"type": "integer", "minimum": 1, "maximum": limits.max_tool_calls},
        "structured_output": {
            "type": "string",
            "enum": ["json_schema", "json_object_schema", "function_calling", "prompt"],
        },
        "price": _PRICE_SCHEMA,
    }
    return {
        "anyOf": [
            {"type": "string", "description": "provider:model, e.g. openai:gpt-5.5"},
            {
                "type": "object",
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "minLength": 1},
                    "provider": {
                        "type": "string",
                        "enum": ["openai", "openrouter", "anthropic", "local", "openai_compatible"],
                    },
                    **{key: _nullable(value) for key, value in optional.items()},
                },
            },
        ]
    }


def request_body_schema(models: list[str], limits: RequestLimits) -> dict[str, Any]:
    """The JSON schema of a chat-completions request as this server reads it (for OpenAPI)."""
    spec = _spec_schema(limits)
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    }
    text = {"type": "string", "pattern": "\\S", "description": "not empty"}
    content = {"anyOf": [text, {"type": "array", "minItems": 1, "items": text_part}]}
    tool_call = {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {
                    "name": {"type": "string"},
                    "arguments": {"type": "string", "description": "a JSON object, as a string"},
                },
            },
        },
    }

    def role(names: list[str], required: list[str], **properties: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["role", *required],
            "properties": {
                "role": {"type": "string", "enum": names},
                "name": {"type": "string"},
                **properties,
            },
        }

    message = {
        "description": "The conversation must hold a user message and end with a user or tool "
        "message.",
        "anyOf": [
            role(["system", "developer", "user"], ["content"], content=content),
            role(
                ["assistant"],
                [],
                content={"anyOf": [text, {"type": "null"}]},
                tool_calls={"type": "array", "items": tool_call},
            ),
            role(
                ["tool"],
                ["tool_call_id"],
                tool_call_id={"type": "string"},
                content={"type": "string"},
            ),
        ],
    }
    tool = {
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "parameters": {"type": "object"},
                },
            },
        },
    }
    tokens = {"type": "integer", "minimum": 1, "maximum": limits.max_tokens}
    positive = {"type": "number", "exclusiveMinimum": 0}
    fusion = {
        "type": "object",
        "additionalProperties": False,
        "description": "Per-request fusion settings (see the README's configuration table).",
        "properties": {
            "panel": {"type": "array", "minItems": 1, "maxItems": limits.max_panel, "items": spec},
            "judge": spec,
            "synthesizer": spec,
            "tool_mode": {"type": "string", "enum": ["agentic", "prefetch", "off"]},
            "max_tool_calls": {"type": "integer", "minimum": 1, "maximum": limits.max_tool_calls},
            "panel_max_tokens": tokens,
            "panel_timeout_s": {"type": "number", "minimum": MIN_TIMEOUT_S},
            "quorum": {"type": "integer", "minimum": 1, "maximum": limits.max_panel},
            "straggler_grace_s": {"type": "number", "minimum": 0},
            "deadline_s": {"type": "number", "minimum": MIN_TIMEOUT_S},
            "judge_input_chars": {"type": "integer", "minimum": 200},
            "include_raw_answers": {"type": "boolean"},
            "search_provider": {
                "type": "string",
                "enum": ["auto", "tavily", "duckduckgo", "searxng", "corpus", "none"],
            },
            "max_cost_usd": positive,
            "prices": {
                "type": "object",
                "additionalProperties": _PRICE_SCHEMA,
            },
            "progress": {"type": "boolean"},
        },
    }
    body: dict[str, Any] = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "enum": models},
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_messages,
                "items": message,
            },
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "tools": {"type": "array", "items": tool},
            "tool_choice": {
                "anyOf": [
                    {"type": "string", "enum": ["none", "auto", "required"]},
                    {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"type": "string", "enum": ["function"]},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                ]
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "n": {"type": "integer", "enum": [1]},
            "response_format": {
                "type": "object",
                "properties": {"type": {"type": "string", "enum": ["text"]}},
            },
            "fusion": fusion,
        },
    }
    # Optional parameters may be sent as null (SDKs do), which means "not set".
    for key in _NULLABLE:
        body["properties"][key] = _nullable(body["properties"][key])
    for key, value in fusion["properties"].items():
        if key != "progress":
            fusion["properties"][key] = _nullable(value)
    return body


_NULLABLE = (
    "stream_options",
    "tools",
    "tool_choice",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "response_format",
    "fusion",
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}
