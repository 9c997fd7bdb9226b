"""OpenTelemetry spans of server runs (the SDK's in-memory exporter): one per run, per node and
per model call, nested that way, with thread id, model, tokens and cost; off without OTEL_*."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import create_app
from fusiongraph.serve.tracing import ROOT_SPAN, otel_configured
from tests.support.servers import running_server

PANEL = ["openai:pa-0.020s", "openai:pb-0.030s"]
PRICE = {"input": 1.0, "output": 2.0}
CONTEXT = {
    "panel": PANEL,
    "judge": "openai:judge-0.010s",
    "synthesizer": "openai:synth-0.010s",
    "tool_mode": "off",
    "prices": {m.removeprefix("openai:"): PRICE for m in [*PANEL, "judge-0.010s", "synth-0.010s"]},
}
# A panelist that never answers, cut at its timeout: the run has nothing left.
FAILING = {**CONTEXT, "panel": ["openai:gone-never"], "panel_timeout_s": 1}
USER = [{"role": "user", "content": "[bench:trace] Why is the sky blue?"}]


@pytest.fixture
def traced(openai_env: str) -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    graph = build_graph(checkpointer=InMemorySaver())
    app = create_app(
        graph,
        api_keys=[],
        aliases={"fusion-traced": CONTEXT, "fusion-failing": FAILING},
        tracer=provider.get_tracer("t"),
    )
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


@pytest.mark.parametrize("stream", [False, True])
def test_a_run_is_a_tree_of_spans_with_thread_model_tokens_and_cost(
    traced: Any, stream: bool
) -> None:
    client, exporter = traced
    response = client.post(
        "/v1/chat/completions",
        json={"model": "fusion-traced", "messages": USER, "stream": stream},
    )
    assert response.status_code == 200
    thread_id = response.headers["x-fusion-thread-id"]
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        record = next(e["fusion"] for e in map(json.loads, events) if "fusion" in e)
    else:
        record = response.json()["fusion"]
    spans = exporter.get_finished_spans()

    (run,) = by_name(spans, ROOT_SPAN)
    assert run.parent is None
    assert run.attributes["fusion.thread_id"] == thread_id
    assert run.attributes["fusion.outcome"] == "ok"
    assert run.attributes["fusion.strategy"] == "synthesize"
    assert run.attributes["gen_ai.usage.input_tokens"] == record["usage"]["total"]["input_tokens"]
    assert run.attributes["fusion.cost_usd"] == pytest.approx(record["cost_usd"]["total"])

    # One span per node, children of the run.
    for node in ("dispatch", "gate", "judge", "synthesis"):
        (span,) = by_name(spans, node)
        assert span.parent.span_id == run.context.span_id
    panelists = by_name(spans, "panelist")
    assert len(panelists) == 2
    entries = {e["panelist"]: e for e in record["panel"]}
    for span in panelists:
        assert span.parent.span_id == run.context.span_id
        entry = entries[span.attributes["fusion.panelist"]]
        assert span.attributes["gen_ai.request.model"] == entry["model"]
        assert span.attributes["gen_ai.usage.output_tokens"] == entry["usage"]["output_tokens"]
        assert span.attributes["fusion.cost_usd"] == pytest.approx(entry["cost_usd"])
        assert span.attributes["fusion.thread_id"] == thread_id
        assert run.start_time <= span.start_time <= span.end_time <= run.end_time

    # One span per model call, inside the node that made it, with its model and tokens.
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert sorted(s.attributes["gen_ai.request.model"] for s in calls) == sorted(
        ["pa-0.020s", "pb-0.030s", "judge-0.010s", "synth-0.010s"]
    )
    node_of = {s.context.span_id: s.name for s in spans}
    for call in calls:
        expected = {"judge-0.010s": "judge", "synth-0.010s": "synthesis"}.get(
            call.attributes["gen_ai.request.model"], "panelist"
        )
        assert node_of[call.parent.span_id] == expected
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
    (judge,) = by_name(spans, "judge")
    judge_call = next(c for c in calls if c.parent.span_id == judge.context.span_id)
    assert (
        judge_call.attributes["gen_ai.usage.input_tokens"]
        == (record["usage"]["judge"]["input_tokens"])
    )
    assert len({s.context.trace_id for s in spans}) == 1


def test_a_failed_run_ends_its_span_with_the_reason(traced: Any) -> None:
    client, exporter = traced
    response = client.post(
        "/v1/chat/completions",
        json={"model": "fusion-failing", "messages": USER},
    )
    assert response.status_code in (502, 504)
    (run,) = by_name(exporter.get_finished_spans(), ROOT_SPAN)
    assert run.attributes["fusion.outcome"] == response.json()["error"]["fusion"]["reason"]
    assert not run.status.is_ok


def test_tracing_is_off_without_otel_settings() -> None:
    """Unset OTEL_* variables: no tracer provider is set up and no span is made. (The SDK module
    may still be imported: langsmith's client imports it whenever it is installed.)"""
    assert not otel_configured({})
    assert not otel_configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not otel_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_SDK_DISABLED": "true"})
    assert otel_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert otel_configured({"OTEL_TRACES_EXPORTER": "console"})
    probe = (
        "from opentelemetry import trace; from fusiongraph.serve.server import create_app; "
        "create_app(api_keys=[], checkpointer_url='memory'); "
        "print(type(trace.get_tracer_provider()).__name__)"
    )
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "x"}
    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert off.stdout.strip() == "ProxyTracerProvider", off.stderr
    env["OTEL_TRACES_EXPORTER"] = "console"
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert on.stdout.strip() == "TracerProvider", on.stderr
