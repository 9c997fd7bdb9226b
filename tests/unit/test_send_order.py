"""Panel requests leave in turn, slowest-expected first (nodes/scheduling.py): each turn ends as
its request leaves, a branch that never sends cannot hold up the others, the calls still run
together, and the panelist that took longest last time is sent first."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.models import default_model_factory, quiet, reports_sends
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes import scheduling
from fusiongraph.nodes.scheduling import PANEL_LATENCIES, SendOrder
from tests.support.upstream import UpstreamServer


def fusion_context(panel: list[str]) -> dict:
    """A run on the fake upstream: the given panel, a quick judge and synthesizer, no tools."""
    return {
        "panel": panel,
        "judge": "openai:judge-0.01s",
        "synthesizer": "openai:synth-0.01s",
        "tool_mode": "off",
    }


def model(name: str):
    return quiet(default_model_factory(ModelSpec(provider="openai", model=name)))


async def test_a_turn_ends_as_its_request_leaves_not_when_the_answer_comes(
    openai_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduling, "SEND_TURN_MAX_S", 30.0)  # only the request can end this turn
    order, events = SendOrder(), []
    slow = model("turn-0.300s")
    assert reports_sends(slow)

    async def first() -> None:
        async with order.turn():
            await slow.ainvoke("[bench:so1] hello")
            events.append("first answered")

    async def second() -> None:
        await asyncio.sleep(0)  # the first branch asks for its turn first
        async with order.turn():
            events.append("second's turn")

    await asyncio.wait_for(asyncio.gather(first(), second()), 10)
    assert events == ["second's turn", "first answered"]


async def test_a_branch_that_never_sends_holds_its_turn_only_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduling, "SEND_TURN_MAX_S", 0.02)
    order, events, release = SendOrder(), [], asyncio.Event()

    async def stuck() -> None:
        async with order.turn():
            await release.wait()  # builds no request: its turn must still end
            events.append("stuck done")

    async def other() -> None:
        await asyncio.sleep(0)
        async with order.turn():
            events.append("other's turn")
            release.set()

    await asyncio.wait_for(asyncio.gather(stuck(), other()), 5)
    assert events == ["other's turn", "stuck done"]


async def test_a_failing_branch_passes_its_turn_on() -> None:
    order = SendOrder()

    async def fails() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        await order.run(fails())
    assert await asyncio.wait_for(order.run(asyncio.sleep(0, "next")), 1) == "next"


def test_branches_on_different_loops_never_wait_for_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sync invocation runs each branch on its own loop and thread."""
    monkeypatch.setattr(scheduling, "SEND_TURN_MAX_S", 30.0)  # no timer may end the holder's turn
    order, inside, seen = SendOrder(), threading.Event(), []

    async def holder() -> None:
        async with order.turn():
            inside.set()
            for _ in range(200):  # hold the turn while the other loop takes its own
                if seen:
                    return
                await asyncio.sleep(0.01)

    async def other() -> None:
        inside.wait(5)
        async with order.turn():
            seen.append("other")

    thread = threading.Thread(target=lambda: asyncio.run(holder()))
    thread.start()
    asyncio.run(asyncio.wait_for(other(), 1))
    thread.join(5)
    assert seen == ["other"]


def test_only_our_http_clients_report_their_sends(openai_env: str) -> None:
    assert not reports_sends(GenericFakeChatModel(messages=iter([AIMessage("x")])))


async def test_panel_calls_still_run_together(openai_env: str, upstream: UpstreamServer) -> None:
    """Turns order the sending, never the waiting: every panel request is out before any
    answer comes back."""
    graph = build_graph()
    ctx = fusion_context([f"openai:p{i}-0.300s" for i in range(1, 5)])
    await graph.ainvoke({"messages": [HumanMessage("[bench:so2] why?")]}, context=ctx)
    panel = [r for r in upstream.app.records if r.tag == "so2" and r.role == "panel"]
    assert len(panel) == 4
    assert max(r.arrival for r in panel) < min(r.done for r in panel if r.done)


def test_unseen_models_go_first_then_the_slowest() -> None:
    PANEL_LATENCIES.remember("fast", 0.5)
    PANEL_LATENCIES.remember("slow", 2.0)
    assert PANEL_LATENCIES.slowest_first(["fast", "new", "slow", "other new"]) == [1, 3, 2, 0]


def test_a_remembered_latency_follows_the_model_smoothly() -> None:
    PANEL_LATENCIES.remember("a", 1.0)
    PANEL_LATENCIES.remember("b", 2.0)
    PANEL_LATENCIES.remember("a", 4.0)  # one slow answer: a = 1.0 + 0.3 * 3.0 = 1.9, still below b
    assert PANEL_LATENCIES.slowest_first(["a", "b"]) == [1, 0]
    PANEL_LATENCIES.remember("a", 4.0)  # slow again: a = 2.53, now the slowest
    assert PANEL_LATENCIES.slowest_first(["a", "b"]) == [0, 1]


async def test_the_panelist_that_took_longest_is_sent_first_next_time(openai_env: str) -> None:
    graph = build_graph()
    ctx = fusion_context(["openai:fast-0.02s", "openai:slow-0.30s", "openai:mid-0.10s"])

    async def run(tag: str, context: dict) -> tuple[list[str], list[str]]:
        started, final = [], None
        inputs = {"messages": [HumanMessage(f"[bench:{tag}] why?")]}
        async for mode, data in graph.astream(
            inputs, context=context, stream_mode=["custom", "values"]
        ):
            if mode == "custom" and data["event"] == "panelist_started":
                started.append(data["model"])
            elif mode == "values":
                final = data["messages"][-1]
        reported = [e["panelist"] for e in final.response_metadata["fusion"]["panel"]]
        return started, reported

    await run("so3", fusion_context(["openai:warm-0.01s"]))  # a first call is slow (imports)
    first, _ = await run("so4", ctx)
    assert first == ["openai:fast-0.02s", "openai:slow-0.30s", "openai:mid-0.10s"]  # unseen
    again, reported = await run("so5", ctx)
    assert again == ["openai:slow-0.30s", "openai:mid-0.10s", "openai:fast-0.02s"]
    assert reported == ["p1", "p2", "p3"]  # results stay in panel order
