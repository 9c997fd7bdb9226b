"""OpenTelemetry spans for the server's runs: one per run, per graph node, per model call.

A LangChain callback handler in the run's config is the source: LangGraph reports each node as
a chain run named after the node, and every chat model call reports its model and usage, so no
node carries tracing code. LangSmith's tracer is another handler beside this one and keeps
working as it does.

Off unless the standard OTEL_* variables configure an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER` other than `none`); only then
does this module import the SDK (the `otel` extra: opentelemetry-sdk and the OTLP/HTTP
exporter) and set up a tracer provider (one an embedding app set up already is used as is).

Spans: `fusion.run` (thread id, outcome, strategy, tokens and cost of the whole run), one span
per node named after it (`dispatch`, `panelist`, `gate`, `judge`, `synthesis`, `finish`; a
panelist's carries its id, model, tokens and cost from the record), and `chat <model>` per model
call (model, input/output tokens). Node spans end when the run does, at the time the node
ended, so that the record's cost can be set on them.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

TRACER_NAME = "fusiongraph"
ROOT_SPAN = "fusion.run"


def otel_configured(env: dict[str, str] | None = None) -> bool:
    """Whether the OTEL_* environment asks for traces."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracer_from_env() -> Tracer | None:
    """A tracer exporting as OTEL_* says, or None (and no SDK import) when it says nothing."""
    if not otel_configured():
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):  # an embedding app may have set one up
        exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
        provider = TracerProvider(resource=Resource.create({"service.name": "fusiongraph"}))
        for name in (e.strip() for e in exporters):
            if name == "console":
                provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    return trace.get_tracer(TRACER_NAME)


def _usage_of(response: Any) -> dict[str, int]:
    """Input/output tokens of one model call's LLMResult (usage_metadata, else llm_output)."""
    for generations in getattr(response, "generations", None) or []:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                return {k: int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens")}
    token_usage = (getattr(response, "llm_output", None) or {}).get("token_usage") or {}
    return {
        "input_tokens": int(token_usage.get("prompt_tokens") or 0),
        "output_tokens": int(token_usage.get("completion_tokens") or 0),
    }


def _model_name(serialized: Any, metadata: dict[str, Any], kwargs: dict[str, Any]) -> str:
    params = kwargs.get("invocation_params") or {}
    name = metadata.get("ls_model_name") or params.get("model") or params.get("model_name")
    if not name and isinstance(serialized, dict):
        name = (serialized.get("kwargs") or {}).get("model_name") or serialized.get("name")
    return str(name or "unknown")


class RunTracer(BaseCallbackHandler):
    """The spans of one run (a handler per run: it holds that run's open spans)."""

    run_inline = True  # called on the event loop, in order: no thread pool per callback

    def __init__(self, tracer: Tracer, *, thread_id: str | None = None) -> None:
        self.tracer = tracer
        self.thread_id = thread_id
        self.root: Span | None = None
        self._spans: dict[UUID, Span] = {}
        # chain runs that are no span (edge routers, inner sequences) -> the span they sit in
        self._parent_of: dict[UUID, UUID | None] = {}
        self._nodes: list[tuple[Span, dict[str, Any], int | None]] = []
        self._node_index: dict[UUID, int] = {}

    # -- helpers
    def _context_for(self, parent_run_id: UUID | None) -> Any:
        from opentelemetry import trace

        run_id = parent_run_id
        while run_id is not None and run_id not in self._spans:
            run_id = self._parent_of.get(run_id)
        span = self._spans.get(run_id) if run_id is not None else self.root
        return trace.set_span_in_context(span) if span is not None else None

    def _start_root(self) -> None:
        self.root = self.tracer.start_span(ROOT_SPAN)
        if self.thread_id:
            self.root.set_attribute("fusion.thread_id", self.thread_id)

    # -- chains: the graph itself and its nodes
    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        name = kwargs.get("name") or ""
        if parent_run_id is None and self.root is None:
            self._start_root()
            self._parent_of[run_id] = None
            return
        if name and name == metadata.get("langgraph_node"):
            span = self.tracer.start_span(name, context=self._context_for(parent_run_id))
            if self.thread_id:
                span.set_attribute("fusion.thread_id", self.thread_id)
            panelist = inputs.get("panelist") if isinstance(inputs, dict) else None
            if isinstance(panelist, str):
                span.set_attribute("fusion.panelist", panelist)
            self._spans[run_id] = span
            self._node_index[run_id] = len(self._nodes)
            self._nodes.append((span, {"node": name, "panelist": panelist}, None))
        else:
            self._parent_of[run_id] = parent_run_id

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._node_ended(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.get(run_id)
        if span is not None:
            span.record_exception(error)
            _set_error(span, error)
        self._node_ended(run_id)

    def _node_ended(self, run_id: UUID) -> None:
        index = self._node_index.pop(run_id, None)
        if index is not None:
            span, info, _ = self._nodes[index]
            self._nodes[index] = (span, info, time.time_ns())
            self._spans.pop(run_id, None)
        self._parent_of.pop(run_id, None)

    # -- model calls
    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        model = _model_name(serialized, metadata or {}, kwargs)
        span = self.tracer.start_span(f"chat {model}", context=self._context_for(parent_run_id))
        span.set_attribute("gen_ai.request.model", model)
        if self.thread_id:
            span.set_attribute("fusion.thread_id", self.thread_id)
        self._spans[run_id] = span

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.pop(run_id, None)
        if span is None:
            return
        usage = _usage_of(response)
        span.set_attribute("gen_ai.usage.input_tokens", usage["input_tokens"])
        span.set_attribute("gen_ai.usage.output_tokens", usage["output_tokens"])
        span.end()

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.pop(run_id, None)
        if span is not None:
            span.record_exception(error)
            _set_error(span, error)
            span.end()

    # -- the end of the run, from the server (it knows the outcome and the record)
    def finish(self, outcome: str, record: dict[str, Any] | None) -> None:
        """End every span: nodes with the record's model, tokens and cost, then the run."""
        record = record or {}
        for span, info, ended in self._nodes:
            for key, value in _node_attributes(info, record).items():
                span.set_attribute(key, value)
            span.end(end_time=ended)
        for span in self._spans.values():  # model calls cut by a cancellation
            span.set_attribute("fusion.cancelled", True)
            span.end()
        self._spans.clear()
        self._nodes.clear()
        if self.root is None:
            self._start_root()  # a replay, or a run that failed before the graph started
        assert self.root is not None
        self.root.set_attribute("fusion.outcome", outcome)
        aggregation = record.get("aggregation") or {}
        if aggregation.get("applied"):
            self.root.set_attribute("fusion.strategy", str(aggregation["applied"]))
        total = (record.get("usage") or {}).get("total") or {}
        for kind in ("input_tokens", "output_tokens"):
            if total.get(kind) is not None:
                self.root.set_attribute(f"gen_ai.usage.{kind}", int(total[kind]))
        cost = (record.get("cost_usd") or {}).get("total")
        if isinstance(cost, int | float):
            self.root.set_attribute("fusion.cost_usd", float(cost))
        if outcome not in ("ok", "replayed"):
            from opentelemetry.trace import Status, StatusCode

            self.root.set_status(Status(StatusCode.ERROR, outcome))
        self.root.end()


def _node_attributes(info: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What the record says about one node: its model, tokens and cost."""
    node, usage, cost = info["node"], record.get("usage") or {}, record.get("cost_usd") or {}
    entry: dict[str, Any] = {}
    if node == "panelist" and info.get("panelist"):
        entries = [*(record.get("panel") or []), *(record.get("failed_models") or [])]
        entry = next((e for e in entries if e.get("panelist") == info["panelist"]), {})
        if entry.get("reason"):
            entry = {**entry, "failure": entry["reason"]}
    elif node == "judge":
        entry = {
            "model": (record.get("judge") or {}).get("model"),
            "usage": usage.get("judge"),
            "cost_usd": cost.get("judge"),
        }
    elif node == "synthesis":
        entry = {
            "model": (record.get("synthesizer") or {}).get("model"),
            "usage": usage.get("synthesis"),
            "cost_usd": cost.get("synthesis"),
        }
    attributes: dict[str, Any] = {}
    if entry.get("model"):
        attributes["gen_ai.request.model"] = str(entry["model"])
    for kind in ("input_tokens", "output_tokens"):
        value = (entry.get("usage") or {}).get(kind)
        if value is not None:
            attributes[f"gen_ai.usage.{kind}"] = int(value)
    if isinstance(entry.get("cost_usd"), int | float):
        attributes["fusion.cost_usd"] = float(entry["cost_usd"])
    if entry.get("failure"):
        attributes["fusion.failure"] = str(entry["failure"])
    if entry.get("cached"):
        attributes["fusion.cached"] = True
    return attributes


def _set_error(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
