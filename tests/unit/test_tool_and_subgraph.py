"""The deliberation tool, and the compiled fusion graph as a node of a parent graph."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.config import FusionContext
from fusiongraph.graph.tool import fusion_tool
from tests.support.fakes import (
    FakeFactory,
    Script,
    ScriptedChatModel,
    fake_context,
    judge_json,
    tool_call,
)

CONTEXT: dict[str, Any] = fake_context(["m1", "m2", "m3"])


def judge_reply(messages: list[Any]) -> str:
    """Name a real label from the prompt, so the mapping back to panelist ids is exercised."""
    prompt = messages[-1].content
    label = "A" if "Response A" in prompt else "B"
    return judge_json(
        consensus=["Paris is the capital of France"],
        contradictions=[
            {"topic": "population", "stances": [{"panelist": label, "stance": "2.1 million"}]}
        ],
        unique_insights=[{"panelist": label, "insight": "the Seine splits it into two banks"}],
        blind_spots=["nobody mentioned the metro area"],
    )


def factory(synth: Any = "Paris is the capital of France.") -> FakeFactory:
    scripts: dict[str, Any] = {f"m{i}": [f"Panelist {i}: Paris."] for i in (1, 2, 3)}
    scripts["judge"] = [judge_reply]
    scripts["synth"] = synth if isinstance(synth, Script) else [synth]
    return FakeFactory(scripts)


def deliberate_call(**args: Any) -> dict[str, Any]:
    return {"name": "deliberate", "args": args, "id": "call_d", "type": "tool_call"}


# --- the deliberation tool ----------------------------------------------------------------


async def test_tool_returns_answer_analysis_and_artifact() -> None:
    fake = factory()
    deliberate = fusion_tool(graph=build_graph(fake), context=CONTEXT)
    assert deliberate.name == "deliberate"
    assert set(deliberate.args) == {"question", "context"}
    assert "second opinion" in deliberate.description

    message = await deliberate.ainvoke(deliberate_call(question="What is the capital of France?"))
    assert isinstance(message, ToolMessage) and message.status == "success"
    text = message.content
    assert text.startswith("Paris is the capital of France.")
    assert "Deliberation: 3 panelist(s) answered." in text
    assert "Consensus:\n- Paris is the capital of France" in text
    assert "Contradictions:\n- population: p" in text  # labels mapped back to panelist ids
    assert "the Seine splits it into two banks" in text
    assert "Blind spots:\n- nobody mentioned the metro area" in text
    artifact = message.artifact
    assert len(artifact["panel"]) == 3 and artifact["usage"]["total"]["total_tokens"] > 0
    assert artifact["analysis"]["consensus"] == ["Paris is the capital of France"]


def test_tool_sync_with_context_reaches_the_panel_as_background() -> None:
    fake = factory()
    deliberate = fusion_tool(graph=build_graph(fake), context=CONTEXT)
    message = deliberate.invoke(
        deliberate_call(
            question="Which city is the capital?", context="We are talking about France."
        )
    )
    assert message.content.startswith("Paris is the capital of France.")
    sent = fake.scripts["m1"].calls[0]
    assert isinstance(sent[0], SystemMessage)
    assert "Background from the asking agent:\nWe are talking about France." in sent[0].content
    assert isinstance(sent[-1], HumanMessage) and sent[-1].content == "Which city is the capital?"


async def test_tool_reports_a_failed_deliberation_as_an_error_message() -> None:
    fake = factory()
    for i in (1, 2, 3):
        fake.scripts[f"m{i}"] = Script([RuntimeError("down")])
    deliberate = fusion_tool(graph=build_graph(fake), context=CONTEXT)
    message = await deliberate.ainvoke(deliberate_call(question="Anything?"))
    assert message.status == "error"
    assert message.content.startswith("Deliberation failed (all_panelists_failed)")


async def test_degraded_run_says_the_judge_failed() -> None:
    fake = factory()
    fake.scripts["judge"] = Script(["not json at all"])
    message = await fusion_tool(graph=build_graph(fake), context=CONTEXT).ainvoke(
        deliberate_call(question="Capital of France?")
    )
    assert "The judge gave no usable analysis" in message.content
    assert message.artifact["degraded"] is True


async def test_as_tool_on_the_chat_model_and_an_agent_calling_it() -> None:
    model = FusionChatModel(graph=build_graph(factory()), context=CONTEXT)
    deliberate = model.as_tool()
    assert deliberate.name == "deliberate" and set(deliberate.args) == {"question", "context"}

    agent_model = ScriptedChatModel(
        script=Script(
            [
                AIMessage(
                    content="",
                    tool_calls=[
                        tool_call("deliberate", "call_d", question="What is the capital of France?")
                    ],
                ),
                lambda messages: AIMessage(
                    content="Answer: " + messages[-1].content.split("\n")[0]
                ),
            ]
        )
    )
    agent = create_agent(model=agent_model, tools=[deliberate])
    result = await agent.ainvoke({"messages": [HumanMessage(content="Capital of France?")]})
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.name == "deliberate" and len(tool_message.artifact["panel"]) == 3
    assert result["messages"][-1].content == "Answer: Paris is the capital of France."


# --- the fusion graph as a subgraph ---------------------------------------------------------


def parent_graph(fusion: Any, **compile_kwargs: Any) -> Any:
    builder = StateGraph(MessagesState, context_schema=FusionContext)
    builder.add_node("fusion", fusion)
    builder.add_edge(START, "fusion")
    return builder.compile(**compile_kwargs)


async def test_subgraph_without_checkpointer() -> None:
    fake = factory()
    parent = parent_graph(build_graph(fake))
    result = await parent.ainvoke(
        {"messages": [HumanMessage(content="Capital of France?")]},
        context=FusionContext(**CONTEXT),
    )
    assert [type(m) for m in result["messages"]] == [HumanMessage, AIMessage]
    final = result["messages"][-1]
    assert final.content == "Paris is the capital of France."
    assert len(final.response_metadata["fusion"]["panel"]) == 3


@pytest.mark.parametrize("subgraph_checkpointer", [None, True])
async def test_subgraph_with_checkpointer_two_turns(subgraph_checkpointer: Any) -> None:
    """Turn two sees turn one's messages; each turn gets a fresh panel, also when the subgraph
    keeps its own state across turns (checkpointer=True)."""
    fake = factory(Script(["Paris is the capital of France.", "About 2.1 million people."]))
    fusion = build_graph(fake, checkpointer=subgraph_checkpointer)
    parent = parent_graph(fusion, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-1"}}
    ctx = FusionContext(**CONTEXT)

    first = await parent.ainvoke(
        {"messages": [HumanMessage(content="Capital of France?")]}, config, context=ctx
    )
    assert first["messages"][-1].content == "Paris is the capital of France."
    second = await parent.ainvoke(
        {"messages": [HumanMessage(content="Its population?")]}, config, context=ctx
    )
    contents = [m.content for m in second["messages"]]
    assert contents == [
        "Capital of France?",
        "Paris is the capital of France.",
        "Its population?",
        "About 2.1 million people.",
    ]
    fusion_meta = second["messages"][-1].response_metadata["fusion"]
    assert sorted(p["panelist"] for p in fusion_meta["panel"]) == ["p1", "p2", "p3"]
    panel_second_turn = fake.scripts["m1"].calls[1]
    assert [m.content for m in panel_second_turn[1:]] == contents[:3]
    synth_second_turn = fake.scripts["synth"].calls[1]
    assert [m.content for m in synth_second_turn[1:]] == contents[:3]
    state = await parent.aget_state(config)
    assert len(state.values["messages"]) == 4
