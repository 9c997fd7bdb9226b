"""OpenRouter Fusion's API on fusiongraph's runs: a translation at the edge, not a second pipeline.

A request that asks for OpenRouter Fusion (the `openrouter/fusion` alias, a `fusion` plugin or
an `openrouter:fusion` server tool) becomes an ordinary fusiongraph run (serve/openrouter_plan.py
maps its settings). The router's choice is the calling model's: it gets the fusion tool (and the
caller's own function tools, never web tools) and decides; `tool_choice: "required"` skips the
question. When it calls the tool, the graph runs and its synthesizer, the same calling model,
writes the answer from the analysis. When nothing usable comes back (every panelist failed,
rate limits, the budget), the calling model answers alone, as OpenRouter's does after a failed
tool result.

The result (serve/openrouter_result.py) is the `openrouter:fusion` output item on /v1/responses
and its `response.fusion_call.*` stream events, a `reasoning.server_tool_call` entry of the
message's `reasoning_details` on chat completions; fusiongraph's own record stays in the
top-level `fusion` field. Errors are in OpenRouter's shape, which its SDK reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage, AnyMessage
from sse_starlette import EventSourceResponse, ServerSentEvent

from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.models import close_model
from fusiongraph.graph.runner import RunEvent
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.openai_errors import OpenAIError, from_fusion_error
from fusiongraph.serve.openai_request import load_json, parse_body, parse_request
from fusiongraph.serve.openai_response import ChunkWriter, completion_body, completion_id
from fusiongraph.serve.openrouter_plan import (
    FusionAsk,
    FusionPlan,
    OpenRouterSettings,
    plan_fusion,
    take_fusion,
)
from fusiongraph.serve.openrouter_protocol import DEPTH_HEADER
from fusiongraph.serve.openrouter_result import (
    FusionStreamWriter,
    failure_of,
    fusion_item,
    server_tool_detail,
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
    race_disconnect,
    relay,
)
from fusiongraph.tools.aio import Pump, cancel_and_wait

# The fusion tool as the calling model sees it (a function name: OpenAI's allow no colon).
TOOL_FUNCTION = "openrouter_fusion"
TOOL_DESCRIPTION = (
    "Ask a panel of independent models to answer the user's request in parallel; an analyst "
    "compares their answers (consensus, contradictions, partial coverage, unique insights, "
    "blind spots) and you then write the final answer from that analysis. Call it only when "
    "the task deserves several perspectives: research, expert critique, compare and contrast, "
    "or anything where being wrong is expensive. Do not call it for short tactical requests."
)


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
    return JSONResponse(openrouter_error_body(exc), status_code=exc.status, headers=exc.headers)


def openrouter_error_body(exc: OpenAIError) -> dict[str, Any]:
    metadata = {"param": exc.param, "reason": exc.code, "type": exc.error_type, **exc.extra}
    message = exc.message
    if exc.param and exc.param not in message:
        message = f"{exc.param}: {message}"  # the message names the field too
    body = {"error": {"code": exc.status, "message": message, "metadata": metadata}}
    return dict(jsonable_encoder(body))


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
            kwargs: dict[str, Any] = {"tool_choice": choice} if choice not in (None, "auto") else {}
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
        if outcome.run.plan.thread_id and reply is None:  # only a run has a thread
            response.headers[THREAD_HEADER] = outcome.run.plan.thread_id
        return response

    async def _race(self, request: Request, work: Any) -> Any:
        """`work` (a call of the calling model) unless the client leaves first: then it is
        cancelled, as a run is."""
        task = asyncio.ensure_future(work)
        try:
            gone = await race_disconnect(request, task)
        except BaseException:
            await cancel_and_wait(task)
            raise
        if gone:
            await cancel_and_wait(task)
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
                # OpenRouter's mid-stream error: a chunk with `error` and finish_reason "error".
                error = openrouter_error_body(as_error(exc))["error"]
                yield _data(
                    writer._chunk(
                        {}, "error", error={"code": error["code"], "message": error["message"]}
                    )
                )
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
            if reply is not None:  # no run: nothing stored under the thread's id
                thread_id = None
                base.update(id=RESPONSE_PREFIX + uuid.uuid4().hex, store=False)
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
        writer = FusionStreamWriter(
            base, item_id=outcome.item_id, slugs=outcome.plan.slugs, analyst=outcome.plan.analyst
        )
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

                def fusion_events(event: RunEvent) -> list[ServerSentEvent]:
                    return writer.progress(event.progress or {})

                async for sse in relay(handle, first, writer, fusion_events):
                    yield sse
            except FusionError as exc:
                failure = failure_of(exc)
                if failure is None:
                    # The tool's work is done (its record came with the error); what failed is
                    # the answer after it: the item ends, then response.failed.
                    done = fusion_item(exc.details, outcome.plan.slugs, iid=outcome.item_id)
                    for sse in writer.fusion_done(done):
                        yield sse
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
