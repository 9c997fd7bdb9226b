"""LangChain's ChatOpenAI pointed at the fusion server: invoke, stream, tools, async."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.support.fakes import FakeFactory
from tests.support.server_app import ANSWER, MODEL, app_for, scripts, tool_call_reply
from tests.support.servers import running_server


@pytest.fixture
def llm(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{base_url}/v1", api_key="x", model=MODEL, max_retries=0)


def test_invoke(llm: ChatOpenAI) -> None:
    reply = llm.invoke("What is the capital of France?")
    assert reply.content == ANSWER
    assert reply.usage_metadata and reply.usage_metadata["total_tokens"] > 0
    assert reply.response_metadata["finish_reason"] == "stop"


def test_stream(llm: ChatOpenAI) -> None:
    chunks = list(
        llm.stream([HumanMessage(content="What is the capital of France?")], stream_usage=True)
    )
    assert len([c for c in chunks if c.content]) > 1
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk) and whole.content == ANSWER
    assert whole.usage_metadata and whole.usage_metadata["total_tokens"] > 0


async def test_ainvoke_and_astream(llm: ChatOpenAI) -> None:
    assert (await llm.ainvoke("capital of France?")).content == ANSWER
    text = "".join([str(c.content) async for c in llm.astream("capital of France?")])
    assert text == ANSWER


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "sunny"


def test_bind_tools_returns_tool_calls() -> None:
    factory = FakeFactory(scripts(synth=[tool_call_reply(city="Paris")]))
    with running_server(app_for(factory)) as url:
        llm = ChatOpenAI(base_url=f"{url}/v1", api_key="x", model=MODEL, max_retries=0)
        bound = llm.bind_tools([get_weather])
        reply = bound.invoke("Weather in Paris?")
        streamed = list(bound.stream("Weather in Paris?"))
    assert reply.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_abc123", "type": "tool_call"}
    ]
    whole = sum(streamed[1:], streamed[0])
    assert [(c["name"], c["args"], c["id"]) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "call_abc123")
    ]
    sent_tools, _ = factory.scripts["synth"].bound_tools[-1]
    assert sent_tools[0]["function"]["name"] == "get_weather"
