"""`POST /v1/messages`: the Anthropic Messages API on the same fusion runs as chat completions.

A Messages request is converted into the chat-completions request it stands for (system ->
a system message, tool_use / tool_result blocks -> tool calls and tool messages, Anthropic tools
and tool_choice -> function tools), so model names, limits, the `fusion` object and every check
are the chat-completions ones (serve/runs.py). Only the body, the stream events and the errors
are Anthropic's: `{"type": "error", "error": {"type", "message"}}` with the same statuses as
chat completions, except that "every panelist was rate limited upstream" is Anthropic's
529 overloaded_error (the caller hit no limit of ours; the upstreams are saturated), which the
SDKs retry like a 429. A failed run's error carries its record in `error.fusion`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage, ToolCall
from sse_starlette import ServerSentEvent

from fusiongraph.serve.anthropic_protocol import (
    ANTHROPIC_TAGS,
    AnthropicErrorResponse,
    AnthropicStreamEvent,
    ImageBlock,
    MessageParam,
    MessageResponse,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from fusiongraph.serve.openai_errors import (
    OpenAIError,
    bad_request,
)
from fusiongraph.serve.openai_protocol import openapi_request, openapi_responses
from fusiongraph.serve.openai_request import parse_body, surface_schema
from fusiongraph.serve.openai_response import finish_reason, fusion_of, usage_block
from fusiongraph.serve.runs import (
    CLIENT_CLOSED,
    THREAD_HEADER,
    ClientGone,
    RunService,
    as_error,
    chat_request,
    function_tool,
    read_request,
    reject_recursion,
    respond,
)
from fusiongraph.serve.stream_blocks import BlockStreamWriter

OVERLOADED = 529  # Anthropic's status for an overloaded API
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}
_STOP_REASONS = {"tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"}
TOOL_HINT = '{"name": ..., "description": ..., "input_schema": {...}} (a client tool)'
Authorize = Callable[[Request], str | None]


# ----------------------------------------------------------------------------------- errors


def error_body(exc: OpenAIError) -> tuple[int, dict[str, Any]]:
    """The status and Anthropic-shaped body of an error that chat completions would send as
    `exc`; the parameter is named in the message (Anthropic's errors have no `param`)."""
    status = OVERLOADED if exc.code == "rate_limited" else exc.status
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    message = exc.message
    if exc.param and not message.startswith(exc.param):
        message = f"{exc.param}: {message}"
    error: dict[str, Any] = {"type": kind, "message": message}
    if "fusion" in exc.extra:
        error["fusion"] = exc.extra["fusion"]
    return status, {"type": "error", "error": error}


def error_response(exc: OpenAIError) -> JSONResponse:
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status, headers=exc.headers)


# ------------------------------------------------------------------------------ the request


def _text_parts(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    """Text and image blocks as chat-completions content parts (images go where chat
    completions send them, so both APIs treat them alike)."""
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        else:
            raise bad_request(
                f"{block.type} blocks cannot be sent here", f"{param}[{i}]", "unsupported_content"
            )
    return parts


def _image_url(block: ImageBlock) -> str:
    source = block.source
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return str(source.get("url", ""))


def _user_messages(message: MessageParam, param: str) -> list[tuple[dict[str, Any], str]]:
    """A user turn: its tool results (one tool message each), then its text and images."""
    if isinstance(message.content, str):
        return [({"role": "user", "content": message.content}, param)]
    out: list[tuple[dict[str, Any], str]] = []
    rest: list[Any] = []
    for i, block in enumerate(message.content):
        where = f"{param}.content[{i}]"
        if isinstance(block, ToolResultBlock):
            content = block.content
            if isinstance(content, list):
                if any(not isinstance(part, TextBlock) for part in content):
                    raise bad_request(
                        "a tool result can only hold text here",
                        f"{where}.content",
                        "unsupported_content",
                    )
                content = "\n".join(part.text for part in content if isinstance(part, TextBlock))
            text = f"Error: {content}" if block.is_error else content
            tool = {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}
            out.append((tool, where))
        elif isinstance(block, ToolUseBlock):
            raise bad_request("tool_use blocks belong to assistant turns", where)
        elif not isinstance(block, ThinkingBlock):
            rest.append(block)
    if rest:
        parts = _text_parts(rest, f"{param}.content")
        out.append(({"role": "user", "content": parts}, param))
    return out


def _assistant_message(message: MessageParam, param: str) -> dict[str, Any]:
    """An assistant turn: its text, and its tool_use blocks as tool calls (thinking dropped)."""
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(message.content):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif not isinstance(block, ThinkingBlock):
            raise bad_request(
                f"{block.type} blocks cannot be sent in an assistant turn",
                f"{param}.content[{i}]",
                "unsupported_content",
            )
    out: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) or None}
    if calls:
        out["tool_calls"] = calls
    return out


def convert_request(body: MessagesRequest) -> tuple[dict[str, Any], list[str]]:
    """The chat-completions request a Messages request stands for, and where each of its
    messages came from (for error messages in the caller's terms)."""
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    if body.system:
        system = body.system
        text = system if isinstance(system, str) else "\n".join(b.text for b in system)
        messages.append({"role": "system", "content": text})
        origins.append("system")
    for i, message in enumerate(body.messages):
        param = f"messages[{i}]"
        if message.role == "user":
            for converted, origin in _user_messages(message, param):
                messages.append(converted)
                origins.append(origin)
        else:
            messages.append(_assistant_message(message, param))
            origins.append(param)
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_tokens": body.max_tokens,
        "stream": body.stream,
        "temperature": body.temperature,
        "fusion": body.fusion,
    }
    if body.tools:
        fields["tools"] = [
            function_tool(tool.name, tool.description, tool.input_schema) for tool in body.tools
        ]
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice.type, body.tool_choice.name)
    return fields, origins


def _tool_choice(kind: str, name: str | None) -> Any:
    if kind == "tool":
        if not name:
            raise bad_request("a tool_choice of type tool must name the tool", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


# ----------------------------------------------------------------------------- the response


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def stop_reason(message: AIMessage) -> str:
    return _STOP_REASONS.get(finish_reason(message), "end_turn")


def anthropic_usage(message: AIMessage) -> dict[str, int]:
    """Input and output tokens of every call of the run (the final message totals them)."""
    usage = usage_block(message)
    return {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
        "name": call["name"],
        "input": call.get("args") or {},
    }


def message_body(message: AIMessage, *, model: str, mid: str) -> dict[str, Any]:
    """A non-streaming message: a text block (when there is text), then one tool_use block per
    tool call; the run's record in `fusion`."""
    content: list[dict[str, Any]] = []
    if message.text:
        content.append({"type": "text", "text": message.text})
    content += [_tool_use(call) for call in message.tool_calls]
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(message),
        "stop_sequence": None,
        "usage": anthropic_usage(message),
        "fusion": fusion_of(message),
    }


def _event(kind: str, **data: Any) -> ServerSentEvent:
    payload = json.dumps({"type": kind, **data}, ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(event=kind, data=payload)


def ping() -> ServerSentEvent:
    return _event("ping")


class MessageStreamWriter(BlockStreamWriter):
    """Synthesis token chunks -> Anthropic stream events, in Anthropic's order: a text block,
    a tool_use block per tool call (its input as input_json_delta fragments), each block
    stopped before the next starts (serve/stream_blocks.py)."""

    def __init__(self, *, model: str) -> None:
        super().__init__()
        self.mid = message_id()
        self.model = model
        self.index = -1

    def start(self) -> list[ServerSentEvent]:
        message: dict[str, Any] = {
            "id": self.mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", message=message), ping()]

    def _close(self) -> list[ServerSentEvent]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", index=self.index)]

    def _open(self, key: Any, block: dict[str, Any]) -> list[ServerSentEvent]:
        out = self._close()
        self.index += 1
        self.open = key
        return [*out, _event("content_block_start", index=self.index, content_block=block)]

    def _text(self, text: str) -> list[ServerSentEvent]:
        out = [] if self.open == "text" else self._open("text", {"type": "text", "text": ""})
        self.sent_text = True
        delta = {"type": "text_delta", "text": text}
        return [*out, _event("content_block_delta", index=self.index, delta=delta)]

    def _start_call(self, key: Any, call_id: str | None, name: str) -> list[ServerSentEvent]:
        return self._open(key, _tool_use(ToolCall(name=name, args={}, id=call_id)))

    def _arguments(self, fragment: str) -> ServerSentEvent:
        delta = {"type": "input_json_delta", "partial_json": fragment}
        return _event("content_block_delta", index=self.index, delta=delta)

    def finish(self, message: AIMessage) -> list[ServerSentEvent]:
        """Anything not streamed yet, message_delta (stop reason, usage, the fusion record),
        then message_stop."""
        out = self.unstreamed(message)
        delta = {"stop_reason": stop_reason(message), "stop_sequence": None}
        usage = anthropic_usage(message)
        out.append(_event("message_delta", delta=delta, usage=usage, fusion=fusion_of(message)))
        out.append(_event("message_stop"))
        return out

    def fail(self, error: OpenAIError) -> list[ServerSentEvent]:
        """A failure after the stream opened: Anthropic's `error` event (the stream ends)."""
        _, body = error_body(error)
        return [_event("error", error=body["error"])]


# ------------------------------------------------------------------------------- the route


def request_schema(service: RunService, models: list[str]) -> dict[str, Any]:
    """The JSON schema of a Messages request, with this server's models and limits."""
    body = surface_schema(MessagesRequest, models, service.limits, service.context_schema)
    props = body["properties"]
    props["messages"].update(minItems=1, maxItems=service.limits.max_messages)
    props["max_tokens"]["maximum"] = service.limits.max_tokens
    return body


def _responses() -> dict[int | str, dict[str, Any]]:
    statuses = {
        400: "Invalid request, configuration or input; over a limit; recursion",
        401: "Missing or wrong API key (x-api-key or Authorization: Bearer)",
        404: "No such thread for this API key",
        408: "The request body did not arrive within body_timeout_s",
        409: "The thread holds an unfinished run of a different request",
        502: "Upstream failure: nothing usable came back",
        504: "The run's deadline passed",
        OVERLOADED: "Every panelist was rate limited upstream (overloaded_error)",
    }
    return openapi_responses(
        MessageResponse, AnthropicStreamEvent, AnthropicErrorResponse, statuses
    )


def install_anthropic_api(
    app: FastAPI, service: RunService, authorize: Authorize, models: list[str]
) -> None:
    """Add `POST /v1/messages` to `app`."""

    @app.post(
        "/v1/messages",
        openapi_extra=openapi_request(
            request_schema(service, models),
            {
                "model": "fusion",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "What is TCP?"}],
                "fusion": {"quorum": 2},
            },
        ),
        responses=_responses(),
    )
    async def create_message(request: Request) -> Response:
        """A fusion run as an Anthropic message (JSON, or its stream events with `stream`)."""
        try:
            return await _create_message(request, service, authorize)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:
            return error_response(as_error(exc))


async def _create_message(request: Request, service: RunService, authorize: Authorize) -> Response:
    api_key = authorize(request)
    reject_recursion(request)
    raw = await read_request(request, service.limits)
    body = parse_body(raw, MessagesRequest, tags=ANTHROPIC_TAGS, tool_hint=TOOL_HINT)
    fields, origins = convert_request(body)
    prepared = await service.prepare(
        chat_request(fields, origins),
        api_key=api_key,
        thread_id=request.headers.get(THREAD_HEADER),
        origins=origins,
    )
    model = prepared.run.model
    return await respond(
        prepared,
        request,
        MessageStreamWriter(model=model),
        lambda final: message_body(final, model=model, mid=message_id()),
        ping=15,
        ping_message_factory=ping,
    )
