"""The OpenAI-compatible HTTP face of the fusion graph: /v1/chat/completions and /v1/models.

`model` names a preset (`fusion` is the default preset, `fusion-<preset>` each preset) or an alias
the operator configured (a FusionContext dict). Requests may add a `fusion` object with per-request
overrides (panel, judge, tool limits, ...) and `"progress": true` to receive progress events as SSE
comment lines, which every SSE client (the OpenAI SDKs included) skips.

Every run is tied to its request: when the client disconnects, the run's task is cancelled, and
with it the graph's node tasks and their upstream HTTP calls. Error mapping: see openai_errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langgraph.graph.state import CompiledStateGraph
from sse_starlette import EventSourceResponse, ServerSentEvent

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.models import FUSION_DEPTH_HEADER, aclose_models
from fusiongraph.graph.persistence import open_graph
from fusiongraph.graph.presets import PRESETS
from fusiongraph.graph.runner import RunEvent, stream_run
from fusiongraph.graph.threads import (
    ThreadConflict,
    ThreadNotFound,
    ThreadPlan,
    digest,
    owner_of,
    plan_thread,
)
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.serve.openai_errors import (
    OpenAIError,
    from_fusion_error,
    install_error_handlers,
    internal_error,
    logger,
)
from fusiongraph.serve.openai_protocol import (
    ChatCompletionResponse,
    ErrorResponse,
    StreamEvent,
    openapi_schema,
)
from fusiongraph.serve.openai_request import (
    ChatCompletionRequest,
    RequestLimits,
    RunRequest,
    build_run,
    parse_request,
    read_body,
    request_body_schema,
)
from fusiongraph.serve.openai_response import ChunkWriter, completion_body, completion_id
from fusiongraph.tools.aio import Pump, cancel_and_wait

API_KEYS_ENV = "FUSIONGRAPH_API_KEYS"
PRESET_ENV = "FUSIONGRAPH_PRESET"
DEFAULT_MODEL = "fusion"
# Names the checkpointed thread of a request (durable servers): sent by clients to resume or
# replay a run, returned on every response.
THREAD_HEADER = "X-Fusion-Thread-Id"
# Status logged for a request whose client went away (nginx's convention; never sent).
CLIENT_CLOSED = 499

_ERROR_SCHEMA = openapi_schema(ErrorResponse)

_COMPLETION_RESPONSE: dict[str, Any] = {
    "description": ChatCompletionResponse.__doc__,
    "content": {
        "application/json": {"schema": openapi_schema(ChatCompletionResponse)},
        "text/event-stream": {"schema": openapi_schema(StreamEvent)},
    },
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all in OpenAI's error shape."""
    text = {
        400: "Invalid request, configuration or input; over a limit; recursion",
        401: "Missing or wrong API key",
        408: "The request body did not arrive within body_timeout_s",
        404: "No such model, or no such thread for this API key",
        409: "The thread holds an unfinished run of a different request",
        429: "Every panelist was rate limited upstream",
        502: "Upstream failure: nothing usable came back",
        504: "The run's deadline passed",
    }
    return {
        status: {
            "description": text[status],
            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        }
        for status in statuses
    }


def _without_422(app: FastAPI) -> None:
    """FastAPI documents 422 for validation errors; this server answers those with 400."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _env_api_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]


def model_table(default_preset: str, aliases: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """Every callable model name -> the FusionContext fields it stands for."""
    table: dict[str, dict[str, Any]] = {DEFAULT_MODEL: {"preset": default_preset}}
    table.update({f"{DEFAULT_MODEL}-{name}": {"preset": name} for name in PRESETS})
    for name, context in aliases.items():
        # An alias with its own panel needs no preset (graph/config.py: which preset applies).
        table[name] = dict(context) if "panel" in context else {"preset": default_preset, **context}
    return table


def _check_aliases(aliases: dict[str, dict[str, Any]]) -> None:
    """Fail at start-up, not on the first request, when an alias holds a bad setting."""
    for name, context in aliases.items():
        if not isinstance(context, dict):
            raise ValueError(f"alias {name!r} must map to a dict of fusion settings")
        try:
            FusionContext(**context)
        except FusionConfigError as exc:
            raise ValueError(f"alias {name!r}: {exc.message}") from None
        if context.get("preset", "") and context["preset"] not in PRESETS:
            raise ValueError(f"alias {name!r}: unknown preset {context['preset']!r}")


async def _wait_disconnect(request: Request) -> None:
    """Return when the client goes away (the body has been read, so receive() waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _race_disconnect(request: Request, work: asyncio.Future[Any]) -> bool:
    """Wait for `work` unless the client disconnects first; True when it did."""
    watcher = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return not work.done()


def freeze_startup_heap() -> None:
    """Move everything alive at start-up (modules, schemas, the compiled graph) out of the cyclic
    GC's reach. It lives as long as the server; re-scanning it in every full collection stalled
    the event loop for 60-75 ms about once every 50 runs, which is what the p95 latency showed."""
    gc.collect()
    gc.freeze()


def create_app(
    graph: CompiledStateGraph | None = None,
    *,
    api_keys: list[str] | None = None,
    aliases: dict[str, dict[str, Any]] | None = None,
    default_preset: str | None = None,
    limits: RequestLimits | None = None,
    checkpointer_url: str | None = None,
    cache: bool = False,
) -> FastAPI:
    """Build the app. Defaults: the module's compiled graph, keys from FUSIONGRAPH_API_KEYS
    (comma-separated; none means no auth), `fusion` = FUSIONGRAPH_PRESET or `local`, request
    limits from the environment (`RequestLimits.from_env`).

    With `checkpointer_url` (sqlite:///… or postgresql://…) or `cache`, the graph is compiled at
    start-up with that checkpointer and panel-answer cache, and runs are durable (see
    `_thread_plan`)."""
    holder: dict[str, CompiledStateGraph] = {}
    if graph is not None:
        holder["graph"] = graph
    elif not checkpointer_url and not cache:
        from fusiongraph.graph.builder import graph as default_graph

        holder["graph"] = default_graph
    keys = _env_api_keys() if api_keys is None else [k for k in api_keys if k]
    aliases = dict(aliases or {})
    _check_aliases(aliases)
    preset = default_preset or os.environ.get(PRESET_ENV) or "local"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    models = model_table(preset, aliases)
    limits = limits or RequestLimits.from_env()
    started = int(time.time())
    # What a request's `fusion` object may set, and how it is documented, follow the graph's
    # context schema (a durable graph, compiled at start-up, is always the default one).
    context_schema = getattr(holder.get("graph"), "context_schema", None) or FusionContext

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            if "graph" in holder:
                freeze_startup_heap()
                yield
                return
            async with open_graph(checkpointer_url, cache=cache or None) as durable:
                holder["graph"] = durable
                freeze_startup_heap()
                yield
        finally:
            await aclose_models()

    app = FastAPI(
        title="fusiongraph",
        summary="Multi-model deliberation behind the OpenAI API.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    _without_422(app)

    def authorize(request: Request) -> str | None:
        """The caller's API key (None when the server has no auth); a 401 when it is wrong."""
        if not keys:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise OpenAIError(
                401, "missing API key: send Authorization: Bearer <key>", code="invalid_api_key"
            )
        if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
            raise OpenAIError(401, "incorrect API key", code="invalid_api_key")
        return token

    def model_card(name: str) -> dict[str, Any]:
        context = models[name]
        description = (
            PRESETS[context["preset"]]["description"]
            if name.startswith(DEFAULT_MODEL) and name not in aliases
            else "alias"
        )
        return {
            "id": name,
            "object": "model",
            "created": started,
            "owned_by": "fusiongraph",
            "fusion": {"preset": context.get("preset"), "description": description},
        }

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", responses=_errors(401))
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card(name) for name in models]}

    @app.get("/v1/models/{model_id:path}", responses=_errors(401, 404))
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id not in models:
            raise OpenAIError(
                404, f"the model {model_id!r} does not exist", param="model", code="model_not_found"
            )
        return model_card(model_id)

    @app.post(
        "/v1/chat/completions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_body_schema(sorted(models), limits, context_schema),
                        "example": {
                            "model": DEFAULT_MODEL,
                            "messages": [{"role": "user", "content": "What is TCP?"}],
                            "fusion": {"quorum": 2, "max_tool_calls": 4},
                        },
                    }
                },
            }
        },
        responses={200: _COMPLETION_RESPONSE, **_errors(400, 401, 404, 408, 409, 429, 502, 504)},
    )
    async def chat_completions(request: Request) -> Response:
        """A fusion run as an OpenAI chat completion (JSON, or SSE with `stream`)."""
        api_key = authorize(request)
        if FUSION_DEPTH_HEADER.lower() in request.headers:
            raise OpenAIError(
                400,
                "this request comes from inside a fusion run; a fusion model cannot sit "
                "on its own panel",
                param="model",
                code="recursion",
            )
        raw = await read_body(
            request.stream(),
            request.headers.get("content-length"),
            limits.max_body_bytes,
            limits.body_timeout_s,
        )
        body = parse_request(raw)
        if body.model not in models:
            raise OpenAIError(
                400,
                f"the model {body.model!r} does not exist; GET /v1/models lists {sorted(models)}",
                param="model",
                code="model_not_found",
            )
        run = build_run(body, models[body.model], limits, context_schema)
        check_conversation(run.messages)
        resolve_config(context_schema(**run.context))  # a bad configuration: 400, before any run
        graph = holder["graph"]
        plan = await _thread_plan(graph, request.headers.get(THREAD_HEADER), body, run, api_key)
        messages = plan.inputs(run.messages, whole_conversation=True)
        if run.stream:
            if plan.replay is not None:
                events = _replay(plan.replay)
            else:
                events = stream_run(
                    graph, messages, run.context, plan.config, progress=run.progress
                )
            # The run's own task reads the graph: cancelling it cancels the run (tools/aio.py).
            response = await _stream(Pump(events, name="fusion-run"), run, request)
        elif plan.replay is not None:
            response = _completion(plan.replay, run)
        else:
            response = await _complete(graph, messages, run, request, plan)
        if plan.thread_id:
            response.headers[THREAD_HEADER] = plan.thread_id
        return response

    return app


async def _thread_plan(
    graph: CompiledStateGraph,
    thread_id: str | None,
    body: ChatCompletionRequest,
    run: RunRequest,
    api_key: str | None,
) -> ThreadPlan:
    """With a checkpointer every run has a thread: the client's X-Fusion-Thread-Id, or a new one,
    returned in that header. The request's digest (model, conversation, settings: not how it is
    delivered, so a streamed retry matches) decides between resume, replay and a new turn
    (graph/threads.py); threads belong to the API key that made them."""
    request = digest({"model": body.model, "messages": body.messages, "context": run.context})
    try:
        return await plan_thread(graph, thread_id, request=request, owner=owner_of(api_key))
    except ThreadNotFound as exc:
        raise OpenAIError(404, str(exc), param=THREAD_HEADER, code="thread_not_found") from None
    except ThreadConflict as exc:
        raise OpenAIError(409, str(exc), param=THREAD_HEADER, code="thread_conflict") from None


async def _replay(final: AIMessage) -> AsyncIterator[RunEvent]:
    """A finished thread's answer as the events of a run: its text, then the final message."""
    yield RunEvent(
        "token",
        chunk=AIMessageChunk(
            content=final.content, id=final.id, tool_call_chunks=_tool_chunks(final)
        ),
    )
    yield RunEvent("final", message=final)


def _tool_chunks(message: AIMessage) -> list[Any]:
    return [
        tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
        for i, c in enumerate(message.tool_calls)
    ]


def _completion(final: AIMessage, run: RunRequest) -> Response:
    body = completion_body(final, model=run.model, cid=completion_id(), created=int(time.time()))
    return JSONResponse(body)


async def _complete(
    graph: CompiledStateGraph,
    messages: list[Any] | None,
    run: RunRequest,
    request: Request,
    plan: ThreadPlan,
) -> Response:
    inputs = None if messages is None else {"messages": messages}
    task = asyncio.ensure_future(graph.ainvoke(inputs, config=plan.config, context=run.context))
    try:
        gone = await _race_disconnect(request, task)
    finally:
        await cancel_and_wait(task)
    if gone:
        logger.info("client disconnected; run cancelled")
        return Response(status_code=CLIENT_CLOSED)
    return _completion(task.result()["messages"][-1], run)  # FusionError goes to its handler


async def _stream(handle: Pump[RunEvent], run: RunRequest, request: Request) -> Response:
    """Start the run and hold the response until its first answer token, so that every failure
    before the synthesis writes (config, budget, all panelists failing, rate limits, the local
    server not starting) is still a proper status code for a standard client. A request with
    `fusion.progress` wants to watch the panel, so its stream opens at the first progress event.
    """
    first = asyncio.ensure_future(_first_event(handle, run.progress))
    try:
        gone = await _race_disconnect(request, first)
    except BaseException:
        first.cancel()
        await handle.cancel()
        raise
    if gone:
        first.cancel()
        await handle.cancel()
        logger.info("client disconnected before the stream opened; run cancelled")
        return Response(status_code=CLIENT_CLOSED)
    try:
        event = first.result()
    except FusionError as exc:
        return from_fusion_error(exc).response()
    except Exception:
        logger.exception("fusion run failed before streaming")
        return internal_error().response()
    return EventSourceResponse(_sse(handle, event, run), sep="\n")


async def _first_event(handle: Pump[RunEvent], progress: bool) -> RunEvent | None:
    """The event that opens the stream: the first one at all, or the first non-progress one."""
    while True:
        event = await anext(handle, None)
        if event is None or progress or event.kind != "progress":
            return event


def _data(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


async def _sse(
    handle: Pump[RunEvent], first: RunEvent | None, run: RunRequest
) -> AsyncIterator[Any]:
    """chat.completion.chunk events, then `data: [DONE]`; a failure becomes an error event.

    sse-starlette cancels this generator when the client disconnects; `finally` then cancels
    the run, which closes its upstream calls.
    """
    writer = ChunkWriter(model=run.model, include_usage=run.include_usage)
    try:
        try:
            yield _data(writer.start())
            event = first
            while event is not None:
                if event.kind == "progress" and run.progress and event.progress:
                    yield ServerSentEvent(
                        comment=json.dumps(
                            {"object": "fusion.progress", **event.progress}, default=str
                        )
                    )
                elif event.kind == "token" and event.chunk is not None:
                    for chunk in writer.token(event.chunk):
                        yield _data(chunk)
                elif event.kind == "final" and isinstance(event.message, AIMessage):
                    for chunk in writer.finish(event.message):
                        yield _data(chunk)
                event = await anext(handle, None)
        except FusionError as exc:
            yield _data(from_fusion_error(exc).body())
        except Exception:
            logger.exception("fusion run failed while streaming")
            yield _data(internal_error().body())
        yield ServerSentEvent(data="[DONE]")
    finally:
        await handle.cancel()
