"""The Anthropic Messages API (`POST /v1/messages`) driven by the official `anthropic` SDK.

The real app runs under uvicorn on 127.0.0.1 with a graph of scripted fake models: plain and
streamed messages, tools both ways, errors in Anthropic's shape, and the fusion record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import anthropic
import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.anthropic_api import error_body
from fusiongraph.serve.openai_errors import OpenAIError
from fusiongraph.serve.server import THREAD_HEADER, create_app
from tests.support.fakes import FakeFactory, Script
from tests.support.server_app import (
    ALIAS,
    ANSWER,
    MODEL,
    WEATHER_TOOL,
    app_for,
    scripts,
    tool_call_reply,
)
from tests.support.servers import running_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


@pytest.fixture
def client(base_url: str) -> Iterator[anthropic.Anthropic]:
    """The SDK on the server of tests/unit/conftest.py's `base_url`."""
    with anthropic.Anthropic(base_url=base_url, api_key="x", max_retries=0) as sdk:
        yield sdk


def serve_app(factory: FakeFactory, **app_kwargs: Any) -> AbstractContextManager[str]:
    """A running server for `factory` (its base URL)."""
    return running_server(app_for(factory, **app_kwargs))


def sse_events(url: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of one streamed request, in order."""
    events, name = [], None
    with httpx.stream("POST", f"{url}/v1/messages", json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


# --- plain ------------------------------------------------------------------------------------


def test_message_carries_the_answer_usage_and_fusion_record(
    client: anthropic.Anthropic, factory: FakeFactory
) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=300, system="Answer briefly.", messages=QUESTION
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == ANSWER and message.stop_reason == "end_turn"
    fusion = message.model_extra["fusion"]
    assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p2", "p3"]
    total = fusion["usage"]["total"]
    assert message.usage.input_tokens == total["input_tokens"] > 0
    assert message.usage.output_tokens == total["output_tokens"] > 0
    # The system prompt reaches the panel; max_tokens bounds the synthesis step only.
    assert "Answer briefly." in factory.scripts["m1"].calls[0][0].content
    synth = [s for s in factory.built if s.model == "synth"]
    assert synth[-1].max_tokens == 300
    assert all(s.max_tokens != 300 for s in factory.built if s.model.startswith("m"))


def test_conversation_blocks_and_fusion_overrides_reach_the_graph(
    client: anthropic.Anthropic, factory: FakeFactory
) -> None:
    client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Name a French city."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Lyon."}]},
            {"role": "user", "content": "And the capital?"},
        ],
        # Older SDKs send temperature; today's have no parameter for it.
        extra_body={"temperature": 0.3, "fusion": {"panel": ["openai:m7", "openai:m8"]}},
    )
    assert factory.scripts["m1"].calls == []
    sent = factory.scripts["m7"].calls[0]
    assert [m.type for m in sent[-3:]] == ["human", "ai", "human"]
    assert [m.content for m in sent[-3:]] == ["Name a French city.", "Lyon.", "And the capital?"]
    assert [s for s in factory.built if s.model == "synth"][-1].temperature == 0.3


# --- streaming --------------------------------------------------------------------------------


def test_stream_helper_assembles_the_answer(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == ANSWER and len(pieces) > 1
    assert final.content[0].text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_stream_events_come_in_anthropics_order_with_the_fusion_record(base_url: str) -> None:
    events = sse_events(
        base_url, {"model": MODEL, "max_tokens": 100, "messages": QUESTION, "stream": True}
    )
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == ANSWER
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == delta["fusion"]["usage"]["total"]["output_tokens"]
    assert len(delta["fusion"]["panel"]) == 3


# --- tools ------------------------------------------------------------------------------------


def test_tool_use_comes_back_plain_and_streamed() -> None:
    factory = FakeFactory(scripts(synth=[tool_call_reply(city="Paris")]))
    with (
        serve_app(factory) as url,
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as client,
    ):
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 100,
            "messages": QUESTION,
            "tools": [WEATHER],
            "tool_choice": {"type": "any"},
        }
        message = client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as stream:
            streamed = stream.get_final_message()
    for result in (message, streamed):
        assert result.stop_reason == "tool_use"
        (block,) = result.content
        assert block.type == "tool_use" and block.id == "call_abc123"
        assert block.name == "get_weather" and block.input == {"city": "Paris"}
    tools, options = factory.scripts["synth"].bound_tools[-1]
    assert tools == [WEATHER_TOOL] and options["tool_choice"] == "required"
    assert all(not s.bound_tools for name, s in factory.scripts.items() if name != "synth")


def test_tool_results_continue_the_conversation(
    client: anthropic.Anthropic, factory: FakeFactory
) -> None:
    client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}],
            },
        ],
    )
    sent = factory.scripts["synth"].calls[0]
    ai = next(m for m in sent if m.type == "ai")
    assert ai.tool_calls[0]["args"] == {"city": "Paris"} and ai.tool_calls[0]["id"] == "toolu_1"
    tool = next(m for m in sent if m.type == "tool")
    assert tool.tool_call_id == "toolu_1" and tool.content == "18 C"


# --- errors -----------------------------------------------------------------------------------


def test_bad_requests_raise_bad_request_error_in_anthropics_shape(
    client: anthropic.Anthropic, base_url: str, factory: FakeFactory
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="claude-nope", max_tokens=10, messages=QUESTION)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error"
    error = info.value.body["error"]
    assert error["type"] == "invalid_request_error" and "claude-nope" in error["message"]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\[1\]\.content"):
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[*QUESTION, {"role": "user", "content": [{"type": "video", "url": "x"}]}],
        )
    # Errors name the caller's parameter, not that of the converted conversation.
    with pytest.raises(
        anthropic.BadRequestError, match=r"messages\[1\]\.content: content is empty"
    ):
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            system="Be brief.",
            messages=[*QUESTION, {"role": "assistant", "content": ""}, *QUESTION],
        )
    missing = httpx.post(f"{base_url}/v1/messages", json={"model": MODEL, "messages": QUESTION})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"].startswith("max_tokens")
    limit = httpx.post(
        f"{base_url}/v1/messages", json={"model": MODEL, "messages": QUESTION, "max_tokens": 10**6}
    )
    assert limit.status_code == 400 and "max_tokens" in limit.json()["error"]["message"]
    assert all(not s.calls for s in factory.scripts.values())


def test_api_key_by_header_or_bearer_and_authentication_error() -> None:
    factory = FakeFactory(scripts())
    with serve_app(factory, api_keys=["secret"]) as url:
        with (
            anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0) as client,
            pytest.raises(anthropic.AuthenticationError) as info,
        ):
            client.messages.create(model=MODEL, max_tokens=10, messages=QUESTION)
        assert info.value.body["error"]["type"] == "authentication_error"
        body = {"model": MODEL, "max_tokens": 10, "messages": QUESTION}
        none = httpx.post(f"{url}/v1/messages", json=body)
        assert none.status_code == 401
        assert none.json()["error"] == {
            "type": "authentication_error",
            "message": "missing API key: send Authorization: Bearer <key> (or x-api-key: <key>)",
        }
        by_header = httpx.post(f"{url}/v1/messages", json=body, headers={"x-api-key": "secret"})
        assert by_header.status_code == 200 and by_header.json()["content"][0]["text"] == ANSWER
        with anthropic.Anthropic(base_url=url, api_key="secret", max_retries=0) as client:
            assert client.messages.create(**body).content[0].text == ANSWER


def test_a_failed_run_is_an_api_error_with_its_record() -> None:
    factory = FakeFactory(scripts(**{f"m{i}": Script([RuntimeError("down")]) for i in (1, 2, 3)}))
    with (
        serve_app(factory) as url,
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(anthropic.InternalServerError) as info:
            client.messages.create(model=MODEL, max_tokens=10, messages=QUESTION)
        assert info.value.status_code == 502
        error = info.value.body["error"]
        assert error["type"] == "api_error" and error["fusion"]["reason"] == "all_panelists_failed"
        assert {f["panelist"] for f in error["fusion"]["failed_models"]} == {"p1", "p2", "p3"}
        # Streamed, the failure before the first token keeps its status code too ...
        with (
            pytest.raises(anthropic.InternalServerError),
            client.messages.stream(model=MODEL, max_tokens=10, messages=QUESTION) as stream,
        ):
            stream.get_final_text()
        # ... and after the stream opened (progress on), it is an `error` event.
        body = {
            "model": MODEL,
            "max_tokens": 10,
            "messages": QUESTION,
            "stream": True,
            "fusion": {"progress": True},
        }
        events = sse_events(url, body)
        assert events[0][0] == "message_start" and events[-1][0] == "error"
        assert events[-1][1]["error"]["type"] == "api_error"
        assert events[-1][1]["error"]["fusion"]["reason"] == "all_panelists_failed"
        with (
            pytest.raises(anthropic.APIStatusError, match="no panelist produced an answer"),
            client.messages.stream(
                model=MODEL, max_tokens=10, messages=QUESTION, extra_body={"fusion": body["fusion"]}
            ) as stream,
        ):
            stream.get_final_text()


def test_all_panelists_rate_limited_is_overloaded() -> None:
    class RateLimited(Exception):
        status_code = 429

    factory = FakeFactory(scripts(**{f"m{i}": Script([RateLimited("slow")]) for i in (1, 2, 3)}))
    with (
        serve_app(factory) as url,
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as client,
        pytest.raises(anthropic.OverloadedError) as info,
    ):
        client.messages.create(model=MODEL, max_tokens=10, messages=QUESTION)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("status", "code", "sent", "kind"),
    [
        (400, "invalid_request", 400, "invalid_request_error"),
        (401, "invalid_api_key", 401, "authentication_error"),
        (404, "thread_not_found", 404, "not_found_error"),
        (408, "body_timeout", 408, "timeout_error"),
        (409, "thread_conflict", 409, "invalid_request_error"),
        (429, "rate_limited", 529, "overloaded_error"),
        (500, "internal_error", 500, "api_error"),
        (502, "synthesis_failed", 502, "api_error"),
        (504, "deadline", 504, "timeout_error"),
    ],
)
def test_error_statuses_map_onto_anthropics_error_types(
    status: int, code: str, sent: int, kind: str
) -> None:
    got, body = error_body(OpenAIError(status, "it failed", param="fusion.quorum", code=code))
    assert got == sent
    assert body == {"type": "error", "error": {"type": kind, "message": "fusion.quorum: it failed"}}


def test_openapi_documents_the_messages_endpoint(base_url: str) -> None:
    schema = httpx.get(f"{base_url}/openapi.json").json()
    operation = schema["paths"]["/v1/messages"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "max_tokens", "messages"} <= set(body["required"])
    assert MODEL in body["properties"]["model"]["enum"]
    assert "quorum" in body["properties"]["fusion"]["anyOf"][0]["properties"]
    responses = operation["responses"]
    assert {"200", "400", "401", "502", "529"} <= set(responses)
    error = responses["400"]["content"]["application/json"]["schema"]
    assert error["properties"]["type"]["const"] == "error"
    assert "text/event-stream" in responses["200"]["content"]


HOSTILE_BODIES = [
    b'{"model": "fusion-test", "max_tokens": 10, "messages": [], "temperature": NaN}',
    b'{"model": "fusion-test", "max_tokens": 10, "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "fusion-test", "max_tokens": 10, "messages": [{"role": "user", "content": '
    b'"\\ud800"}]}',
]


@pytest.mark.parametrize("raw", HOSTILE_BODIES, ids=["nan", "deep", "lone-surrogate"])
def test_hostile_bodies_are_refused_before_any_model(
    base_url: str, factory: FakeFactory, raw: bytes
) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{base_url}/v1/messages", content=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert all(not s.calls for s in factory.scripts.values())


def test_a_retried_message_on_a_durable_thread_replays_without_new_calls() -> None:
    factory = FakeFactory(scripts())
    graph = build_graph(factory, checkpointer=InMemorySaver())
    app = create_app(graph, api_keys=[], aliases={MODEL: ALIAS})
    body = {"model": MODEL, "max_tokens": 50, "messages": QUESTION}
    headers = {THREAD_HEADER: "t-anthropic"}
    with running_server(app) as url:
        first = httpx.post(f"{url}/v1/messages", json=body, headers=headers)
        again = httpx.post(f"{url}/v1/messages", json=body, headers=headers)
        with httpx.stream(
            "POST", f"{url}/v1/messages", json={**body, "stream": True}, headers=headers
        ) as streamed:
            text = streamed.read().decode()
    assert first.headers[THREAD_HEADER] == again.headers[THREAD_HEADER] == "t-anthropic"
    assert first.json()["content"] == again.json()["content"] == [{"type": "text", "text": ANSWER}]
    assert "event: message_stop" in text and json.dumps(ANSWER) in text
    assert [len(factory.scripts[f"m{i}"].calls) for i in (1, 2, 3)] == [1, 1, 1]
    assert len(factory.scripts["synth"].calls) == 1
