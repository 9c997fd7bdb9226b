"""A final answer no model wrote (a vote's winner, a selection, an early exit) reaches every
surface: graph.astream, FusionChatModel (invoke and stream), the server (plain and SSE), the
CLI; and a durable run resumes mid-cascade without calling the first wave again."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.persistence import has_unfinished_run, open_checkpointer
from fusiongraph.graph.tool import fusion_tool
from fusiongraph.serve import cli
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json
from tests.support.server_app import MODEL, USER, scripts, served

WINNER = "Paris, clearly. Answer: Paris"
VOTE_SCRIPTS = {
    "m1": [WINNER],
    "m2": ["It is Paris. Answer: paris"],
    "m3": ["Answer: Lyon"],
}


def vote_factory() -> FakeFactory:
    return FakeFactory(scripts(**VOTE_SCRIPTS))


def vote_context(**extra: Any) -> dict[str, Any]:
    return fake_context(["m1", "m2", "m3"], aggregation="vote", **extra)


async def test_graph_astream_delivers_the_vote_winner_in_messages_mode() -> None:
    f = vote_factory()
    graph = build_graph(f)
    seen: list[tuple[str, Any]] = []
    async for message, meta in graph.astream(
        {"messages": [HumanMessage("Capital of France?")]},
        context=vote_context(),
        stream_mode="messages",
    ):
        if isinstance(message, AIMessage):
            seen.append((meta["langgraph_node"], message.content))
    assert ("finish", WINNER) in seen
    assert len(f.scripts["judge"].calls) == len(f.scripts["synth"].calls) == 0


def test_chat_model_invoke_and_stream_deliver_the_vote_winner() -> None:
    model = FusionChatModel(graph=build_graph(vote_factory()), context=vote_context())
    reply = model.invoke("Capital of France?")
    assert reply.content == WINNER
    assert reply.response_metadata["fusion"]["aggregation"]["final"] == "vote"
    chunks = list(model.stream("Capital of France?"))
    assert "".join(str(c.content) for c in chunks) == WINNER
    assert chunks[-1].response_metadata["fusion"]["aggregation"]["vote"]["winner"] == "paris"
    assert chunks[-1].usage_metadata["total_tokens"] > 0


async def test_chat_model_astream_delivers_a_selection() -> None:
    judge = [judge_json(consensus=["c"], best="A", best_reason="first label")]
    f = FakeFactory(scripts(judge=judge))
    ctx = fake_context(["m1", "m2", "m3"], aggregation="select")
    model = FusionChatModel(graph=build_graph(f), context=ctx)
    chunks = [c async for c in model.astream("Capital of France?")]
    text = "".join(str(c.content) for c in chunks)
    fusion = chunks[-1].response_metadata["fusion"]
    chosen = fusion["aggregation"]["selected"]["panelist"]
    assert text == next(p["content"] for p in fusion["panel"] if p["panelist"] == chosen)
    assert len(f.scripts["synth"].calls) == 0


def test_server_plain_and_streamed_deliver_the_vote_winner() -> None:
    body = {"model": MODEL, "messages": USER, "fusion": {"aggregation": "vote"}}
    with served(vote_factory()) as (url, client):
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
        assert plain["choices"][0]["message"]["content"] == WINNER
        assert plain["fusion"]["aggregation"]["vote"]["counts"] == {"paris": 2, "lyon": 1}
        stream = client.chat.completions.create(
            model=MODEL,
            messages=USER,
            stream=True,
            extra_body={"fusion": {"aggregation": "vote"}},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == WINNER
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[0].choices[0].finish_reason == "stop"
    assert finish[0].model_extra["fusion"]["aggregation"]["final"] == "vote"


def test_server_refuses_a_bad_aggregation_setting_naming_it() -> None:
    body = {"model": MODEL, "messages": USER, "fusion": {"cascade": 3}}
    with served(vote_factory()) as (url, _client):
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert "cascade" in response.text


def test_cli_shows_the_vote_table_and_the_selection(capsys: pytest.CaptureFixture[str]) -> None:
    reply = FusionChatModel(graph=build_graph(vote_factory()), context=vote_context()).invoke(
        "Capital of France?"
    )
    cli.show_result(reply.response_metadata["fusion"], str(reply.content))
    out = capsys.readouterr().out
    assert "vote (auto)" in out and "paris" in out and "lyon" in out
    assert "answer from p1" in out and "saved 2 calls" in out
    assert "judge unavailable" not in out  # no judge was needed, none failed


def test_cli_ask_takes_aggregation() -> None:
    from typer.testing import CliRunner

    wrong = CliRunner().invoke(cli.app, ["ask", "hi", "--aggregation", "rewrite"])
    assert wrong.exit_code == 2
    assert all(name in wrong.output for name in ("synthesize", "select", "vote", "auto"))


async def test_a_durable_run_resumes_mid_cascade(tmp_path: Path) -> None:
    """The first wave disagrees, the gate sends the rest, the run dies while p3 answers; a new
    process resumes: p1 and p2 are not called again, p3 is, and the vote decides."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}"}}
    ctx = fake_context(["m1", "m2", "m3"], aggregation="vote", cascade=2)
    question = {"messages": [HumanMessage("What is 6 times 7?")]}

    def scripted(m3_delay: float) -> FakeFactory:
        return FakeFactory(
            {
                "m1": ["Answer: 42"],
                "m2": ["Answer: 41"],
                "m3": Script(["Answer: 42"], delay_s=m3_delay),
                "judge": [judge_json(consensus=["c"])],
                "synth": ["SYNTHESIZED"],
            }
        )

    first = scripted(60.0)
    async with open_checkpointer(url) as saver:
        graph = build_graph(first, checkpointer=saver)
        run = asyncio.create_task(graph.ainvoke(question, config, context=ctx))
        deadline = time.monotonic() + 30
        while True:
            state = await graph.aget_state(config)
            if (state.values.get("aggregation") or {}).get("route") == "rest":
                break
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # p3's call is in flight
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert [len(first.scripts[m].calls) for m in ("m1", "m2", "m3")] == [1, 1, 0]
    assert first.scripts["m3"].cancelled == 1

    second = scripted(0.0)
    async with open_checkpointer(url) as saver:
        graph = build_graph(second, checkpointer=saver)
        assert await has_unfinished_run(graph, config)
        result = await graph.ainvoke(None, config, context=ctx)
    assert [len(second.scripts[m].calls) for m in ("m1", "m2", "m3")] == [0, 0, 1]
    final = result["messages"][-1]
    assert final.content == "Answer: 42"
    agg = final.response_metadata["fusion"]["aggregation"]
    assert agg["cascade"]["rest_called"] is True and agg["vote"]["winner"] == "42"
    assert [p["panelist"] for p in final.response_metadata["fusion"]["panel"]] == ["p1", "p2", "p3"]


async def test_the_tool_says_no_judge_was_needed_and_whose_answer_it_is() -> None:
    deliberate = fusion_tool(graph=build_graph(vote_factory()), context=vote_context())
    call = {"name": "deliberate", "args": {"question": "Capital?"}, "id": "c1", "type": "tool_call"}
    message = await deliberate.ainvoke(call)
    assert message.content.startswith(WINNER)
    assert "No judge was needed: 'paris' won the vote" in message.content
    assert "The judge gave no usable analysis" not in message.content
    assert "The answer is p1's: 'paris' won 2 of 3 votes" in message.content


def test_server_refuses_a_classifier_endpoint_per_request() -> None:
    """A request may not point the classifier at a URL of its choosing (as for the judge)."""
    spec = {"model": "clf", "base_url": "http://127.0.0.1:9/v1"}
    body = {"model": MODEL, "messages": USER, "fusion": {"aggregation": "auto", "classifier": spec}}
    with served(vote_factory()) as (url, _client):
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "fusion.classifier.base_url"
