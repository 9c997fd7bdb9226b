"""FusionChatModel on scripted models: invoke, stream, tools, structured output, errors, agents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel, ValidationError

from fusiongraph.graph import chat_model, models
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.chat_model import (
    FusionChatModel,
    StopCutter,
    normalise_tool_choice,
    preset_from_model_name,
)
from fusiongraph.graph.errors import FusionError
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json, tool_call

PANEL_TEXT = "PANEL-SECRET"
JUDGE_TEXT = "JUDGE-SECRET"


def context(n: int = 3, **extra: Any) -> dict[str, Any]:
    return fake_context([f"m{i}" for i in range(1, n + 1)], **extra)


def factory(synth: Any = "the final synthesized answer", n: int = 3) -> FakeFactory:
    scripts: dict[str, Any] = {f"m{i}": [f"{PANEL_TEXT} answer {i}."] for i in range(1, n + 1)}
    scripts["judge"] = [judge_json(consensus=[f"{JUDGE_TEXT} all agree"])]
    scripts["synth"] = (
        synth
        if isinstance(synth, Script)
        else Script(synth if isinstance(synth, list) else [synth])
    )
    return FakeFactory(scripts)


def model_for(fake: FakeFactory, n: int = 3, **kwargs: Any) -> FusionChatModel:
    return FusionChatModel(graph=build_graph(fake), context=context(n), **kwargs)


def aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# --- invoke, batch, stream ---------------------------------------------------------------


def test_invoke_returns_synthesis_with_fusion_metadata() -> None:
    fake = factory()
    reply = model_for(fake).invoke("What is the capital of France?")
    assert isinstance(reply, AIMessage)
    assert reply.content == "the final synthesized answer"
    fusion = reply.response_metadata["fusion"]
    assert len(fusion["panel"]) == 3 and fusion["analysis"]["consensus"]
    assert reply.response_metadata["model_name"] == "fusion:quality"
    assert reply.tool_calls == []


async def test_ainvoke_and_abatch() -> None:
    model = model_for(factory())
    reply = await model.ainvoke("Hello")
    assert reply.content == "the final synthesized answer"
    replies = await model.abatch(["Hello", "Hey"])
    assert [r.content for r in replies] == ["the final synthesized answer"] * 2


def test_batch_runs_one_fusion_per_input() -> None:
    fake = factory()
    replies = model_for(fake).batch(["Hello", "Hey", "Hi"])
    assert [r.content for r in replies] == ["the final synthesized answer"] * 3
    assert len(fake.scripts["synth"].calls) == 3
    assert all(len(fake.scripts[f"m{i}"].calls) == 3 for i in (1, 2, 3))


def _check_stream(chunks: list[AIMessageChunk]) -> None:
    texts = [c.content for c in chunks]
    assert texts == ["the", " ", "final", " ", "synthesized", " ", "answer", ""]
    assert not any(PANEL_TEXT in t or JUDGE_TEXT in t for t in texts)
    # Only the last chunk carries usage and metadata, so aggregation never double-counts.
    assert all(c.usage_metadata is None and not c.response_metadata for c in chunks[:-1])
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["total_tokens"] > 0
    assert "fusion" in last.response_metadata


def test_stream_yields_synthesis_tokens_only() -> None:
    _check_stream(list(model_for(factory()).stream("Hello")))


async def test_astream_yields_synthesis_tokens_only() -> None:
    _check_stream([c async for c in model_for(factory()).astream("Hello")])


def _comparable(message: AIMessage) -> dict[str, Any]:
    fusion = message.response_metadata["fusion"]
    return {
        "content": message.content,
        "tool_calls": [(c["name"], c["args"], c["id"]) for c in message.tool_calls],
        "usage": message.usage_metadata,
        "fusion_usage": fusion["usage"],
        "panel": sorted(p["content"] for p in fusion["panel"]),
        "analysis": fusion["analysis"],
        "model_name": message.response_metadata["model_name"],
    }


async def test_aggregated_stream_equals_invoke() -> None:
    model = model_for(factory())
    invoked = await model.ainvoke("Hello")
    streamed = aggregate([c async for c in model.astream("Hello")])
    assert _comparable(streamed) == _comparable(invoked)
    sync_streamed = aggregate(list(model.stream("Hello")))
    assert _comparable(sync_streamed) == _comparable(invoked)


async def test_usage_totals_cover_every_call_exactly_once() -> None:
    model = model_for(factory())
    handler = UsageMetadataCallbackHandler()
    reply = await model.ainvoke("Hello", config={"callbacks": [handler]})
    usage = reply.response_metadata["fusion"]["usage"]
    parts = [usage["panel"], usage["judge"], usage["synthesis"]]
    assert all(p["total_tokens"] > 0 for p in parts)
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert reply.usage_metadata[key] == usage["total"][key] == sum(p[key] for p in parts)
    # A usage callback sees the run once, as one model: inner calls are not reported again.
    assert handler.usage_metadata == {"fusion:quality": reply.usage_metadata}

    streamed_handler = UsageMetadataCallbackHandler()
    chunks = [c async for c in model.astream("Hello", config={"callbacks": [streamed_handler]})]
    assert aggregate(chunks).usage_metadata == reply.usage_metadata
    assert streamed_handler.usage_metadata == {"fusion:quality": reply.usage_metadata}


# --- tools --------------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """Current weather of a city, in degrees Celsius."""
    return f"It is 18 C and sunny in {city}."


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a temperature between C and F."""
    if (from_unit, to_unit) == ("C", "F"):
        return f"{value} C = {value * 9 / 5 + 32:g} F"
    return f"cannot convert {from_unit} to {to_unit}"


def test_tool_choice_spellings() -> None:
    names = ["get_weather"]
    assert normalise_tool_choice("any", names) == "required"
    assert normalise_tool_choice(True, names) == "required"
    assert normalise_tool_choice("required", names) == "required"
    assert normalise_tool_choice("auto", names) == "auto"
    assert normalise_tool_choice("none", names) == "none"
    assert normalise_tool_choice(None, names) is None
    assert normalise_tool_choice("get_weather", names) == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    with pytest.raises(ValueError, match="get_weather"):
        normalise_tool_choice("no_such_tool", names)


async def test_bound_tools_reach_the_synthesizer_only(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text("# Paris\n\nParis is the capital of France.\n")
    call = tool_call("get_weather", "call_1", city="Paris")
    fake = factory(AIMessage(content="", tool_calls=[call]))
    model = FusionChatModel(
        graph=build_graph(fake),
        context=context(tool_mode="agentic", search_provider="corpus", corpus_dir=str(tmp_path)),
    )
    bound = model.bind_tools([get_weather, convert_units], tool_choice="get_weather")

    reply = await bound.ainvoke("What is the weather in Paris?")
    assert reply.tool_calls == [call]
    streamed = aggregate([c async for c in bound.astream("What is the weather in Paris?")])
    assert [(c["name"], c["args"], c["id"]) for c in streamed.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "call_1")
    ]

    tools, kwargs = fake.scripts["synth"].bound_tools[0]
    assert [t["function"]["name"] for t in tools] == ["get_weather", "convert_units"]
    assert tools[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert kwargs["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    for i in (1, 2, 3):  # panelists keep their own web tools and never get the caller's
        panel_tools = fake.scripts[f"m{i}"].bound_tools
        assert panel_tools
        for tools_bound, _ in panel_tools:
            assert {t.name for t in tools_bound} == {"web_search", "web_fetch"}


class Capital(BaseModel):
    """A country's capital."""

    country: str
    capital: str


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
async def test_with_structured_output_returns_pydantic(method: str) -> None:
    call = tool_call("Capital", "call_1", country="France", capital="Paris")
    fake = factory(AIMessage(content="", tool_calls=[call]))
    structured = model_for(fake).with_structured_output(Capital, method=method)
    assert await structured.ainvoke("Capital of France?") == Capital(
        country="France", capital="Paris"
    )
    tools, kwargs = fake.scripts["synth"].bound_tools[0]
    assert tools[0]["function"]["name"] == "Capital" and kwargs["tool_choice"] == "required"
    raw = (
        model_for(factory(AIMessage(content="", tool_calls=[call])))
        .with_structured_output(Capital, include_raw=True)
        .invoke("Capital of France?")
    )
    assert raw["parsed"] == Capital(country="France", capital="Paris")
    assert raw["raw"].response_metadata["fusion"]["panel"]


# --- errors, stop, presets ----------------------------------------------------------------


def failing_factory() -> FakeFactory:
    fake = factory()
    for i in (1, 2, 3):
        fake.scripts[f"m{i}"] = Script([RuntimeError("down")])
    return fake


async def test_fusion_error_propagates_with_reason() -> None:
    model = model_for(failing_factory())
    with pytest.raises(FusionError) as info:
        await model.ainvoke("Hello")
    assert info.value.reason == "all_panelists_failed"
    with pytest.raises(FusionError) as info:
        model.invoke("Hello")
    assert info.value.reason == "all_panelists_failed"
    with pytest.raises(FusionError) as info:
        [c async for c in model.astream("Hello")]
    assert info.value.reason == "all_panelists_failed"
    with pytest.raises(FusionError) as info:
        list(model.stream("Hello"))
    assert info.value.reason == "all_panelists_failed"


async def test_invalid_input_is_a_fusion_error() -> None:
    with pytest.raises(FusionError) as info:
        await model_for(factory()).ainvoke([AIMessage(content="no user message")])
    assert info.value.reason == "invalid_input"


async def test_stop_sequences_cut_the_answer() -> None:
    model = model_for(factory())
    assert (await model.ainvoke("Hello", stop=["synth"])).content == "the final "
    streamed = aggregate([c async for c in model.astream("Hello", stop=["synth", "fin"])])
    assert streamed.content == "the "
    assert streamed.usage_metadata["total_tokens"] > 0
    assert model_for(factory(), stop=["answer"]).invoke("Hello").content == "the final synthesized "


def test_stop_cutter_holds_back_a_partial_match() -> None:
    cutter = StopCutter(["STOP"])
    out = [cutter.feed(t) for t in ["abc S", "T", "x ST", "OP tail"]]
    assert "".join(out) == "abc STx "
    assert cutter.feed("more") == "" and cutter.flush() == ""
    open_ended = StopCutter(["STOP"])
    assert open_ended.feed("ab ST") == "ab " and open_ended.flush() == "ST"


def test_model_kwarg_selects_the_preset() -> None:
    model = model_for(factory())
    reply = model.invoke("Hello", model="fusion:budget")
    assert reply.response_metadata["model_name"] == "fusion:budget"
    assert reply.response_metadata["fusion"]["preset"] == "budget"
    assert preset_from_model_name("fusion-local") == preset_from_model_name("local") == "local"


def test_constructor_resolves_preset_and_refuses_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FusionChatModel().preset == "local"
    assert FusionChatModel(model="fusion:budget").preset == "budget"
    assert FusionChatModel(context={"preset": "quality"}).preset == "quality"
    monkeypatch.setenv("FUSIONGRAPH_PRESET", "budget")
    assert FusionChatModel().preset == "budget"
    assert FusionChatModel(api_key="ignored", max_retries=3).preset == "budget"
    with pytest.raises(ValidationError, match="panle"):
        FusionChatModel(context={"panle": ["openai:x"]})
    with pytest.raises(ValidationError, match="presett"):
        FusionChatModel(presett="local")
    assert "graph" not in FusionChatModel().model_dump()


# --- inside a parent graph and an agent -------------------------------------------------


async def test_inside_a_parent_graph_streams_once_and_keeps_its_checkpoints_apart() -> None:
    model = model_for(factory())

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    saver = InMemorySaver()
    parent = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t1"}}
    tokens = []
    async for chunk, meta in parent.astream(
        {"messages": [HumanMessage(content="Hello")]}, config, stream_mode="messages"
    ):
        assert meta["langgraph_node"] == "model"
        tokens.append(chunk.content)
    assert "".join(tokens) == "the final synthesized answer"  # once, not once per layer
    namespaces = {c.config["configurable"]["checkpoint_ns"] for c in saver.list(config)}
    assert namespaces == {""}  # the inner run did not checkpoint into the parent's thread


async def test_create_agent_runs_two_tools_then_answers() -> None:
    def synthesizer(messages: list[Any]) -> AIMessage:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            return AIMessage(
                content="", tool_calls=[tool_call("get_weather", "call_w", city="Paris")]
            )
        if len(results) == 1:
            return AIMessage(
                content="",
                tool_calls=[
                    tool_call("convert_units", "call_c", value=18, from_unit="C", to_unit="F")
                ],
            )
        return AIMessage(content=f"Paris: sunny. {results[-1].content}.")

    fake = factory(Script([synthesizer]))
    agent = create_agent(model=model_for(fake), tools=[get_weather, convert_units])
    question = "What is the weather in Paris, in Fahrenheit?"
    result = await agent.ainvoke({"messages": [HumanMessage(content=question)]})

    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in tool_messages] == ["get_weather", "convert_units"]
    assert tool_messages[0].content == "It is 18 C and sunny in Paris."
    assert tool_messages[1].content == "18.0 C = 64.4 F"
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.content == "Paris: sunny. 18.0 C = 64.4 F."
    assert len(fake.scripts["synth"].calls) == 3
    # The panelists of the last round saw the tool results as plain text, never as tool roles.
    last_round = fake.scripts["m1"].calls[-1]
    assert not any(isinstance(m, ToolMessage) for m in last_round)
    flattened = " ".join(str(m.content) for m in last_round)
    assert "[result of tool get_weather]: It is 18 C and sunny in Paris." in flattened
    assert "[result of tool convert_units]: 18.0 C = 64.4 F" in flattened
    assert all(not bound for i in (1, 2, 3) for bound in fake.scripts[f"m{i}"].bound_tools)


async def test_create_agent_streams_the_final_answer_once() -> None:
    def synthesizer(messages: list[Any]) -> AIMessage:
        if any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage(content="It is sunny in Paris.")
        return AIMessage(content="", tool_calls=[tool_call("get_weather", "w1", city="Paris")])

    agent = create_agent(model=model_for(factory(Script([synthesizer]))), tools=[get_weather])
    text = []
    async for chunk, meta in agent.astream(
        {"messages": [HumanMessage(content="Weather in Paris?")]}, stream_mode="messages"
    ):
        if meta["langgraph_node"] == "model" and isinstance(chunk, AIMessageChunk):
            text.append(chunk.content)
            assert PANEL_TEXT not in chunk.content and JUDGE_TEXT not in chunk.content
    assert "".join(text) == "It is sunny in Paris."


def test_sync_stream_drives_the_async_run_and_closes_its_loops_clients(
    openai_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stream` runs the same async run as `astream` (graph/runner.py stream_run) on a private
    loop, whose shared HTTP client is closed before that loop ends (tools/aio.py iterate)."""
    closed: list[asyncio.AbstractEventLoop] = []

    async def spy() -> None:
        closed.append(asyncio.get_running_loop())
        await models.aclose_models()

    monkeypatch.setattr(chat_model, "aclose_models", spy)
    model = FusionChatModel(
        graph=build_graph(),
        context={
            "panel": ["openai:m-0.010s", "openai:n-0.010s"],
            "judge": "openai:judge-0.010s",
            "synthesizer": "openai:synth-0.010s",
            "tool_mode": "off",
        },
    )
    chunks = list(model.stream("[bench:sync1] why?"))
    full = aggregate(chunks)
    assert full.content and full.response_metadata["fusion"]["panel"]
    assert len(closed) == 1 and closed[0] not in models._MODEL_CACHES
