"""Runs on one event loop start in turn (nodes/scheduling.py), and every path ends a turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.models import DefaultModelFactory
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes import scheduling
from fusiongraph.nodes.scheduling import StartOrder
from tests.support.upstream import UpstreamServer

CONTEXT = {
    "panel": ["openai:s1-0.2s", "openai:s2-0.2s", "openai:s3-0.2s"],
    "judge": "openai:judge-0.0s",
    "synthesizer": "openai:synth-0.0s",
    "tool_mode": "off",
}


def _ask(tag: str) -> dict[str, list[HumanMessage]]:
    return {"messages": [HumanMessage(f"[bench:{tag}] why?")]}


async def test_a_start_waits_for_the_turn_before_it() -> None:
    order = StartOrder()
    await order.take("a")
    second = asyncio.ensure_future(order.take("b"))
    await asyncio.sleep(0.01)
    order.end("b")  # not b's turn yet: nothing happens
    assert not second.done()
    order.end("a")
    await asyncio.wait_for(second, 1)
    order.end("b")


async def test_a_turn_ends_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "START_TURN_MAX_S", 0.05)
    order = StartOrder()
    await order.take("stuck")  # never ended
    started = time.monotonic()
    await asyncio.wait_for(order.take("next"), 2)
    assert time.monotonic() - started < 1.0
    order.end("next")


class _TimedFactory(DefaultModelFactory):
    """The real models; notes when each run's dispatch prepares its plan (inside its turn)."""

    def __init__(self) -> None:
        self.prepared: list[float] = []

    async def prepare(self, specs: Iterable[ModelSpec]) -> None:
        self.prepared.append(time.monotonic())
        await super().prepare(specs)


async def test_concurrent_runs_send_their_panels_in_turn(
    openai_env: str, upstream: UpstreamServer
) -> None:
    """The first run's panel requests leave before the last run has begun its start: a burst
    moves as a pipeline (in lockstep, every run would prepare before any request left)."""
    factory = _TimedFactory()
    graph = build_graph(factory)
    tags = [f"so{i}" for i in range(6)]
    outs = await asyncio.gather(*(graph.ainvoke(_ask(t), context=CONTEXT) for t in tags))
    assert all(out["messages"][-1].text for out in outs)
    panel = [r for r in upstream.app.records if r.tag in tags and r.role == "panel"]
    assert len(panel) == 18
    assert min(r.arrival for r in panel) < max(factory.prepared)


async def test_a_failed_dispatch_ends_its_turn(
    openai_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduling, "START_TURN_MAX_S", 60.0)  # only ending the turn lets b start
    graph = build_graph()
    with pytest.raises(Exception, match="no price known"):  # refused inside dispatch's turn
        await graph.ainvoke(_ask("so-bad"), context={**CONTEXT, "max_cost_usd": 0.01})
    out = await asyncio.wait_for(graph.ainvoke(_ask("so-after-bad"), context=CONTEXT), 10)
    assert out["messages"][-1].text


async def test_a_panel_of_cached_answers_ends_its_turn(
    openai_env: str, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated request's panel comes from the cache and sends no panel request: the gate
    ends its turn, so the next run does not wait for START_TURN_MAX_S."""
    monkeypatch.setattr(scheduling, "START_TURN_MAX_S", 60.0)
    graph = build_graph(cache=True)
    for tag in ("so-cached", "so-cached", "so-next"):
        out = await asyncio.wait_for(graph.ainvoke(_ask(tag), context=CONTEXT), 10)
        assert out["messages"][-1].text
    cached = [r for r in upstream.app.records if r.tag == "so-cached" and r.role == "panel"]
    assert len(cached) == 3  # the second run's panel came from the cache
