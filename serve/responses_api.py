"""`POST /v1/responses`: the OpenAI Responses API on the same fusion runs as chat completions.

A Responses request is converted into the chat-completions request it stands for (instructions
-> a system message, input items -> messages, function_call / function_call_output items ->
tool calls and tool messages, function tools -> chat tools), so model names, limits, the
`fusion` object and every check are the chat-completions ones (serve/runs.py). Errors are
OpenAI's shape and statuses, as on chat completions; a failure after the stream opened is a
`response.failed` event whose response carries the error and the run's record.

`previous_response_id`: a response is the final state of a checkpointed thread, so on a server
with a checkpointer (`fusiongraph serve --checkpointer ...`) the id is `resp_<thread id>`, and a
later request naming it runs on a new thread whose conversation is that thread's (minus its
instructions, as OpenAI does) followed by the new input. A new thread per response keeps every
id pointing at the one conversation it answered, so branching from an older response works, and
threads stay owned by the API key that made them. Without a checkpointer nothing is stored, so
previous_response_id is a 400 that says so (send the whole conversation in `input` instead)
rather than an answer that silently forgot the conversation; `store` is reported as what really
happened.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from langchain_core.messages import (
    AIMessage,
    convert_to_openai_messages,
)
from sse_starlette import ServerSentEvent

from fusiongraph.graph.threads import OWNER_KEY, owner_of
from fusiongraph.serve.openai_errors import (
    OpenAIError,
    bad_request,
)
from fusiongraph.serve.openai_protocol import (
    ErrorResponse,
    openapi_request,
    openapi_responses,
)
from fusiongraph.serve.openai_request import parse_body, surface_schema
from fusiongraph.serve.openai_response import finish_reason, fusion_of
from fusiongraph.serve.responses_protocol import (
    RESPONSES_TAGS,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    InputRefusal,
    InputText,
    MessageItem,
    ResponseObject,
    ResponsesRequest,
    ResponsesStreamEvent,
)
from fusiongraph.serve.runs import (
    CLIENT_CLOSED,
    THREAD_HEADER,
    ClientGone,
    RunService,
    chat_request,
    function_tool,
    read_request,
    reject_recursion,
    respond,
)
from fusiongraph.serve.stream_blocks import BlockStreamWriter

if TYPE_CHECKING:
    from fusiongraph.graph.builder import FusionGraph
    from fusiongraph.serve.openrouter_fusion import OpenRouterFusion

RESPONSE_PREFIX = "resp_"
TOOL_HINT = '{"type": "function", "name": ..., "parameters": {...}} (only function tools)'
Authorize = Callable[[Request], str | None]
# Chat-completions parameter names that the Responses API calls otherwise.
_PARAMS = {"max_tokens": "max_output_tokens"}


# ------------------------------------------------------------------------------ the request


async def previous_conversation(
    graph: FusionGraph, response_id: str, api_key: str | None
) -> list[dict[str, Any]]:
    """The conversation a stored response answered (its final answer included), as chat
    messages, without its system messages (a request's instructions do not carry over)."""
    param = "previous_response_id"
    if graph.checkpointer is None:
        raise bad_request(
            "previous_response_id needs a server that stores runs (fusiongraph serve "
            "--checkpointer sqlite:///runs.db); this one stores nothing, so send the whole "
            "conversation in `input` instead",
            param,
            "unsupported_parameter",
        )
    thread_id = response_id.removeprefix(RESPONSE_PREFIX)
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    messages = state.values.get("messages") or []
    owner = (state.metadata or {}).get(OWNER_KEY, "")
    if not response_id.startswith(RESPONSE_PREFIX) or not messages or owner != owner_of(api_key):
        raise OpenAIError(
            404, f"no response {response_id!r}", param=param, code="response_not_found"
        )
    if state.next or not isinstance(messages[-1], AIMessage):
        raise OpenAIError(
            409,
            f"the response {response_id!r} has not finished; retry it first",
            param=param,
            code="response_unfinished",
        )
    converted = convert_to_openai_messages(messages)
    return [m for m in converted if m.get("role") not in ("system", "developer")]


def _parts(content: Any, param: str) -> Any:
    """A message's content as chat-completions content (a string, or text/refusal/image parts:
    images go where chat-completions images go)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        if isinstance(part, InputText):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, InputRefusal):
            parts.append({"type": "refusal", "refusal": part.refusal})
        elif isinstance(part, InputImage) and part.image_url:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
        else:
            what = "an input_image by file_id" if isinstance(part, InputImage) else part.type
            raise bad_request(
                f"{what} cannot be sent here", f"{param}[{i}]", code="unsupported_content"
            )
    return parts


def _tool_output(item: FunctionCallOutputItem) -> str:
    output = item.output
    return output if isinstance(output, str) else "\n".join(part.text for part in output)


def convert_request(
    body: ResponsesRequest, history: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The chat-completions request a Responses request stands for, and where each of its
    messages came from. Consecutive function_call items join the assistant turn before them
    (chat completions holds a turn's calls in one message)."""
    messages: list[dict[str, Any]] = []
    origins: list[str] = []

    def add(message: dict[str, Any], origin: str) -> None:
        messages.append(message)
        origins.append(origin)

    if body.instructions:
        add({"role": "system", "content": body.instructions}, "instructions")
    for message in history:
        add(message, "previous_response_id")
    items = (
        [MessageItem(role="user", content=body.input)]
        if isinstance(body.input, str)
        else body.input
    )
    for i, item in enumerate(items):
        param = "input" if isinstance(body.input, str) else f"input[{i}]"
        if isinstance(item, MessageItem):
            add({"role": item.role, "content": _parts(item.content, f"{param}.content")}, param)
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                add({"role": "assistant", "content": None, "tool_calls": [call]}, param)
        elif isinstance(item, FunctionCallOutputItem):
            add(
                {"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item)}, param
            )
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "stream": body.stream,
        "temperature": body.temperature,
        "max_tokens": body.max_output_tokens,
        "fusion": body.fusion,
    }
    if body.reasoning is not None and body.reasoning.effort is not None:
        fields["reasoning_effort"] = body.reasoning.effort  # the chat-completions parameter
    if body.tools:
        fields["tools"] = [
            function_tool(tool.name, tool.description, tool.parameters) for tool in body.tools
        ]
    choice = body.tool_choice
    if choice is not None:
        fields["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "function": {"name": choice.name}}
        )
    return fields, origins


# ----------------------------------------------------------------------------- the response


def response_skeleton(
    body: ResponsesRequest, *, rid: str, model: str, stored: bool
) -> dict[str, Any]:
    """The response object before its output: what the request asked, echoed as OpenAI does."""
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "store": stored,
        "temperature": body.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": _echo_choice(body),
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
        "top_p": None,
        "truncation": "disabled",
        "fusion": None,
    }


def _echo_choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def responses_usage(message: AIMessage) -> dict[str, Any]:
    """Tokens of every call of the run (the final message totals them)."""
    usage: Mapping[str, Any] = message.usage_metadata or {}
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    cached = int((usage.get("input_token_details") or {}).get("cache_read", 0) or 0)
    reasoning = int((usage.get("output_token_details") or {}).get("reasoning", 0) or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _message_item(text: str, *, status: str = "completed", iid: str | None = None) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "id": iid or f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _call_item(call_id: str | None, name: str, arguments: str, status: str = "completed") -> dict:
    return {
        "id": f"fc_{uuid.uuid4().hex}",
        "type": "function_call",
        "call_id": call_id or f"call_{uuid.uuid4().hex[:24]}",
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(message: AIMessage) -> list[dict[str, Any]]:
    """A message item with the answer's text (when there is text), then one function_call item
    per tool call."""
    items = [_message_item(message.text)] if message.text else []
    for call in message.tool_calls:
        arguments = json.dumps(call.get("args") or {}, ensure_ascii=False)
        items.append(_call_item(call.get("id"), call["name"], arguments))
    return items


def finished(base: dict[str, Any], output: list[dict[str, Any]], message: AIMessage) -> dict:
    """The response object of a finished run."""
    incomplete = finish_reason(message) == "length"
    return {
        **base,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": output,
        "usage": responses_usage(message),
        "fusion": fusion_of(message),
    }


def failed(base: dict[str, Any], output: list[dict[str, Any]], exc: OpenAIError) -> dict:
    """The response object of a run that failed after the stream opened."""
    code = {429: "rate_limit_exceeded", 400: "invalid_prompt"}.get(exc.status, "server_error")
    return {
        **base,
        "status": "failed",
        "output": output,
        "error": {"code": code, "message": exc.message},
        "fusion": exc.extra.get("fusion"),
    }


class ResponseStreamWriter(BlockStreamWriter):
    """Synthesis token chunks -> Responses stream events, in OpenAI's order: a message item
    (with one output_text part), a function_call item per tool call (its arguments as
    function_call_arguments deltas), each item done before the next is added
    (serve/stream_blocks.py)."""

    def __init__(self, base: dict[str, Any]) -> None:
        super().__init__()
        self.base = base
        self.sequence = 0
        self.items: list[dict[str, Any]] = []

    def _event(self, kind: str, **data: Any) -> ServerSentEvent:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return ServerSentEvent(event=kind, data=text)

    def start(self) -> list[ServerSentEvent]:
        return [
            self._event("response.created", response=self.base),
            self._event("response.in_progress", response=self.base),
        ]

    def _where(self) -> dict[str, Any]:
        index = len(self.items) - 1
        return {"item_id": self.items[index]["id"], "output_index": index}

    def _close(self) -> list[ServerSentEvent]:
        if self.open is None:
            return []
        item, where = self.items[-1], self._where()
        out = []
        if self.open == "text":
            part = item["content"][0]
            out.append(
                self._event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            )
            out.append(
                self._event("response.content_part.done", **where, content_index=0, part=part)
            )
        else:
            args = item["arguments"]
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=args,
                )
            )
        item["status"] = "completed"
        out.append(
            self._event("response.output_item.done", output_index=where["output_index"], item=item)
        )
        self.open = None
        return out

    def _add(self, key: Any, item: dict[str, Any]) -> list[ServerSentEvent]:
        out = self._close()
        self.items.append(item)
        self.open = key
        added = {**item, "content": []} if item["type"] == "message" else dict(item)
        out.append(
            self._event("response.output_item.added", output_index=len(self.items) - 1, item=added)
        )
        return out

    def _text(self, text: str) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        if self.open != "text":
            out += self._add("text", _message_item("", status="in_progress"))
            part = {"type": "output_text", "text": "", "annotations": []}
            self.items[-1]["content"] = [part]
            out.append(
                self._event(
                    "response.content_part.added", **self._where(), content_index=0, part=dict(part)
                )
            )
        self.items[-1]["content"][0]["text"] += text
        self.sent_text = True
        out.append(
            self._event(
                "response.output_text.delta",
                **self._where(),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _arguments(self, fragment: str) -> ServerSentEvent:
        self.items[-1]["arguments"] += fragment
        return self._event(
            "response.function_call_arguments.delta", **self._where(), delta=fragment
        )

    def _start_call(self, key: Any, call_id: str | None, name: str) -> list[ServerSentEvent]:
        return self._add(key, _call_item(call_id, name, "", status="in_progress"))

    def finish(self, message: AIMessage) -> list[ServerSentEvent]:
        """Anything not streamed yet, then response.completed with the whole response."""
        out = self.unstreamed(message)
        out.append(
            self._event("response.completed", response=finished(self.base, self.items, message))
        )
        return out

    def fail(self, error: OpenAIError) -> list[ServerSentEvent]:
        """A failure after the stream opened: response.failed, with what was output so far."""
        return [self._event("response.failed", response=failed(self.base, self.items, error))]


# ------------------------------------------------------------------------------- the route


def request_schema(service: RunService, models: list[str]) -> dict[str, Any]:
    """The JSON schema of a Responses request, with this server's models and limits."""
    body = surface_schema(ResponsesRequest, models, service.limits, service.context_schema)
    body["properties"]["max_output_tokens"]["anyOf"][0]["maximum"] = service.limits.max_tokens
    return body


def _responses() -> dict[int | str, dict[str, Any]]:
    statuses = {
        400: "Invalid request, configuration or input; over a limit; recursion; "
        "previous_response_id on a server without a checkpointer",
        401: "Missing or wrong API key",
        404: "No such previous response or thread for this API key",
        408: "The request body did not arrive within body_timeout_s",
        409: "The thread (or previous response) holds an unfinished run",
        429: "Every panelist was rate limited upstream",
        502: "Upstream failure: nothing usable came back",
        504: "The run's deadline passed",
    }
    return openapi_responses(ResponseObject, ResponsesStreamEvent, ErrorResponse, statuses)


def install_responses_api(
    app: FastAPI,
    service: RunService,
    authorize: Authorize,
    models: list[str],
    openrouter: OpenRouterFusion | None = None,
) -> None:
    """Add `POST /v1/responses` to `app` (its errors go through the app's OpenAI handlers);
    with `openrouter`, OpenRouter Fusion's requests too (serve/openrouter_fusion.py)."""

    @app.post(
        "/v1/responses",
        openapi_extra=openapi_request(
            request_schema(service, models),
            {"model": "fusion", "input": "What is TCP?", "fusion": {"quorum": 2}},
        ),
        responses=_responses(),
    )
    async def create_response(request: Request) -> Response:
        """A fusion run as an OpenAI response (JSON, or its stream events with `stream`)."""
        try:
            return await _create_response(request, service, authorize, openrouter)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)


async def _create_response(
    request: Request,
    service: RunService,
    authorize: Authorize,
    openrouter: OpenRouterFusion | None = None,
) -> Response:
    api_key = authorize(request)
    reject_recursion(request)
    raw = await read_request(request, service.limits)
    if openrouter is not None and (asked := openrouter.take(request, raw)) is not None:
        return await openrouter.answer(request, asked, api_key)
    body = parse_body(raw, ResponsesRequest, tags=RESPONSES_TAGS, tool_hint=TOOL_HINT)
    history = []
    if body.previous_response_id:
        history = await previous_conversation(service.graph, body.previous_response_id, api_key)
    fields, origins = convert_request(body, history)
    try:
        prepared = await service.prepare(
            chat_request(fields, origins),
            api_key=api_key,
            thread_id=request.headers.get(THREAD_HEADER),
            origins=origins,
        )
    except OpenAIError as exc:
        if exc.param in _PARAMS:
            exc.message = exc.message.replace(exc.param, _PARAMS[exc.param], 1)
            exc.param = _PARAMS[exc.param]
        raise
    thread_id = prepared.plan.thread_id
    rid = RESPONSE_PREFIX + (thread_id or uuid.uuid4().hex)
    base = response_skeleton(body, rid=rid, model=prepared.run.model, stored=thread_id is not None)
    return await respond(
        prepared,
        request,
        ResponseStreamWriter(base),
        lambda final: finished(base, output_items(final), final),
    )
