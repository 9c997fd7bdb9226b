"""What watches every run the server makes: its metrics, its trace and the shutdown drain.

serve/runs.py wraps each run (streamed or not) in a `RunWatch`; when the run ends, however it
ends, the watch reads its outcome and record once and hands them to the metrics
(serve/metrics.py) and to the run's tracer (serve/tracing.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig

from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.runner import RunEvent
from fusiongraph.serve.metrics import RunMetrics
from fusiongraph.serve.shutdown import Drain

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from fusiongraph.serve.tracing import RunTracer


@dataclass
class RunHooks:
    """An app's watchers: metrics (None: off), a tracer (None: OTEL not configured), the drain."""

    metrics: RunMetrics | None = None
    tracer: Tracer | None = None
    drain: Drain = field(default_factory=Drain)

    def watch(self, thread_id: str | None = None, *, replayed: bool = False) -> RunWatch:
        return RunWatch(self, thread_id, replayed)


class RunWatch:
    """One run: started when it starts running (a run cancelled before it ever ran counts
    nowhere), ended exactly once with its outcome and record."""

    def __init__(self, hooks: RunHooks, thread_id: str | None, replayed: bool) -> None:
        self.hooks = hooks
        self.replayed = replayed
        self.started: float | None = None
        self.trace: RunTracer | None = None
        if hooks.tracer is not None:
            from fusiongraph.serve.tracing import RunTracer

            self.trace = RunTracer(hooks.tracer, thread_id=thread_id)
        self.ended = False

    def config(self, config: RunnableConfig | None) -> RunnableConfig | None:
        """The run's config with the tracer's callback handler added (when tracing is on)."""
        if self.trace is None:
            return config
        traced = RunnableConfig(**(config or {}))
        handlers = traced.get("callbacks")  # a thread's config holds no callback manager
        traced["callbacks"] = [*(handlers if isinstance(handlers, list) else []), self.trace]
        return traced

    async def events(self, events: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
        """`events`, ending the watch with the run's final message or its failure."""
        final: AIMessage | None = None
        self.start()
        try:
            async for event in events:
                if event.kind == "final" and isinstance(event.message, AIMessage):
                    final = event.message
                yield event
        except BaseException as exc:
            self.failed(exc)
            raise
        self.succeeded(final)

    async def final(self, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The result of a non-streamed run, ending the watch."""
        self.start()
        try:
            result = await run
        except BaseException as exc:
            self.failed(exc)
            raise
        messages = result.get("messages") if isinstance(result, dict) else None
        last = messages[-1] if messages else None
        self.succeeded(last if isinstance(last, AIMessage) else None)
        return result

    def start(self) -> None:
        if self.started is None:
            self.started = self.hooks.metrics.run_started() if self.hooks.metrics else 0.0

    def succeeded(self, message: AIMessage | None) -> None:
        record = (message.response_metadata or {}).get("fusion") if message else None
        self._end("replayed" if self.replayed else "ok", record)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, FusionError):
            self._end(exc.reason, exc.details)
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            self._end("shutdown" if self.hooks.drain.expired.is_set() else "cancelled", None)
        else:
            self._end("internal_error", None)

    def _end(self, outcome: str, record: dict[str, Any] | None) -> None:
        if self.ended or self.started is None:
            return
        self.ended = True
        counted = None if self.replayed else record
        if self.hooks.metrics is not None:
            self.hooks.metrics.run_ended(self.started, outcome, counted)
        if self.trace is not None:
            self.trace.finish(outcome, record)
