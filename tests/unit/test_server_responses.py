"""The OpenAI Responses API (`POST /v1/responses`) driven by the official `openai` SDK.

The real app runs under uvicorn on 127.0.0.1 with a graph of scripted fake models: plain and
streamed responses, function calls both ways, errors, previous_response_id on a durable server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import create_app
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

QUESTION = "What is the capital of France?"
WEATHER = {"type": "function", **WEATHER_TOOL["function"]}
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def sdk(url: str, key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def failing_factory() -> FakeFactory:
    return FakeFactory(scripts(**{f"m{i}": Script([RuntimeError("down")]) for i in (1, 2, 3)}))


# --- plain ------------------------------------------------------------------------------------


def test_response_carries_the_answer_usage_and_fusion_record(
    client: openai.OpenAI, factory: FakeFactory
) -> None:
    response = client.responses.create(
        model=MODEL, input=QUESTION, instructions="Answer briefly.", max_output_tokens=300
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == MODEL
    assert response.output_text == ANSWER
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    fusion = response.model_extra["fusion"]
    assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p2", "p3"]
    total = fusion["usage"]["total"]
    usage = response.usage
    assert usage.input_tokens == total["input_tokens"] > 0
    assert usage.output_tokens == total["output_tokens"] > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert "Answer briefly." in factory.scripts["m1"].calls[0][0].content
    assert [s for s in factory.built if s.model == "synth"][-1].max_tokens == 300


def test_input_items_and_fusion_overrides_reach_the_graph(
    client: openai.OpenAI, factory: FakeFactory
) -> None:
    client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Name a French city."}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Lyon."}],
            },
            {"role": "user", "content": "And the capital?"},
        ],
        temperature=0.4,
        extra_body={"fusion": {"panel": ["openai:m7", "openai:m8"], "quorum": 2}},
    )
    assert factory.scripts["m1"].calls == []
    sent = factory.scripts["m7"].calls[0]
    assert [m.type for m in sent[-3:]] == ["human", "ai", "human"]
    assert [m.content for m in sent[-3:]] == ["Name a French city.", "Lyon.", "And the capital?"]
    assert [s for s in factory.built if s.model == "synth"][-1].temperature == 0.4


# --- streaming --------------------------------------------------------------------------------


def test_stream_helper_assembles_the_answer(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input=QUESTION) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == ANSWER and len(deltas) > 1
    assert final.output_text == ANSWER and final.status == "completed"
    assert final.usage.total_tokens > 0
    kinds = [e.type for e in events]
    assert [k for i, k in enumerate(kinds) if k not in kinds[:i]] == STREAM_ORDER
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    completed = events[-1]
    assert completed.response.id == events[0].response.id
    assert len(completed.response.model_extra["fusion"]["panel"]) == 3


# --- tools ------------------------------------------------------------------------------------


def test_function_call_comes_back_plain_and_streamed() -> None:
    factory = FakeFactory(scripts(synth=[tool_call_reply(city="Paris")]))
    with running_server(app_for(factory)) as url, sdk(url) as client:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "input": QUESTION,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
        }
        response = client.responses.create(**kwargs)
        with client.responses.stream(**kwargs) as stream:
            arguments = [
                e.delta for e in stream if e.type == "response.function_call_arguments.delta"
            ]
            streamed = stream.get_final_response()
    assert json.loads("".join(arguments)) == {"city": "Paris"}
    for result in (response, streamed):
        (call,) = result.output
        assert call.type == "function_call" and call.call_id == "call_abc123"
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    tools, options = factory.scripts["synth"].bound_tools[-1]
    assert tools == [WEATHER_TOOL]
    assert options["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert all(not s.bound_tools for name, s in factory.scripts.items() if name != "synth")


def test_function_call_outputs_continue_the_conversation(
    client: openai.OpenAI, factory: FakeFactory
) -> None:
    client.responses.create(
        model=MODEL,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
        ],
    )
    sent = factory.scripts["synth"].calls[0]
    ai = next(m for m in sent if m.type == "ai")
    assert ai.tool_calls[0]["args"] == {"city": "Paris"} and ai.tool_calls[0]["id"] == "call_1"
    tool = next(m for m in sent if m.type == "tool")
    assert tool.tool_call_id == "call_1" and tool.content == "18 C"


# --- errors -----------------------------------------------------------------------------------


def test_bad_requests_raise_bad_request_error(
    client: openai.OpenAI, base_url: str, factory: FakeFactory
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=QUESTION, tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0]" and "function" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-nope", input=QUESTION)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=10**6)
    assert info.value.param == "max_output_tokens" and info.value.code == "limit_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model=MODEL, input=[{"role": "user", "content": [{"type": "input_file"}]}]
        )
    assert info.value.param == "input[0].content[0]"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=" ", instructions="Be brief.")
    assert info.value.param == "input" and "content is empty" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=QUESTION, previous_response_id="resp_x")
    assert info.value.param == "previous_response_id" and "checkpointer" in info.value.message
    assert all(not s.calls for s in factory.scripts.values())


def test_no_key_is_an_authentication_error() -> None:
    factory = FakeFactory(scripts())
    with running_server(app_for(factory, api_keys=["secret"])) as url:
        with sdk(url, key="wrong") as client, pytest.raises(openai.AuthenticationError):
            client.responses.create(model=MODEL, input=QUESTION)
        none = httpx.post(f"{url}/v1/responses", json={"model": MODEL, "input": QUESTION})
        assert none.status_code == 401 and none.json()["error"]["code"] == "invalid_api_key"
        with sdk(url, key="secret") as client:
            assert client.responses.create(model=MODEL, input=QUESTION).output_text == ANSWER


def test_a_failed_run_is_an_error_with_its_record() -> None:
    with running_server(app_for(failing_factory())) as url, sdk(url) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.responses.create(model=MODEL, input=QUESTION)
        assert info.value.status_code == 502 and info.value.code == "all_panelists_failed"
        assert info.value.body["fusion"]["reason"] == "all_panelists_failed"
        with (
            pytest.raises(openai.InternalServerError),
            client.responses.stream(model=MODEL, input=QUESTION) as stream,
        ):
            list(stream)
        # After the stream opened (progress on), the failure is a response.failed event.
        with client.responses.stream(
            model=MODEL, input=QUESTION, extra_body={"fusion": {"progress": True}}
        ) as stream:
            events = list(stream)
            with pytest.raises(RuntimeError):
                stream.get_final_response()
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error"
    assert "no panelist produced an answer" in failed.response.error.message
    assert failed.response.model_extra["fusion"]["reason"] == "all_panelists_failed"


# --- previous_response_id on a durable server -------------------------------------------------


def test_previous_response_id_continues_the_stored_conversation() -> None:
    factory = FakeFactory(scripts())
    graph = build_graph(factory, checkpointer=InMemorySaver())
    app = create_app(graph, api_keys=["k1", "k2"], aliases={MODEL: ALIAS})
    with running_server(app) as url, sdk(url, "k1") as client, sdk(url, "k2") as other:
        first = client.responses.create(model=MODEL, input=QUESTION, instructions="Be brief.")
        assert first.model_extra["store"] is True
        second = client.responses.create(
            model=MODEL, input="And of Germany?", previous_response_id=first.id
        )
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=MODEL, input="Hi", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model=MODEL, input="Hi", previous_response_id="resp_nothing")
    assert second.id != first.id and second.output_text == ANSWER
    sent = factory.scripts["m1"].calls[-1]
    assert [m.type for m in sent[1:]] == ["human", "ai", "human"]
    assert [m.content for m in sent[1:]] == [QUESTION, ANSWER, "And of Germany?"]
    # The first request's instructions do not carry over (OpenAI's rule).
    assert "Be brief." not in sent[0].content


def test_openapi_documents_the_responses_endpoint(base_url: str) -> None:
    schema = httpx.get(f"{base_url}/openapi.json").json()
    operation = schema["paths"]["/v1/responses"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "input"} <= set(body["required"])
    assert MODEL in body["properties"]["model"]["enum"]
    assert "quorum" in body["properties"]["fusion"]["anyOf"][0]["properties"]
    responses = operation["responses"]
    assert {"200", "400", "401", "404", "502"} <= set(responses)
    assert "text/event-stream" in responses["200"]["content"]
    ok = responses["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["object"]["const"] == "response"


HOSTILE_BODIES = [
    b'{"model": "fusion-test", "input": "Hi", "temperature": NaN}',
    b'{"model": "fusion-test", "input": "Hi", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "fusion-test", "input": "\\ud800"}',
]


@pytest.mark.parametrize("raw", HOSTILE_BODIES, ids=["nan", "deep", "lone-surrogate"])
def test_hostile_bodies_are_refused_before_any_model(
    base_url: str, factory: FakeFactory, raw: bytes
) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{base_url}/v1/responses", content=raw, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] in {
        "invalid_json",
        "limit_exceeded",
    }
    assert all(not s.calls for s in factory.scripts.values())
