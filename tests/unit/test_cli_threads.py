"""`fusiongraph ask --thread`: the same question replays, another one continues the conversation,
and a thread holding another question's unfinished run is refused instead of answering it.
Also: the CLI says everything the library can (--judge, --synthesizer, object specs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from typer.testing import CliRunner

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.cli import app
from tests.support.fakes import FakeFactory, Script, judge_spec
from tests.support.server_app import scripts

JUDGE = json.dumps(judge_spec())
MODELS = (
    *("--panel", "openai:m1", "--panel", '{"provider": "openai", "model": "m2"}'),
    *("--judge", JUDGE, "--synthesizer", "openai:synth", "--tool-mode", "off"),
)


@pytest.fixture
def factory() -> FakeFactory:
    synth = Script([])
    synth.replies = [lambda _messages: f"answer {len(synth.calls)}"]
    return FakeFactory(scripts(synth=synth))


@pytest.fixture
def graph(factory: FakeFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[CompiledStateGraph]:
    """One checkpointed graph of fake models behind every `ask` of the test."""
    compiled = build_graph(factory, checkpointer=InMemorySaver())

    @asynccontextmanager
    async def open_graph(*_: Any, **__: Any) -> AsyncIterator[CompiledStateGraph]:
        yield compiled

    monkeypatch.setattr("fusiongraph.graph.builder.open_graph", open_graph)
    yield compiled


def ask(question: str, *extra: str) -> Any:
    args = ["ask", question, *MODELS, "--checkpointer", "memory", "--thread", "t", "--json"]
    return CliRunner().invoke(app, [*args, *extra])


def answer_of(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["answer"]


def test_same_question_replays_and_another_continues_the_thread(
    graph: CompiledStateGraph, factory: FakeFactory
) -> None:
    assert answer_of(ask("Capital of France?")) == "answer 1"
    replay = ask("Capital of France?")
    assert answer_of(replay) == "answer 1" and "stored answer" in replay.stderr
    follow_up = ask("And its population?")
    assert answer_of(follow_up) == "answer 2" and "continuing" in follow_up.stderr
    assert len(factory.scripts["m1"].calls) == 2  # the replay called nobody
    seen = [m.content for m in factory.scripts["m1"].calls[-1] if m.type != "system"]
    assert seen == ["Capital of France?", "answer 1", "And its population?"]


def test_a_thread_with_another_questions_unfinished_run_is_refused(
    graph: CompiledStateGraph, factory: FakeFactory
) -> None:
    factory.scripts["m2"].delay_s = 3600
    config = {"configurable": {"thread_id": "t"}}

    async def interrupted() -> None:
        run = graph.ainvoke(
            {"messages": [HumanMessage("Capital of Spain?")]},
            config,
            context={"panel": ["openai:m1", "openai:m2"], "synthesizer": "openai:synth"},
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run, 0.5)

    asyncio.run(interrupted())
    result = ask("Capital of France?")
    assert result.exit_code == 2
    assert "unfinished run of a different request" in result.stderr
    assert not factory.scripts["synth"].calls  # neither question was answered


def test_judge_synthesizer_and_object_specs_reach_the_run(
    graph: CompiledStateGraph, factory: FakeFactory
) -> None:
    fusion = json.loads(ask("Capital of France?").stdout)["fusion"]
    assert [p["model"] for p in fusion["panel"]] == ["openai:m1", "openai:m2"]
    assert fusion["judge"]["model"] == "openai:judge"
    assert fusion["synthesizer"]["model"] == "openai:synth"


def test_a_spec_that_is_not_json_is_a_clear_usage_error(graph: CompiledStateGraph) -> None:
    result = CliRunner().invoke(app, ["ask", "hi", "--panel", "{not json"])
    assert result.exit_code == 2 and "not a JSON object" in result.output


def test_any_setting_can_be_set_and_a_wrong_one_is_a_usage_error(
    graph: CompiledStateGraph, factory: FakeFactory
) -> None:
    result = ask("Capital of France?", "--judge-input-chars", "300", "--quorum", "2")
    settings = json.loads(result.stdout)["fusion"]["settings"]
    assert settings["judge_input_chars"] == 300 and settings["quorum"] == 2
    wrong = CliRunner().invoke(app, ["ask", "hi", "--quorun", "2"])
    assert wrong.exit_code == 2 and "No such option" in wrong.output
    bad = CliRunner().invoke(app, ["ask", "hi", "--panel", "openai:m1", "--panel-timeout-s", "-1"])
    assert bad.exit_code == 2 and "panel_timeout_s" in bad.output
