"""Panelist tool modes: the agentic loop is bounded, prefetch reads the corpus, sources are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from fusiongraph.graph.builder import build_graph
from tests.support.fakes import FakeFactory, Script, judge_json, judge_spec, tool_call


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "volcano.md").write_text(
        "# Volcanoes\n\nMount Etna is an active stratovolcano on Sicily. ETNA-FACT-42.\n"
    )
    (tmp_path / "tides.md").write_text("# Tides\n\nTides are caused by the Moon's gravity.\n")
    return tmp_path


def ctx(corpus: Path, **extra: Any) -> dict[str, Any]:
    return {
        "panel": ["openai:agent"],
        "judge": judge_spec(),
        "synthesizer": "openai:synth",
        "search_provider": "corpus",
        "corpus_dir": str(corpus),
        **extra,
    }


def factory(panel: Script) -> FakeFactory:
    return FakeFactory({"agent": panel, "judge": [judge_json(consensus=["ok"])], "synth": ["done"]})


async def test_agentic_loop_stops_at_max_tool_calls_then_answers(corpus: Path) -> None:
    def always_search(messages: list[Any]) -> AIMessage:
        n = sum(isinstance(m, ToolMessage) for m in messages)
        if isinstance(messages[-1], HumanMessage) and "budget is spent" in messages[-1].content:
            return AIMessage(content=f"Final after {n} tool results.")
        return AIMessage(content="", tool_calls=[tool_call("web_search", f"c{n}", query="Etna")])

    panel = Script([always_search])
    result = await build_graph(factory(panel)).ainvoke(
        {"messages": [HumanMessage(content="Tell me about Etna")]},
        context=ctx(corpus, tool_mode="agentic", max_tool_calls=3),
    )
    entry = result["messages"][-1].response_metadata["fusion"]["panel"][0]
    assert entry["tool_calls"] == 3
    assert entry["content"] == "Final after 3 tool results."
    assert len(panel.calls) == 4  # three tool steps, then one answer
    tool_results = [m for m in panel.calls[-1] if isinstance(m, ToolMessage)]
    assert "ETNA-FACT-42" in tool_results[0].content and "UNTRUSTED" in tool_results[0].content
    assert entry["sources"] and entry["sources"][0]["url"].startswith("corpus://volcano.md")
    names = {t.name for t in panel.bound_tools[0][0]}
    assert names == {"web_search", "web_fetch"}
    assert panel.bound_tools[-1][1].get("tool_choice") == "none"


async def test_agentic_loop_counts_parallel_calls_against_the_budget(corpus: Path) -> None:
    def two_at_once(messages: list[Any]) -> AIMessage:
        if any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage(content="answered")
        return AIMessage(
            content="",
            tool_calls=[
                tool_call("web_search", "a", query="Etna"),
                tool_call("web_search", "b", query="tides"),
                tool_call("web_search", "c", query="more"),
            ],
        )

    panel = Script([two_at_once])
    result = await build_graph(factory(panel)).ainvoke(
        {"messages": [HumanMessage(content="q")]},
        context=ctx(corpus, tool_mode="agentic", max_tool_calls=2),
    )
    entry = result["messages"][-1].response_metadata["fusion"]["panel"][0]
    assert entry["tool_calls"] == 2
    refused = [m for m in panel.calls[-1] if isinstance(m, ToolMessage) and "budget" in m.content]
    assert len(refused) == 1


async def test_prefetch_searches_once_and_answers_from_the_pages(corpus: Path) -> None:
    panel = Script(["Etna is on Sicily."])
    result = await build_graph(factory(panel)).ainvoke(
        {"messages": [HumanMessage(content="Where is the volcano Etna?")]},
        context=ctx(corpus, tool_mode="prefetch"),
    )
    system = panel.calls[0][0].content
    assert "ETNA-FACT-42" in system and "UNTRUSTED" in system
    assert panel.bound_tools == []  # prefetch never binds tools
    entry = result["messages"][-1].response_metadata["fusion"]["panel"][0]
    assert entry["sources"][0]["url"].startswith("corpus://volcano.md")
    assert entry["tool_calls"] == 0


async def test_off_mode_uses_no_tools(corpus: Path) -> None:
    panel = Script(["plain"])
    await build_graph(factory(panel)).ainvoke(
        {"messages": [HumanMessage(content="q")]}, context=ctx(corpus, tool_mode="off")
    )
    assert panel.bound_tools == [] and "<<<UNTRUSTED_DATA" not in panel.calls[0][0].content


async def test_panelists_see_caller_tool_history_as_text(corpus: Path) -> None:
    panel = Script(["ok"])
    conversation = [
        HumanMessage(content="What's the weather in Oslo?"),
        AIMessage(content="", tool_calls=[tool_call("get_weather", "w1", city="Oslo")]),
        ToolMessage(content="-3C and snow", tool_call_id="w1", name="get_weather"),
    ]
    await build_graph(factory(panel)).ainvoke(
        {"messages": conversation}, context=ctx(corpus, tool_mode="off")
    )
    sent = panel.calls[0]
    assert not any(isinstance(m, ToolMessage) for m in sent)
    assert not any(getattr(m, "tool_calls", None) for m in sent)
    text = "\n".join(str(m.content) for m in sent)
    assert "get_weather" in text and "-3C and snow" in text
