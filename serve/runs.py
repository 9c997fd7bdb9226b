"""One fusion run behind any HTTP surface (chat completions, Anthropic Messages, Responses).

Every surface turns its request into the same `ChatCompletionRequest`, so model names, request
limits, the `fusion` object, tool binding and message checks are one code path; this module then
plans the run's thread and drives it, tied to the request: a client that disconnects cancels the
run (and its upstream calls), a failure before the first answer token keeps its status code.
Each surface only writes its own body, stream events and error shape.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.models import FUSION_DEPTH_HEADER
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
    bad_request,
    from_fusion_error,
    internal_error,
    logger,
)
from fusiongraph.serve.openai_request import (
    ChatCompletionRequest,
    RequestLimits,
    RunRequest,
    build_run,
    error_param,
    read_body,
)
from fusiongraph.serve.run_watch import RunHooks
from fusiongraph.tools.aio import Pump, cancel_and_wait

if TYPE_CHECKING:
    from fusiongraph.graph.builder import FusionGraph

# Names the checkpointed thread of a request (durable servers): sent by clients to resume or
# replay a run, returned on every response.
THREAD_HEADER = "X-Fusion-Thread-Id"
# Status logged for a request whose client went away (nginx's convention; never sent).
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the run has been cancelled."""


def reject_recursion(request: Request) -> None:
    """A request sent from inside a fusion run would put fusion on its own panel."""
    if FUSION_DEPTH_HEADER.lower() in request.headers:
        raise OpenAIError(
            400,
            "this request comes from inside a fusion run; a fusion model cannot sit "
            "on its own panel",
            param="model",
            code="recursion",
        )


async def read_request(request: Request, limits: RequestLimits) -> bytes:
    """The body, within the size and arrival-time limits (serve/openai_request.read_body)."""
    return await read_body(
        request.stream(),
        request.headers.get("content-length"),
        limits.max_body_bytes,
        limits.body_timeout_s,
    )


def chat_request(fields: dict[str, Any], origins: list[str]) -> ChatCompletionRequest:
    """The chat-completions request another surface's request stands for (built from validated
    data, so a failure here is a parameter the conversion could not carry)."""
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = rename_param(error_param(err), origins)
        message = err["msg"].removeprefix("Value error, ")
        raise bad_request(f"{param}: {message}" if param else message, param) from None


def function_tool(name: str, description: str | None, parameters: Any) -> dict[str, Any]:
    """A chat-completions function tool, as another surface's client tool converts to."""
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": function}


# Origins that are a message's content themselves (a string parameter), not a message object.
CONTENT_PARAMS = frozenset({"system", "instructions", "input"})


def rename_param(param: str | None, origins: list[str]) -> str | None:
    """`messages[j]...` of the converted conversation -> where message j came from in the
    caller's request (`origins[j]`: `system`, `messages[3]`, `input[2]`, ...)."""
    if not param or not param.startswith("messages["):
        return param
    index, _, rest = param.removeprefix("messages[").partition("]")
    if not index.isdigit() or int(index) >= len(origins):
        return param
    origin = origins[int(index)]
    if origin in CONTENT_PARAMS:
        rest = rest.removeprefix(".content")
    return origin + rest


def renamed(exc: OpenAIError, origins: list[str]) -> OpenAIError:
    """`exc` with its parameter (and the message that quotes it) in the caller's terms."""
    param = rename_param(exc.param, origins)
    if param != exc.param and exc.param:
        exc.message = exc.message.replace(exc.param, param or "", 1)
        exc.param = param
    return exc


@dataclass
class PreparedRun:
    """A validated request with its thread plan: ready to stream or to wait for."""

    graph: FusionGraph
    run: RunRequest
    plan: ThreadPlan
    messages: Sequence[BaseMessage] | None
    # Metrics, traces and the shutdown drain (serve/run_watch.py): every run is watched.
    hooks: RunHooks = field(default_factory=RunHooks)

    def events(self) -> Pump[RunEvent]:
        """The run's events, read by a task of its own: cancelling it cancels the run. A
        shutdown whose grace ran out ends them with ShuttingDown (serve/shutdown.py)."""
        watch = self.hooks.watch(self.plan.thread_id, replayed=self.plan.replay is not None)
        if self.plan.replay is not None:
            events = replay(self.plan.replay)
        else:
            events = stream_run(
                self.graph,
                self.messages,
                self.run.context,
                watch.config(self.plan.config),
                progress=self.run.progress,
            )
        pump = Pump(watch.events(events), name="fusion-run")
        release = self.hooks.drain.hold(pump.abort)
        pump.task.add_done_callback(lambda _: release())
        return pump

    async def final(self, request: Request) -> AIMessage:
        """The final message of a non-streamed run; ClientGone when the client left first,
        ShuttingDown when the server's shutdown grace ran out first."""
        if self.plan.replay is not None:
            watch = self.hooks.watch(self.plan.thread_id, replayed=True)
            watch.start()
            watch.succeeded(self.plan.replay)
            return self.plan.replay
        inputs = None if self.messages is None else {"messages": self.messages}
        watch = self.hooks.watch(self.plan.thread_id)
        config = watch.config(self.plan.config)
        # langgraph's overloads take the input and context schemas only; at run time it coerces
        # a context dict into the schema, and add_messages takes any message (RemoveMessage too).
        result = self.graph.ainvoke(inputs, config=config, context=self.run.context)  # type: ignore[call-overload]
        task = asyncio.ensure_future(watch.final(result))
        stopped: list[BaseException] = []

        def stop(exc: BaseException) -> None:
            stopped.append(exc)
            task.cancel()

        release = self.hooks.drain.hold(stop)
        try:
            gone = await race_disconnect(request, task)
        finally:
            release()
            await cancel_and_wait(task)
        if stopped:
            raise stopped[0]
        if gone:
            logger.info("client disconnected; run cancelled")
            raise ClientGone
        return task.result()["messages"][-1]  # FusionError: raised


@dataclass
class RunService:
    """What every surface shares: the graph, the callable model names, the limits and the
    context schema the `fusion` object follows."""

    holder: dict[str, FusionGraph]
    models: dict[str, dict[str, Any]]
    limits: RequestLimits
    context_schema: type[FusionContext]
    hooks: RunHooks = field(default_factory=RunHooks)

    @property
    def graph(self) -> FusionGraph:
        return self.holder["graph"]

    def check_model(self, model: str) -> None:
        if model not in self.models:
            raise OpenAIError(
                400,
                f"the model {model!r} does not exist; GET /v1/models lists {sorted(self.models)}",
                param="model",
                code="model_not_found",
            )

    async def prepare(
        self,
        body: ChatCompletionRequest,
        *,
        api_key: str | None,
        thread_id: str | None,
        origins: list[str] | None = None,
    ) -> PreparedRun:
        """Validate everything a run needs (a 400 before any model is called), then plan its
        thread. `origins` names where each message came from when `body` was converted from
        another API (for errors in the caller's terms)."""
        self.check_model(body.model)
        try:
            run = build_run(body, self.models[body.model], self.limits, self.context_schema)
        except OpenAIError as exc:
            raise renamed(exc, origins) if origins else exc from None
        check_conversation(run.messages)
        # A bad configuration is a 400, before any run.
        resolve_config(self.context_schema(**run.context))
        graph = self.graph
        plan = await thread_plan(graph, thread_id, body, run, api_key)
        messages = plan.inputs(run.messages, whole_conversation=True)
        return PreparedRun(graph, run, plan, messages, self.hooks)


async def thread_plan(
    graph: FusionGraph,
    thread_id: str | None,
    body: ChatCompletionRequest,
    run: RunRequest,
    api_key: str | None,
) -> ThreadPlan:
    """With a checkpointer every run has a thread: the client's X-Fusion-Thread-Id, or a new one,
    returned in that header. The request's digest (model, conversation, settings: not how it is
    delivered, so a streamed retry matches) decides between resume, replay and a new turn
    (graph/threads.py); threads belong to the API key that made them."""
    if graph.checkpointer is None:  # no threads: the digest would only be thrown away
        return ThreadPlan()
    request = digest({"model": body.model, "messages": body.messages, "context": run.context})
    try:
        return await plan_thread(graph, thread_id, request=request, owner=owner_of(api_key))
    except ThreadNotFound as exc:
        raise OpenAIError(404, str(exc), param=THREAD_HEADER, code="thread_not_found") from None
    except ThreadConflict as exc:
        raise OpenAIError(409, str(exc), param=THREAD_HEADER, code="thread_conflict") from None


async def replay(final: AIMessage) -> AsyncIterator[RunEvent]:
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


async def _wait_disconnect(request: Request) -> None:
    """Return when the client goes away (the body has been read, so receive() waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def race_disconnect(request: Request, work: asyncio.Future[Any]) -> bool:
    """Wait for `work` unless the client disconnects first; True when it did."""
    watcher = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return not work.done()


async def open_stream(handle: Pump[RunEvent], progress: bool, request: Request) -> RunEvent | None:
    """Hold the response until the run's first answer token, so that every failure before the
    synthesis writes (config, budget, all panelists failing, rate limits, the local server not
    starting) is still a proper status code for a standard client: it is raised here. A request
    with `fusion.progress` wants to watch the panel, so its stream opens at the first progress
    event. ClientGone when the client left first (the run is cancelled)."""
    first = asyncio.ensure_future(_first_event(handle, progress))
    try:
        gone = await race_disconnect(request, first)
    except BaseException:
        first.cancel()
        await handle.cancel()
        raise
    if gone:
        first.cancel()
        await handle.cancel()
        logger.info("client disconnected before the stream opened; run cancelled")
        raise ClientGone
    return first.result()


async def _first_event(handle: Pump[RunEvent], progress: bool) -> RunEvent | None:
    """The event that opens the stream: the first one at all, or the first non-progress one."""
    while True:
        event = await anext(handle, None)
        if event is None or progress or event.kind != "progress":
            return event


def progress_comment(event: RunEvent) -> str:
    """A progress event as the text of an SSE comment line, which every SSE client skips."""
    return json.dumps({"object": "fusion.progress", **(event.progress or {})}, default=str)


def as_error(exc: Exception) -> OpenAIError:
    """Any failure of a run as the error chat completions would send (a FusionError by its
    reason; anything else a logged 500 that shows no internals)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, FusionError):
        return from_fusion_error(exc)
    logger.error("fusion run failed", exc_info=exc)
    return internal_error()


class EventWriter(Protocol):
    """Writes one API's stream events for a run (serve/anthropic_api.py, responses_api.py)."""

    def start(self) -> list[ServerSentEvent]: ...
    def token(self, chunk: AIMessageChunk) -> list[ServerSentEvent]: ...
    def finish(self, message: AIMessage) -> list[ServerSentEvent]: ...
    def fail(self, error: OpenAIError) -> list[ServerSentEvent]: ...


async def respond(
    prepared: PreparedRun,
    request: Request,
    writer: EventWriter,
    body_of: Callable[[AIMessage], dict[str, Any]],
    **sse: Any,
) -> Response:
    """A prepared run's answer on another surface: with `stream`, its events as `writer` writes
    them (`sse`: EventSourceResponse's options), else `body_of` its final message as JSON; the
    thread's id in THREAD_HEADER when it has one."""
    run = prepared.run
    response: Response
    if run.stream:
        handle = prepared.events()
        first = await open_stream(handle, run.progress, request)
        events = stream_events(handle, first, writer, run.progress)
        response = EventSourceResponse(events, sep="\n", **sse)
    else:
        response = JSONResponse(body_of(await prepared.final(request)))
    if prepared.plan.thread_id:
        response.headers[THREAD_HEADER] = prepared.plan.thread_id
    return response


async def stream_events(
    handle: Pump[RunEvent], first: RunEvent | None, writer: EventWriter, progress: bool
) -> AsyncIterator[ServerSentEvent]:
    """A run's SSE events as `writer` writes them, progress as comments when asked for, and a
    failure after the stream opened as the writer's failure event. sse-starlette cancels this
    generator when the client disconnects; `finally` then cancels the run (and its calls)."""

    def comment(event: RunEvent) -> list[ServerSentEvent]:
        return [ServerSentEvent(comment=progress_comment(event))] if progress else []

    try:
        try:
            for sse in writer.start():
                yield sse
            async for sse in relay(handle, first, writer, comment):
                yield sse
        except Exception as exc:
            for sse in writer.fail(as_error(exc)):
                yield sse
    finally:
        await handle.cancel()


async def relay(
    handle: Pump[RunEvent],
    first: RunEvent | None,
    writer: EventWriter,
    progress: Callable[[RunEvent], list[ServerSentEvent]],
) -> AsyncIterator[ServerSentEvent]:
    """A run's events from `first` to its end: tokens and the final message as `writer` writes
    them, progress as `progress` does. Errors and cancelling the run are the caller's."""
    event = first
    while event is not None:
        if event.kind == "progress" and event.progress:
            for sse in progress(event):
                yield sse
        elif event.kind == "token" and event.chunk is not None:
            for sse in writer.token(event.chunk):
                yield sse
        elif event.kind == "final" and isinstance(event.message, AIMessage):
            for sse in writer.finish(event.message):
                yield sse
        event = await anext(handle, None)
