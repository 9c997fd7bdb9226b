"""Real chat models: reused per event loop, one shared client, and cancellation still disconnects.

Runs the real default model factory (ChatOpenAI + the openai SDK) against the benchmark's fake
upstream on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai._utils import async_maybe_transform
from openai.lib._pydantic import to_strict_json_schema
from openai.types.chat import completion_create_params

from fusiongraph.graph import models
from fusiongraph.graph.builder import build_graph, sync_and_async
from fusiongraph.graph.compat_openai import DirectCompletions, StreamChunkTimeoutError
from fusiongraph.graph.models import close_model, default_model_factory, quiet
from fusiongraph.graph.runner import stream_run
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes.analysis import (
    SELECTION,
    Analysis,
    SelectingAnalysis,
    inline_refs,
    json_schema_response_format,
)
from tests.support.upstream import UpstreamServer


def spec(name: str, **extra: Any) -> ModelSpec:
    return ModelSpec.model_validate({"provider": "openai", "model": name, **extra})


async def test_models_are_reused_on_a_loop_and_share_one_client(openai_env: str) -> None:
    first, again = default_model_factory(spec("a")), default_model_factory(spec("a"))
    other = default_model_factory(spec("b", temperature=0.3))
    assert first is again and other is not first
    assert first.http_async_client is other.http_async_client  # type: ignore[attr-defined]

    silent = quiet(first)
    assert silent.disable_streaming is True and first.disable_streaming is False
    assert quiet(first) is silent  # built once per model

    await close_model(first)  # a shared client is not the caller's to close
    assert not first.http_async_client.is_closed  # type: ignore[attr-defined]
    reply = await first.ainvoke("[bench:m1] hello")
    assert reply.text


async def test_the_shared_client_keeps_no_cookies(openai_env: str) -> None:
    client = default_model_factory(spec("c")).http_async_client  # type: ignore[attr-defined]
    request = httpx.Request("GET", f"{openai_env}/models")
    client.cookies.extract_cookies(
        httpx.Response(200, headers={"set-cookie": "session=tenant-a; Path=/"}, request=request)
    )
    assert not client.cookies


async def test_a_changed_api_key_builds_a_new_model(
    openai_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = default_model_factory(spec("k"))
    monkeypatch.setenv("OPENAI_API_KEY", "rotated-key")
    after = default_model_factory(spec("k"))
    assert after is not before
    assert after.openai_api_key.get_secret_value() == "rotated-key"  # type: ignore[attr-defined]


def test_each_sync_node_run_closes_its_loop_models(openai_env: str) -> None:
    seen: list[Any] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def node(_: Any) -> str:
        model = default_model_factory(spec("s"))
        seen.append(model.http_async_client)  # type: ignore[attr-defined]
        loops.append(asyncio.get_running_loop())
        return (await model.ainvoke("[bench:m2] hi")).text

    runnable = sync_and_async(node)
    assert runnable.invoke({}) and runnable.invoke({})
    assert seen[0] is not seen[1]  # one short-lived loop per sync run
    assert all(client.is_closed for client in seen)
    assert not any(loop in models._MODEL_CACHES for loop in loops)


def test_a_strict_json_schema_format_equal_to_the_sdks() -> None:
    """The judge's precomputed format says what openai's own pydantic path would send."""

    selecting = json_schema_response_format(select=True)
    assert selecting["type"] == "json_schema" and selecting["json_schema"]["strict"] is True
    assert selecting["json_schema"]["schema"] == inline_refs(
        to_strict_json_schema(SelectingAnalysis)
    )
    # A judge that selects nothing is not asked for `best` at all: the SDK's schema without it.
    sdk = inline_refs(to_strict_json_schema(Analysis))
    for name in SELECTION:
        del sdk["properties"][name]
    sdk["required"] = [r for r in sdk["required"] if r not in SELECTION]
    assert json_schema_response_format()["json_schema"]["schema"] == sdk


async def test_judge_sends_the_format_and_keeps_the_models_extra_body(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", "test-key")
    graph = build_graph()
    ctx = {
        "panel": ["openrouter:p1-0.01s", "openrouter:p2-0.01s"],
        "judge": "openrouter:judge-0.01s",
        "synthesizer": "openrouter:synth-0.01s",
        "tool_mode": "off",
    }
    out = await graph.ainvoke({"messages": [HumanMessage("[bench:m3] why?")]}, context=ctx)
    fusion = out["messages"][-1].response_metadata["fusion"]
    assert fusion["judge"]["ok"] and fusion["analysis"]["consensus"]
    judge = next(r for r in upstream.app.records if r.tag == "m3" and r.role == "judge")
    assert judge.options["response_format"] == json_schema_response_format()
    assert judge.options["usage"] == {"include": True}  # OpenRouter's cost report still asked for


async def test_a_cancelled_call_on_the_shared_client_disconnects_upstream(
    openai_env: str, upstream: UpstreamServer
) -> None:
    """Quorum cuts a straggler: its request on the shared pool is really closed, and the pool
    keeps serving the next run."""
    graph = build_graph()
    ctx = {
        "panel": ["openai:q1-0.01s", "openai:q2-0.02s", "openai:never"],
        "judge": "openai:judge-0.01s",
        "synthesizer": "openai:synth-0.01s",
        "tool_mode": "off",
        "quorum": 2,
        "straggler_grace_s": 0.05,
    }
    for tag in ("m4", "m5"):
        out = await graph.ainvoke({"messages": [HumanMessage(f"[bench:{tag}] why?")]}, context=ctx)
        failed = out["messages"][-1].response_metadata["fusion"]["failed_models"]
        assert [(f["model"], f["reason"]) for f in failed] == [("openai:never", "straggler")]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            never = [r for r in upstream.app.records if r.tag == tag and r.model == "never"]
            if never and never[0].done is not None:
                break
            await asyncio.sleep(0.02)
        assert never and never[0].disconnected


def _payloads() -> list[dict[str, Any]]:
    """Request bodies as langchain-openai builds them, one per message and option shape."""
    model = ChatOpenAI(model="m", api_key="k", base_url="http://127.0.0.1:9/v1", max_tokens=64)
    tool = {
        "type": "function",
        "function": {"name": "web_search", "parameters": {"type": "object", "properties": {}}},
    }
    calls = [{"name": "web_search", "args": {"query": "q"}, "id": "c1", "type": "tool_call"}]
    turns = [
        SystemMessage("be brief"),
        HumanMessage(
            [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ]
        ),
        AIMessage("", tool_calls=calls),
        ToolMessage("result", tool_call_id="c1"),
    ]
    return [
        model._get_request_payload([HumanMessage("hello")]),
        model._get_request_payload(turns, tools=[tool], tool_choice="auto"),
        model._get_request_payload(
            [HumanMessage("judge")],
            stream=True,
            stream_options={"include_usage": True},
            response_format=json_schema_response_format(),
        ),
    ]


@pytest.mark.parametrize("payload", _payloads(), ids=["plain", "tools", "streamed-format"])
async def test_the_sdks_transform_leaves_chat_requests_as_built(payload: dict[str, Any]) -> None:
    """What lets DirectCompletions skip it: on the installed SDK the transform is an identity."""
    params = (
        completion_create_params.CompletionCreateParamsStreaming
        if payload.get("stream")
        else completion_create_params.CompletionCreateParamsNonStreaming
    )
    assert await async_maybe_transform(payload, params) == payload


def test_the_private_sdk_paths_of_the_bypass_still_exist() -> None:
    """graph/compat_openai.py falls back to the SDK's own `create` when they move: say it here."""
    from fusiongraph.graph import compat_openai

    assert compat_openai.PRIVATE_API, (
        "the openai SDK moved a private module graph/compat_openai.py uses; requests now take the "
        "SDK's own (slower) path: update compat_openai.py or drop the bypass"
    )
    assert DirectCompletions is not None


async def test_model_calls_send_their_body_as_built(
    openai_env: str, upstream: UpstreamServer
) -> None:
    model = default_model_factory(spec("direct"))
    assert isinstance(model.async_client, DirectCompletions)  # type: ignore[attr-defined]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    bound = quiet(model).bind_tools([tool], tool_choice="none")
    assert (await bound.ainvoke("[bench:m6] hello")).text
    streamed = [c async for c in model.astream("[bench:m7] hello")]
    assert "".join(c.text for c in streamed) and any(c.usage_metadata for c in streamed)
    sent = {r.tag: r for r in upstream.app.records if r.tag in ("m6", "m7")}
    assert sent["m6"].options["tool_choice"] == "none"
    assert sent["m6"].options["tools"][0]["function"]["name"] == "lookup"
    assert sent["m7"].options.get("tools") is None


async def test_direct_completions_refuse_a_request_without_messages(openai_env: str) -> None:
    model = default_model_factory(spec("direct"))
    with pytest.raises(TypeError, match="messages"):
        await model.async_client.create(model="m")  # type: ignore[attr-defined]


def _mislabelled_endpoint(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible endpoint that sends its JSON as text/plain (some gateways do)."""
    reply = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    return httpx.Response(200, json=reply, headers={"content-type": "text/plain"})


async def test_replies_reach_langchain_as_json_even_when_mislabelled() -> None:
    """DirectCompletions hands langchain-openai the reply's dict (no typed model built and
    dumped again), and still reads JSON sent under the wrong content type, as the SDK does."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(_mislabelled_endpoint))
    model = ChatOpenAI(
        model="m", api_key="k", base_url="http://upstream.test/v1", http_async_client=client
    )
    model.async_client = DirectCompletions(model.root_async_client)  # type: ignore[misc]
    raw = await model.async_client.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse()["choices"][0]["message"]["content"] == "hi"
    reply = await model.ainvoke("hello")
    assert reply.text == "hi" and reply.usage_metadata["total_tokens"] == 4
    await client.aclose()


def _sse_endpoint(chunks: int, *, then_stall: bool = False):
    """A streaming endpoint: `chunks` content chunks, then [DONE], or keep-alives forever."""

    def chunk(text: str) -> bytes:
        delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        return f"data: {json.dumps({'id': 'c', 'model': 'm', **delta})}\n\n".encode()

    async def body() -> AsyncIterator[bytes]:
        for i in range(chunks):
            yield chunk(f"t{i} ")
        while then_stall:
            await asyncio.sleep(0.05)
            yield b": keepalive\n\n"  # bytes keep flowing, content does not
        yield b"data: [DONE]\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return answer


def _streaming_model(endpoint: Any, stall_s: float) -> tuple[ChatOpenAI, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    model = ChatOpenAI(
        model="m",
        api_key="k",
        base_url="http://upstream.test/v1",
        http_async_client=client,
        stream_chunk_timeout=None,
    )
    direct = DirectCompletions(model.root_async_client)
    direct.stall_timeout_s = stall_s  # type: ignore[attr-defined]
    model.async_client = direct  # type: ignore[misc]
    return model, client


async def test_a_stream_that_only_keeps_alive_is_cut_at_the_stall_timeout() -> None:
    model, client = _streaming_model(_sse_endpoint(2, then_stall=True), stall_s=0.3)
    started = time.monotonic()
    received = []
    with pytest.raises(StreamChunkTimeoutError):
        async for chunk in model.astream("hello"):
            received.append(chunk.text)
    assert "".join(received) == "t0 t1 " and time.monotonic() - started < 5
    await client.aclose()


async def test_the_callers_own_time_between_chunks_is_no_stall() -> None:
    model, client = _streaming_model(_sse_endpoint(3), stall_s=0.2)
    text = []
    async for chunk in model.astream("hello"):
        text.append(chunk.text)
        await asyncio.sleep(0.3)  # longer than the stall timeout, but not the upstream's doing
    assert "".join(text) == "t0 t1 t2 "
    await client.aclose()


async def test_a_guarded_stream_makes_no_task_per_chunk() -> None:
    model, client = _streaming_model(_sse_endpoint(200), stall_s=30)
    loop = asyncio.get_running_loop()
    made = 0
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        chunks = [chunk async for chunk in model.astream("hello")]
    finally:
        loop.set_task_factory(previous)
    assert len(chunks) >= 200 and made < 20  # langchain-openai's own guard: one per chunk
    await client.aclose()


def test_the_default_models_guard_their_streams_themselves(openai_env: str) -> None:
    model = default_model_factory(spec("g"))
    assert model.stream_chunk_timeout is None  # type: ignore[attr-defined]
    assert model.async_client.stall_timeout_s == models.DEFAULT_CALL_TIMEOUT_S  # type: ignore[attr-defined]


async def test_a_synthesizer_that_stalls_fails_as_a_timeout_not_a_deadline(
    openai_env: str, upstream: UpstreamServer
) -> None:
    """Its stream sends one piece, then keep-alives only: cut at its own timeout and reported
    as `timeout`; `deadline` stays the run's deadline_s."""
    graph = build_graph()
    ctx = {
        "panel": ["openai:p1-0.01s"],
        "judge": "openai:judge-0.01s",
        "synthesizer": {"provider": "openai", "model": "synth-stall", "timeout_s": 0.5},
        "tool_mode": "off",
    }
    started = time.monotonic()
    with pytest.raises(Exception, match=r"synth-stall failed \(timeout\)") as failed:
        async for _ in stream_run(graph, [HumanMessage("[bench:m9] why?")], ctx):
            pass  # streamed, as the server and FusionChatModel run it
    assert "deadline" not in str(failed.value) and time.monotonic() - started < 10
    stalled = next(r for r in upstream.app.records if r.tag == "m9" and r.role == "synthesis")
    assert stalled.first_chunk is not None  # it did start streaming
