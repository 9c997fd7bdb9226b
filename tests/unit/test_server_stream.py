"""Streaming from the OpenAI-compatible server: SSE chunks, tool-call deltas, progress comments,
errors after the stream opened, and a client disconnect cancelling the run.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.fakes import FakeFactory, Script
from tests.support.server_app import (
    ANSWER,
    MODEL,
    USER,
    WEATHER_TOOL,
    CancelAwareFactory,
    app_for,
    scripts,
    served,
    tool_call_reply,
)
from tests.support.servers import running_server, wait_for


def sse_lines(base_url: str, body: dict[str, Any]) -> list[str]:
    """The raw SSE lines of one streamed request (comments included)."""
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line for line in r.iter_lines() if line]


def test_stream_assembles_the_synthesis_answer(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(content) == ANSWER and len(content) > 1
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    fusion = finish[0].model_extra["fusion"]
    assert len(fusion["panel"]) == 3 and fusion["analysis"]["consensus"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.total_tokens == fusion["usage"]["total"]["total_tokens"] > 0
    assert usage_chunk.usage.prompt_tokens == fusion["usage"]["total"]["input_tokens"]


def test_stream_without_usage_option_sends_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_raw_stream_ends_with_done_and_has_no_comments_by_default(base_url: str) -> None:
    lines = sse_lines(base_url, {"model": MODEL, "messages": USER, "stream": True})
    assert lines[-1] == "data: [DONE]"
    assert not any(line.startswith(":") for line in lines)


async def test_async_stream(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(model=MODEL, messages=USER, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == ANSWER


def test_stream_helper_of_the_sdk(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=MODEL, messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER


def test_streamed_tool_calls_assemble_to_the_same_call() -> None:
    factory = FakeFactory(scripts(synth=[tool_call_reply(city="Paris")]))
    with (
        running_server(app_for(factory)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        kwargs = {"model": MODEL, "messages": USER, "tools": [WEATHER_TOOL]}
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] == whole[0].id == "call_abc123"
    assert calls[0]["name"] == whole[0].function.name == "get_weather"
    assert json.loads(calls[0]["arguments"]) == json.loads(whole[0].function.arguments)


def test_progress_rides_as_sse_comments_only_when_asked(
    base_url: str, client: openai.OpenAI
) -> None:
    body = {"model": MODEL, "messages": USER, "stream": True, "fusion": {"progress": True}}
    lines = sse_lines(base_url, body)
    progress = [
        json.loads(line[1:])
        for line in lines
        if line.startswith(":") and line[1:].strip().startswith("{")
    ]
    events = [p["event"] for p in progress]
    assert all(p["object"] == "fusion.progress" for p in progress)
    assert events[0] == "run_started" and events.count("panelist_finished") == 3
    assert "judge_finished" in events and "synthesis_started" in events
    assert lines[-1] == "data: [DONE]"
    # A standard client streaming the same request is not disturbed by the comments.
    stream = client.chat.completions.create(
        model=MODEL, messages=USER, stream=True, extra_body={"fusion": {"progress": True}}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER


def test_failure_before_the_answer_starts_keeps_its_status_code() -> None:
    factory = FakeFactory(scripts(**{f"m{i}": Script([RuntimeError("down")]) for i in (1, 2, 3)}))
    with served(factory) as (_, client), pytest.raises(openai.InternalServerError) as info:
        list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert info.value.status_code == 502 and info.value.code == "all_panelists_failed"


def test_error_after_the_stream_opened_is_an_error_event_then_done() -> None:
    factory = FakeFactory(scripts(**{f"m{i}": Script([RuntimeError("down")]) for i in (1, 2, 3)}))
    with running_server(app_for(factory)) as url:
        # With progress on the stream opens at once, so the failure arrives as an event.
        body = {"model": MODEL, "messages": USER, "stream": True, "fusion": {"progress": True}}
        lines = sse_lines(url, body)
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        error = json.loads(data[-2])["error"]
        assert error["code"] == "all_panelists_failed" and error["type"] == "server_error"
        assert error["message"] and "Traceback" not in "".join(lines)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(
                model=MODEL, messages=USER, stream=True, extra_body={"fusion": {"progress": True}}
            )
            with pytest.raises(openai.APIError, match="no panelist produced an answer"):
                list(stream)


# --- disconnects ------------------------------------------------------------------------------


def slow_factory() -> CancelAwareFactory:
    slow = {f"m{i}": Script([f"slow answer {i}"], delay_s=30) for i in (1, 2, 3)}
    return CancelAwareFactory(scripts(**slow), watched={"m1", "m2", "m3"})


def test_disconnect_mid_stream_cancels_the_run() -> None:
    factory = slow_factory()
    with running_server(app_for(factory)) as url:
        body = {"model": MODEL, "messages": USER, "stream": True, "fusion": {"progress": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if "panelist_started" in line:
                    break  # the panel is running; hang up
        assert wait_for(factory.cancelled.is_set, timeout=10), "the panel was not cancelled"
    assert factory.scripts["synth"].calls == [] and factory.scripts["judge"].calls == []


def test_disconnect_before_the_stream_opens_cancels_the_run() -> None:
    factory = slow_factory()
    with running_server(app_for(factory)) as url:
        body = {"model": MODEL, "messages": USER, "stream": True}
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=1.0)
            ) as r,
        ):
            r.read()
        assert wait_for(factory.cancelled.is_set, timeout=10), "the panel was not cancelled"
    assert factory.scripts["synth"].calls == []


def test_disconnect_of_a_plain_request_cancels_the_run() -> None:
    factory = slow_factory()
    with running_server(app_for(factory)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": MODEL, "messages": USER},
                timeout=httpx.Timeout(10, read=1.0),
            )
        assert wait_for(factory.cancelled.is_set, timeout=10), "the panel was not cancelled"
    assert factory.scripts["synth"].calls == []
