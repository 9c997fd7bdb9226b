"""Read an OpenAI chat-completions request: validate it and turn it into messages and a context.

Validation happens here, before any model is called, so a bad request is a 400 naming the
offending parameter (`messages[2].role`, `tools[0]`, `fusion.panel`) rather than a failure deep
inside a run or, worse, an error event after a stream has already started.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.messages import SystemMessage as LCSystemMessage
from langchain_core.messages import ToolMessage as LCToolMessage
from pydantic import BaseModel, ValidationError

from fusiongraph.graph.config import MODEL_FIELDS, FusionContext
from fusiongraph.graph.errors import FusionError, field_path
from fusiongraph.graph.limits import MAX_PANEL, MAX_TOOL_CALLS
from fusiongraph.graph.providers import OBJECT_PROVIDER
from fusiongraph.nodes.images import MAX_IMAGES, check_image
from fusiongraph.nodes.messages import is_utf8
from fusiongraph.serve.openai_errors import OpenAIError, bad_request
from fusiongraph.serve.openai_protocol import (
    DISCRIMINATOR_TAGS,
    REQUEST_OPTIONS,
    SPEC_FORBIDDEN,
    AssistantMessage,
    ChatCompletionRequest,
    Content,
    ImagePart,
    MediaPart,
    Message,
    NamedToolChoice,
    TextPart,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
    fusion_options_model,
    openapi_schema,
)

# Time limits below this can never be met by any model; refusing them (400) beats a certain 504.
MIN_TIMEOUT_S = 1.0
LIMIT_CODE = "limit_exceeded"
ModelT = TypeVar("ModelT", bound=BaseModel)
# How deeply a request's JSON may nest (a fixed limit, not an operator setting). json.loads only
# stops near Python's recursion limit (~1000 levels), but the run walks the same values again with
# recursive code (dataclasses.asdict, pydantic, copy.deepcopy, json.dumps to every upstream) from
# deeper in the stack: 700 levels inside a tool's parameters were a 500. Real requests stay far
# below: a tool's JSON schema is rarely 20 levels deep.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server; each breach is a 400 naming the limit (a 408 for
    a body that does not arrive within body_timeout_s, a 431 for a header over max_header_bytes).

    Defaults, each overridable by `create_app(limits=...)` or the environment variable
    FUSIONGRAPH_<NAME IN CAPITALS> (e.g. FUSIONGRAPH_MAX_BODY_BYTES). Settings the operator put
    in an alias are trusted; only what the request itself sends is checked.
    """

    max_body_bytes: int = 1024 * 1024
    max_messages: int = 512
    max_panel: int = MAX_PANEL
    max_tokens: int = 32_768
    max_tool_calls: int = MAX_TOOL_CALLS
    # Seconds for the whole body to arrive: a client that announces more than it sends, or
    # trickles it, would otherwise hold a connection (and its memory) for as long as it likes.
    body_timeout_s: float = 10
    # The request line and header fields together (every route; a breach is a 431,
    # serve/request_guards.py): real clients send a few KiB, cookies and tokens included.
    max_header_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) < 1:
                raise ValueError(f"limit {item.name} must be at least 1")
        if self.max_panel > MAX_PANEL:
            raise ValueError(f"max_panel cannot exceed {MAX_PANEL}, the graph's own limit")
        if self.max_tool_calls > MAX_TOOL_CALLS:
            raise ValueError(
                f"max_tool_calls cannot exceed {MAX_TOOL_CALLS}, the graph's own limit"
            )

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
    for key in MODEL_FIELDS:
        _check_spec_limits(overrides.get(key), f"fusion.{key}", limits)
    for key, limit, name in (
        ("panel_max_tokens", limits.max_tokens, "max_tokens"),
        ("max_tool_calls", limits.max_tool_calls, "max_tool_calls"),
        ("judge_max_tool_calls", limits.max_tool_calls, "max_tool_calls"),
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
    parameter the text came from; None for the request body) or the offending path.

    A body that starts with a UTF-8 byte order mark is read without it. RFC 8259 forbids senders
    to add one but lets parsers ignore it, and the mark carries nothing: files saved by Windows
    tools (PowerShell 5's `Out-File -Encoding UTF8`, Notepad) start with it and reach the server
    through `curl -d @file`. Refusing them would turn a harmless byte into a failed request.
    Bytes are read as UTF-8 only, as RFC 8259 requires between systems (json.loads alone would
    also take UTF-16 and UTF-32)."""
    what = where or "the request body"
    try:
        if isinstance(raw, bytes):
            raw = raw.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogatepass")
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


def error_param(err: Any, tags: frozenset[str] = DISCRIMINATOR_TAGS) -> str | None:
    """The parameter a pydantic error is about, as OpenAI names it (`messages[2].role`): without
    the union members and discriminator `tags` pydantic adds to the location."""
    parts: list[str | int] = []
    for part in err["loc"]:
        tag = isinstance(part, str) and bool(parts) and isinstance(parts[-1], int)
        member = isinstance(part, str) and (
            part.startswith(("function-", "literal[", "list[", "dict["))
            or part in ("str", "int", "float", "bool")
            or part[:1].isupper()  # a model of a union (NamedToolChoice)
        )
        if not member and not (tag and part in tags):
            parts.append(part)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
    if len(parts) >= 2 and parts[0] == "tools" and isinstance(parts[1], int):
        parts = parts[:2]  # a tool is right or wrong as a whole
    return field_path(parts) or None


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """A chat-completions request body (parse_body)."""
    return parse_body(
        raw,
        ChatCompletionRequest,
        tags=DISCRIMINATOR_TAGS,
        tool_hint='{"type": "function", "function": {"name": ...}}',
    )


def parse_body(raw: bytes, model: type[ModelT], *, tags: frozenset[str], tool_hint: str) -> ModelT:
    """A request body of any API surface: malformed JSON (load_json: depth, non-JSON numbers,
    lone surrogates) and wrong types are 400s with `param` set, like OpenAI's own; `tags` are
    the discriminator values of `model`'s unions, `tool_hint` what a tool must look like."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = error_param(err, tags)
        message = err["msg"].removeprefix("Value error, ")
        if param and param.startswith("tools["):
            message = f"a tool must be {tool_hint}"
        raise bad_request(f"{param}: {message}" if param else message, param) from None


def _content(
    content: Content | None, param: str, *, images: bool = False
) -> str | list[dict[str, Any]]:
    """Text parts joined into a string, what every model accepts; with an image (allowed in user
    messages only) the parts as a list of text and image_url parts. Each image is checked here,
    a 400 naming it (nodes/images.py: scheme, size, a non-public host); audio and files are
    refused rather than dropped or forwarded."""
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if isinstance(part, MediaPart):
            raise bad_request(
                f"{part.type} content is not supported: audio and files cannot be sent, only "
                "text and images",
                where,
                code="unsupported_content",
            )
        if isinstance(part, ImagePart):
            if not images:
                raise bad_request(
                    "images are accepted in user messages only", where, "unsupported_content"
                )
            image = {"url": part.image_url.url}
            if part.image_url.detail is not None:
                image["detail"] = part.image_url.detail
            block = {"type": "image_url", "image_url": image}
            try:
                check_image(block, where)
            except FusionError as exc:
                raise bad_request(exc.message, where, "invalid_image") from None
            parts.append(block)
        else:
            text = part.text if isinstance(part, TextPart) else part.refusal
            parts.append({"type": "text", "text": text})
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return "\n".join(p["text"] for p in parts)


def _text(content: str | list[dict[str, Any]]) -> str:
    """The words of converted content (its text parts)."""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def _tool_call(call: ToolCall, param: str) -> dict[str, Any]:
    where = f"{param}.function.arguments"
    args = load_json(call.function.arguments or "{}", where)
    if not isinstance(args, dict):
        raise bad_request("function.arguments must be a JSON object (as a string)", where)
    return {"name": call.function.name, "args": args, "id": call.id, "type": "tool_call"}


def convert_messages(messages: list[Message]) -> list[AnyMessage]:
    """Validated OpenAI messages -> LangChain messages. (Not convert_to_messages: tool-call
    arguments go through load_json's checks, and empty text is refused naming the message.)"""
    if not messages:
        raise bad_request(
            "messages is empty; send at least one user message", "messages", code="invalid_input"
        )
    out: list[AnyMessage] = []
    images = 0
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        content = _content(
            message.content, f"{param}.content", images=isinstance(message, UserMessage)
        )
        text = _text(content)
        if isinstance(content, list):
            images += sum(1 for p in content if p["type"] == "image_url")
            if images > MAX_IMAGES:
                raise limit_error(param, f"{images} images", "max_images", MAX_IMAGES)
        calls = []
        if isinstance(message, AssistantMessage):
            calls = [
                _tool_call(call, f"{param}.tool_calls[{j}]")
                for j, call in enumerate(message.tool_calls or [])
            ]
        empty = not text.strip() and isinstance(content, str)  # an image alone is content
        if empty and not calls and not isinstance(message, ToolMessage):
            raise bad_request("content is empty", f"{param}.content")
        if isinstance(message, ToolMessage):
            out.append(
                LCToolMessage(content=text, tool_call_id=message.tool_call_id, name=message.name)
            )
        elif isinstance(message, AssistantMessage):
            out.append(AIMessage(content=text, tool_calls=calls, name=message.name))
        elif isinstance(message, UserMessage):
            # langchain-core takes a list of str | dict; ours holds dicts only (list is invariant).
            out.append(HumanMessage(content=content, name=message.name))  # type: ignore[arg-type]
        else:
            out.append(LCSystemMessage(content=text, name=message.name))
    return out


def _check_tool_choice(choice: str | NamedToolChoice, tools: list[Tool] | None) -> None:
    if not tools:
        raise bad_request("tool_choice is only allowed when tools are given", "tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in {
        t.function.name for t in tools
    }:
        raise bad_request("tool_choice must name one of the given tools", "tool_choice")


def _check_spec(spec: Any, param: str) -> None:
    # A model object lives in a Python process's graph: a request can only name it, and must not.
    provider = spec.partition(":")[0] if isinstance(spec, str) else None
    if isinstance(spec, dict):
        provider = spec.get("provider")
    if provider == OBJECT_PROVIDER:
        raise bad_request(
            "an object: spec names a chat model object of a Python graph; a request cannot "
            "use one (name a provider spec, or configure an alias on the server)",
            param,
            code="invalid_config",
        )
    if isinstance(spec, dict):
        for key in SPEC_FORBIDDEN:
            if key in spec:
                raise bad_request(
                    f"{key} cannot be set per request; configure an alias on the server",
                    f"{param}.{key}",
                    code="invalid_config",
                )


def fusion_overrides(
    fusion: dict[str, Any], options: type[BaseModel], context_fields: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the request's `fusion` object (its keys: the fields of `options`, derived from the
    graph's context schema) into context overrides and server options."""
    context, server = {}, {}
    for key, value in fusion.items():
        if key in REQUEST_OPTIONS:
            server[key] = value
        elif key in options.model_fields:
            context[key] = value
        elif key in context_fields:
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
    for key in MODEL_FIELDS:
        _check_spec(context.get(key), f"fusion.{key}")
    if not isinstance(server.get("progress", False), bool):
        raise bad_request("progress must be true or false", "fusion.progress")
    return context, server


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
    context_schema: type[BaseModel] = FusionContext,
) -> RunRequest:
    """Combine the model's configuration, the `fusion` overrides and the OpenAI parameters."""
    overrides, options = fusion_overrides(
        request.fusion or {},
        fusion_options_model(context_schema),
        frozenset(context_schema.model_fields),
    )
    check_limits(request, overrides, limits or RequestLimits())
    messages = convert_messages(request.messages)
    context = {**base_context, **overrides}
    if request.tools:
        context["synthesis_tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
    if request.tool_choice is not None:
        _check_tool_choice(request.tool_choice, request.tools)
        choice = request.tool_choice
        context["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    if request.temperature is not None:
        context["temperature"] = request.temperature
    if request.reasoning_effort is not None:  # OpenAI's parameter for fusion.reasoning_effort
        if overrides.get("reasoning_effort") not in (None, request.reasoning_effort):
            raise bad_request(
                "reasoning_effort and fusion.reasoning_effort disagree; send one of them",
                "reasoning_effort",
                code="invalid_config",
            )
        context["reasoning_effort"] = request.reasoning_effort
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


def request_body_schema(
    models: list[str], limits: RequestLimits, context_schema: type[BaseModel] = FusionContext
) -> dict[str, Any]:
    """The JSON schema of a chat-completions request (for OpenAPI): generated from the protocol
    models and the context schema, with this server's models and limits filled in."""
    body = surface_schema(ChatCompletionRequest, models, limits, context_schema)
    props = body["properties"]
    props["messages"].update(minItems=1, maxItems=limits.max_messages)
    for key in ("max_tokens", "max_completion_tokens"):
        props[key]["anyOf"][0]["maximum"] = limits.max_tokens
    return body


def surface_schema(
    request: type[BaseModel],
    models: list[str],
    limits: RequestLimits,
    context_schema: type[BaseModel],
) -> dict[str, Any]:
    """The JSON schema of any surface's request model, with this server's models and `fusion`
    object filled in."""
    body = openapi_schema(request)
    props = body["properties"]
    props["model"]["enum"] = models
    props["fusion"] = fusion_schema(limits, context_schema, props["fusion"].get("description", ""))
    return body


def fusion_schema(
    limits: RequestLimits, context_schema: type[BaseModel], description: str
) -> dict[str, Any]:
    """The JSON schema of a request's `fusion` object, with this server's limits filled in (the
    same object on every API surface)."""
    fusion = openapi_schema(fusion_options_model(context_schema))
    fusion["description"] = description
    _bound_fusion(fusion["properties"], limits)
    return {"anyOf": [fusion, {"type": "null"}]}


def _bound_fusion(props: dict[str, Any], limits: RequestLimits) -> None:
    """The request limits (check_limits) written into the `fusion` schema."""

    def bound(key: str, **values: Any) -> None:
        if key in props:
            props[key]["anyOf"][0].update(values)

    bound("panel", minItems=1, maxItems=limits.max_panel)
    bound("max_tool_calls", minimum=1, maximum=limits.max_tool_calls)
    bound("judge_max_tool_calls", minimum=1, maximum=limits.max_tool_calls)
    bound("panel_max_tokens", minimum=1, maximum=limits.max_tokens)
    bound("quorum", minimum=1, maximum=limits.max_panel)
    for key in ("panel_timeout_s", "deadline_s"):
        bound(key, minimum=MIN_TIMEOUT_S)
    specs = [props["panel"]["anyOf"][0]["items"]] if "panel" in props else []
    specs += [props[k] for k in MODEL_FIELDS if k in props]
    for spec in specs:
        for member in _spec_objects(spec):
            member["properties"]["max_tokens"]["anyOf"][0]["maximum"] = limits.max_tokens
            member["properties"]["max_tool_calls"]["anyOf"][0]["maximum"] = limits.max_tool_calls
            member["properties"]["timeout_s"]["anyOf"][0]["minimum"] = MIN_TIMEOUT_S


def _spec_objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object members of a spec schema (a string or an object, maybe nullable)."""
    found = []
    for member in schema.get("anyOf", [schema]):
        if member.get("type") == "object":
            found.append(member)
        elif "anyOf" in member:
            found += _spec_objects(member)
    return found
