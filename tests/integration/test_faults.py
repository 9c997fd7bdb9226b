"""Fault injection: the real graph and the real default model factory (ChatOpenAI over httpx)
against tests/support/faults.py, a real HTTP server on 127.0.0.1 that fails on purpose.

For every fault: the documented outcome, no hang (each test has a hard timeout), and the answers
of the panelists that did succeed are still in the result.

Fault -> outcome:
- 500 once, 429 once, reset once, first call slower than its timeout: retried by the SDK, the
  panelist succeeds (2 requests); 429 once with Retry-After: 1 waits the full second.
- 500 always: 3 requests (two retries), failed upstream_error. 429 always: 3 requests, failed
  rate_limited; a whole panel of them: FusionError rate_limited. Reset always: 3 requests,
  failed connection_error. 400: 1 request, never retried, failed bad_request.
- Retry-After: 30, longer than the panel timeout: cut at the panel timeout while waiting to retry
  the 429 (rate_limited), the retry never sent. 500 always with a panel timeout shorter than the
  retries: cut while retrying (upstream_error, "HTTP 500" in the message). Hang: cut at the panel
  timeout (timeout), the upstream sees the disconnect. A hanging judge with deadline_s: cut at
  85 % of the deadline (deadline), degraded answer.
- Malformed JSON: 1 request, failed invalid_response. A 50 MB answer (chunked or with
  Content-Length): stopped at the 16 MiB response cap, failed response_too_large, memory bounded.
- Judge returns valid JSON of the wrong shape, or garbage: degraded (synthesis from raw answers).
- Synthesis stream cut half-way: FusionError synthesis_failed with the panel answers and the
  analysis in its details.
- The server as its own panelist: the inner call is refused (400 recursion), failed recursion;
  a panel of only itself: 400 recursion.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph.state import CompiledStateGraph

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.models import MAX_RESPONSE_BYTES
from fusiongraph.graph.runner import stream_run
from fusiongraph.serve.server import create_app
from tests.support.faults import HUGE_BYTES, FaultUpstream, answer_text
from tests.support.servers import bind, running_server

pytestmark = pytest.mark.integration

QUESTION = "Why does water boil at a lower temperature at altitude?"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def graph() -> CompiledStateGraph:
    return build_graph()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    monkeypatch.delenv("FUSIONGRAPH_MAX_RESPONSE_BYTES", raising=False)


def spec(upstream: FaultUpstream, model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "base_url": upstream.base_url, "api_key_env": "FAKE_KEY", **extra}


def context(
    upstream: FaultUpstream,
    panel: list[str],
    *,
    judge: str = "ok.judge",
    synthesizer: str = "ok.synth",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "preset": "quality",
        "panel": [spec(upstream, m, timeout_s=extra.pop("call_timeout_s", None)) for m in panel],
        "judge": spec(upstream, judge),
        "synthesizer": spec(upstream, synthesizer),
        "tool_mode": "off",
        **extra,
    }


async def run(graph: CompiledStateGraph, ctx: dict[str, Any]) -> dict[str, Any]:
    """One run; the final message's fusion record."""
    result = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and final.content
    return final.response_metadata["fusion"]


def answers(fusion: dict[str, Any]) -> dict[str, str]:
    return {entry["model"]: entry["content"] for entry in fusion["panel"]}


def failures(fusion_or_details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["model"]: f for f in fusion_or_details["failed_models"]}


def assert_answered(fusion: dict[str, Any], *models: str) -> None:
    """Every successful panelist's own answer is in the result."""
    got = answers(fusion)
    for model in models:
        assert got.get(model) == answer_text(model), (model, got)


# ------------------------------------------------------------------------ transient: retried


@pytest.mark.timeout(60)
async def test_transient_500_is_retried(upstream: FaultUpstream, graph: CompiledStateGraph):
    fusion = await run(graph, context(upstream, ["flaky500.a", "ok.a"]))
    assert fusion["failed_models"] == []
    assert_answered(fusion, "flaky500.a", "ok.a")
    assert upstream.counts["flaky500.a"] == 2


@pytest.mark.timeout(60)
async def test_429_is_retried_after_retry_after(upstream: FaultUpstream, graph: CompiledStateGraph):
    fusion = await run(graph, context(upstream, ["flaky429.b", "ok.b"]))
    assert fusion["failed_models"] == []
    assert_answered(fusion, "flaky429.b", "ok.b")
    first, second = upstream.arrivals["flaky429.b"]
    assert second - first >= 0.95  # Retry-After: 1 honoured (a lower bound, not a timing)


@pytest.mark.timeout(60)
async def test_connection_reset_is_retried(upstream: FaultUpstream, graph: CompiledStateGraph):
    fusion = await run(graph, context(upstream, ["flakyreset.c", "reset.c", "ok.c"]))
    assert_answered(fusion, "flakyreset.c", "ok.c")
    assert upstream.counts["flakyreset.c"] == 2
    failed = failures(fusion)
    assert set(failed) == {"reset.c"}
    assert failed["reset.c"]["reason"] == "connection_error"
    assert upstream.counts["reset.c"] == 3  # one call and two retries


@pytest.mark.timeout(60)
async def test_timeout_is_retried(upstream: FaultUpstream, graph: CompiledStateGraph):
    """The first request hangs past the call's own timeout; the retry answers."""
    fusion = await run(graph, context(upstream, ["slowfirst.d", "ok.d"], call_timeout_s=1.0))
    assert fusion["failed_models"] == []
    assert_answered(fusion, "slowfirst.d", "ok.d")
    assert upstream.counts["slowfirst.d"] == 2


# ------------------------------------------------------------------ persistent: failed panelist


@pytest.mark.timeout(60)
async def test_500_always_fails_the_panelist_after_two_retries(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    fusion = await run(graph, context(upstream, ["err500.e", "ok.e"]))
    assert_answered(fusion, "ok.e")
    assert failures(fusion)["err500.e"]["reason"] == "upstream_error"
    assert upstream.counts["err500.e"] == 3


@pytest.mark.timeout(60)
async def test_400_is_not_retried(upstream: FaultUpstream, graph: CompiledStateGraph):
    fusion = await run(graph, context(upstream, ["bad400.f", "ok.f"]))
    assert_answered(fusion, "ok.f")
    failed = failures(fusion)["bad400.f"]
    assert failed["reason"] == "bad_request" and "unsupported parameter" in failed["message"]
    assert upstream.counts["bad400.f"] == 1


@pytest.mark.timeout(60)
async def test_429_always_is_rate_limited(upstream: FaultUpstream, graph: CompiledStateGraph):
    fusion = await run(graph, context(upstream, ["ratelimit.g", "ok.g"]))
    assert_answered(fusion, "ok.g")
    assert failures(fusion)["ratelimit.g"]["reason"] == "rate_limited"
    assert upstream.counts["ratelimit.g"] == 3


@pytest.mark.timeout(60)
async def test_whole_panel_rate_limited_is_a_typed_error(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    with pytest.raises(FusionError) as info:
        await run(graph, context(upstream, ["ratelimit.g1", "ratelimit.g2"]))
    assert info.value.reason == "rate_limited"
    assert {f["reason"] for f in info.value.details["failed_models"]} == {"rate_limited"}


@pytest.mark.timeout(60)
async def test_retry_after_longer_than_the_panel_timeout_is_cut(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    """Retry-After: 30 would be honoured by the SDK; the panel clock cuts the wait instead."""
    fusion = await run(graph, context(upstream, ["slow429.h", "ok.h"], panel_timeout_s=1.5))
    assert_answered(fusion, "ok.h")
    failed = failures(fusion)["slow429.h"]
    assert failed["reason"] == "rate_limited" and "retrying after HTTP 429" in failed["message"]
    assert upstream.counts["slow429.h"] == 1  # the retry never went out


@pytest.mark.timeout(60)
async def test_500s_cut_by_the_panel_timeout_are_an_upstream_error(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    """The SDK's retries (0.4-0.5 s, then 0.75-1 s of backoff) outlast a 1 s panel timeout: the
    panelist is cut while retrying, and reported as the 500s it was retrying, not as slow."""
    fusion = await run(graph, context(upstream, ["err500.h2", "ok.h2"], panel_timeout_s=1.0))
    assert_answered(fusion, "ok.h2")
    failed = failures(fusion)["err500.h2"]
    assert failed["reason"] == "upstream_error"
    assert "panel timeout" in failed["message"] and "retrying after HTTP 500" in failed["message"]
    assert upstream.counts["err500.h2"] == 2  # cut during the second backoff


@pytest.mark.timeout(60)
async def test_hanging_panelist_is_cut_at_the_panel_timeout(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    fusion = await run(graph, context(upstream, ["hang.i", "ok.i"], panel_timeout_s=1.5))
    assert_answered(fusion, "ok.i")
    assert failures(fusion)["hang.i"]["reason"] == "timeout"
    for _ in range(100):  # the cut closed the HTTP request: the upstream saw it go
        if upstream.disconnects["hang.i"]:
            break
        await asyncio.sleep(0.05)
    assert upstream.disconnects["hang.i"] == 1


@pytest.mark.timeout(60)
async def test_hanging_judge_is_cut_by_the_deadline(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    fusion = await run(graph, context(upstream, ["ok.i1", "ok.i2"], judge="hang.ij", deadline_s=4))
    assert_answered(fusion, "ok.i1", "ok.i2")
    assert fusion["degraded"] is True
    assert fusion["judge"]["error"]["reason"] == "deadline"


@pytest.mark.timeout(60)
async def test_malformed_json_fails_the_panelist(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    fusion = await run(graph, context(upstream, ["malformed.j", "ok.j"]))
    assert_answered(fusion, "ok.j")
    assert failures(fusion)["malformed.j"]["reason"] == "invalid_response"
    assert upstream.counts["malformed.j"] == 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["huge", "hugecl"])
async def test_50mb_answer_is_cut_at_the_response_cap(
    upstream: FaultUpstream, graph: CompiledStateGraph, mode: str
):
    """A 50 MB answer fails its panelist (response_too_large) once past the 16 MiB cap; the
    client stops reading, so the upstream never gets to send it all and memory stays bounded."""
    model = f"{mode}.k"
    tracemalloc.start()
    try:
        fusion = await run(graph, context(upstream, [model, "ok.k"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_answered(fusion, "ok.k")
    failed = failures(fusion)[model]
    assert failed["reason"] == "response_too_large"
    assert upstream.counts[model] == 1  # not retried
    assert upstream.sent[model] < HUGE_BYTES  # the client hung up early
    # One capped body at most, never the 50 MB answer (plus its decoded and parsed copies).
    assert peak < 2 * MAX_RESPONSE_BYTES + 8 * 2**20, peak


# --------------------------------------------------------------------- judge and synthesis


@pytest.mark.timeout(60)
@pytest.mark.parametrize("judge", ["judgejunk.l", "judgegarbage.l"])
async def test_invalid_judge_output_degrades(
    upstream: FaultUpstream, graph: CompiledStateGraph, judge: str
):
    fusion = await run(graph, context(upstream, ["ok.l1", "ok.l2"], judge=judge))
    assert_answered(fusion, "ok.l1", "ok.l2")
    assert fusion["degraded"] is True and fusion["analysis"] is None
    assert fusion["judge"]["ok"] is False and fusion["judge"]["error"]["message"]
    # JSON of the wrong shape keeps nothing (an empty analysis); garbage does not parse
    expected = {"judgejunk.l": "empty", "judgegarbage.l": "invalid_response"}[judge]
    assert fusion["judge"]["error"]["reason"] == expected


@pytest.mark.timeout(60)
async def test_synthesis_stream_cut_half_way_is_a_typed_error(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    """The streamed synthesis breaks off mid-body: the tokens already sent stay sent, the run
    ends in FusionError synthesis_failed, and the answers paid for travel in its details."""
    ctx = context(upstream, ["ok.m1", "ok.m2"], synthesizer="ssecut.m")
    tokens: list[str] = []
    with pytest.raises(FusionError) as info:
        async for event in stream_run(graph, [HumanMessage(QUESTION)], ctx):
            if event.kind == "token" and event.chunk is not None:
                tokens.append(str(event.chunk.content))
    assert "".join(tokens).startswith("ANSWER from ssecut.m")
    error = info.value
    assert error.reason == "synthesis_failed" and "connection_error" in error.message
    assert {r["model"]: r["content"] for r in error.details["panel"]} == {
        "ok.m1": answer_text("ok.m1"),
        "ok.m2": answer_text("ok.m2"),
    }
    assert error.details["analysis"]["consensus"]
    assert upstream.counts["ssecut.m"] == 1  # a stream that has started is never replayed


@pytest.mark.timeout(60)
async def test_synthesis_cut_without_streaming_is_retried_then_fails(
    upstream: FaultUpstream, graph: CompiledStateGraph
):
    ctx = context(upstream, ["ok.n"], synthesizer="ssecut.n")
    with pytest.raises(FusionError) as info:
        await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=ctx)
    assert info.value.reason == "synthesis_failed"
    assert [r["model"] for r in info.value.details["panel"]] == ["ok.n"]
    assert upstream.counts["ssecut.n"] == 3  # a body cut before it completed is retried


# ---------------------------------------------------------------------------------- recursion


@pytest.mark.timeout(90)
def test_server_calling_itself_is_refused(upstream: FaultUpstream) -> None:
    """A fusion server whose panel points back at itself, under a model name that is not
    `fusion*` (so the config's name check cannot see it): the X-Fusion-Depth header of the
    inner call makes the server refuse it (400 recursion), never a loop."""
    sock = bind()
    own = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    itself = {"model": "deliberate", "base_url": own, "api_key_env": "FAKE_KEY"}
    base = {
        "preset": "quality",
        "judge": spec(upstream, "ok.rjudge"),
        "synthesizer": spec(upstream, "ok.rsynth"),
        "tool_mode": "off",
    }
    aliases = {
        "deliberate": {**base, "panel": [itself, spec(upstream, "ok.r")]},
        "loop": {**base, "panel": [{**itself, "model": "loop"}]},
        "named-fusion": {**base, "panel": [{**itself, "model": "fusion-quality"}]},
    }
    app = create_app(build_graph(), api_keys=[], aliases=aliases)
    with running_server(app, sock), httpx.Client(base_url=own, timeout=60) as client:
        question = [{"role": "user", "content": QUESTION}]
        response = client.post(
            "/chat/completions", json={"model": "deliberate", "messages": question}
        )
        assert response.status_code == 200, response.text
        fusion = response.json()["fusion"]
        assert_answered(fusion, "ok.r")
        failed = failures(fusion)["deliberate"]
        assert failed["reason"] == "recursion" and "inside a fusion run" in failed["message"]

        response = client.post("/chat/completions", json={"model": "loop", "messages": question})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "recursion"

        response = client.post(
            "/chat/completions", json={"model": "named-fusion", "messages": question}
        )
        error = response.json()["error"]
        assert response.status_code == 400 and error["code"] == "invalid_config"
        assert error["param"] == "panel[0]" and "fusion model" in error["message"]

        response = client.post(
            "/chat/completions",
            json={"model": "deliberate", "messages": question},
            headers={"X-Fusion-Depth": "1"},
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "recursion"


# ------------------------------------------------------------------------- through the server


@pytest.mark.timeout(90)
def test_faults_through_the_server(upstream: FaultUpstream) -> None:
    """What an OpenAI client sees: a stream cut after its first tokens ends in an error event
    and [DONE]; the same failure unstreamed is a 502 that says not to retry; a panel that is
    all rate limited is a 429; a failed panelist is listed in the record of a 200."""
    base = {"preset": "quality", "tool_mode": "off", "judge": spec(upstream, "ok.sj")}
    aliases = {
        "cut": {
            **base,
            "panel": [spec(upstream, "ok.s1")],
            "synthesizer": spec(upstream, "ssecut.s"),
        },
        "limited": {
            **base,
            "panel": [spec(upstream, "ratelimit.s1"), spec(upstream, "ratelimit.s2")],
            "synthesizer": spec(upstream, "ok.ss"),
        },
        "partial": {
            **base,
            "panel": [spec(upstream, "bad400.s"), spec(upstream, "ok.s2")],
            "synthesizer": spec(upstream, "ok.ss"),
        },
    }
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    question = [{"role": "user", "content": QUESTION}]
    app = create_app(build_graph(), api_keys=[], aliases=aliases)
    with running_server(app, sock), httpx.Client(base_url=url, timeout=60) as client:
        body = {"model": "cut", "messages": question, "stream": True}
        with client.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == "synthesis_failed"
        assert [r["model"] for r in error["fusion"]["panel"]] == ["ok.s1"]
        streamed = "".join(
            (c.get("delta") or {}).get("content") or ""
            for e in events[:-2]
            for c in json.loads(e)["choices"]
        )
        assert streamed.startswith("ANSWER from ssecut.s")

        response = client.post("/chat/completions", json={"model": "cut", "messages": question})
        assert response.status_code == 502
        assert response.headers["x-should-retry"] == "false"
        assert response.json()["error"]["fusion"]["panel"][0]["content"] == answer_text("ok.s1")

        response = client.post("/chat/completions", json={"model": "limited", "messages": question})
        assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"

        response = client.post("/chat/completions", json={"model": "partial", "messages": question})
        assert response.status_code == 200
        fusion = response.json()["fusion"]
        assert_answered(fusion, "ok.s2")
        assert failures(fusion)["bad400.s"]["reason"] == "bad_request"
