"""Deadlines, quorum, cancellation, progress events and the cost cap, on scripted models."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.errors import FusionConfigError, FusionError
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

ASK = {"messages": [HumanMessage(content="Why is the sky blue?")]}


def factory(delays: dict[str, float], judge_delay: float = 0.0) -> FakeFactory:
    scripts: dict[str, Any] = {
        name: Script([f"answer of {name}"], delay_s=delay) for name, delay in delays.items()
    }
    scripts["judge"] = Script(
        [judge_json(consensus=["blue light scatters more"])], delay_s=judge_delay
    )
    scripts["synth"] = ["Rayleigh scattering."]
    return FakeFactory(scripts)


def ctx(names: list[str], **extra: Any) -> dict[str, Any]:
    return fake_context(names, **extra)


def fusion_of(result: dict[str, Any]) -> dict[str, Any]:
    return result["messages"][-1].response_metadata["fusion"]


async def test_quorum_cuts_off_and_cancels_the_straggler() -> None:
    fake = factory({"a": 0.0, "b": 0.05, "hang": 3600.0})
    result = await build_graph(fake).ainvoke(
        ASK, context=ctx(["a", "b", "hang"], quorum=2, straggler_grace_s=0.05)
    )
    fusion = fusion_of(result)
    assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p2"]
    assert [(f["panelist"], f["reason"]) for f in fusion["failed_models"]] == [("p3", "straggler")]
    assert fake.scripts["hang"].cancelled == 1  # the straggler's call was really cancelled


async def test_grace_lets_a_close_straggler_finish() -> None:
    fake = factory({"a": 0.0, "b": 0.0, "late": 0.1})
    result = await build_graph(fake).ainvoke(
        ASK, context=ctx(["a", "b", "late"], quorum=2, straggler_grace_s=5.0)
    )
    assert len(fusion_of(result)["panel"]) == 3


async def test_without_quorum_every_panelist_is_awaited() -> None:
    fake = factory({"a": 0.0, "slow": 0.2})
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a", "slow"]))
    assert len(fusion_of(result)["panel"]) == 2


async def test_panel_timeout_is_a_hard_cap_per_panelist() -> None:
    fake = factory({"a": 0.0, "hang": 3600.0})
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a", "hang"], panel_timeout_s=0.2))
    assert [f["reason"] for f in fusion_of(result)["failed_models"]] == ["timeout"]
    assert fake.scripts["hang"].cancelled == 1


async def test_run_deadline_cut_is_deadline_not_timeout() -> None:
    fake = factory({"a": 0.0, "hang": 3600.0})
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a", "hang"], deadline_s=1.0))
    [failed] = fusion_of(result)["failed_models"]
    assert failed["reason"] == "deadline" and "deadline_s" in failed["message"]


class SlowFirstBuild(FakeFactory):
    """The process's first model build takes 2 s, as importing the client library does."""

    def __call__(self, spec: Any) -> Any:
        if not self.built:
            time.sleep(2.0)
        return super().__call__(spec)


def first_run_factory() -> SlowFirstBuild:
    return SlowFirstBuild(factory({"a": 0.05, "b": 0.05}).scripts)


def assert_first_run_clock_ok(fake: SlowFirstBuild, result: dict[str, Any]) -> None:
    fusion = fusion_of(result)
    assert fusion["failed_models"] == []
    assert all(p["latency_s"] < 0.6 for p in fusion["panel"]), fusion["panel"]
    # dispatch built exactly the models the nodes then build (a, b, judge, synth)
    built = [s.model_dump_json() for s in fake.built]
    assert sorted(built[:4]) == sorted(built[4:])


async def test_first_build_does_not_count_against_the_panel_clock() -> None:
    """A fresh process's first build (the client import) happens before any panelist's clock:
    with a 1 s panel timeout the run still succeeds and the latencies are the model's."""
    fake = first_run_factory()
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a", "b"], panel_timeout_s=1))
    assert_first_run_clock_ok(fake, result)


def test_first_build_does_not_count_against_the_panel_clock_under_sync_invoke() -> None:
    fake = first_run_factory()
    result = build_graph(fake).invoke(ASK, context=ctx(["a", "b"], panel_timeout_s=1))
    assert_first_run_clock_ok(fake, result)


def test_quorum_works_under_sync_invoke_too() -> None:
    fake = factory({"a": 0.0, "hang": 3600.0})
    result = build_graph(fake).invoke(ASK, context=ctx(["a", "hang"], quorum=1))
    assert [f["panelist"] for f in fusion_of(result)["failed_models"]] == ["p2"]


async def test_run_deadline_skips_a_slow_judge_and_still_answers() -> None:
    fake = factory({"a": 0.0, "b": 0.0}, judge_delay=3600.0)
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a", "b"], deadline_s=1.0))
    fusion = fusion_of(result)
    assert fusion["degraded"] is True and fusion["judge"]["error"]["reason"] == "deadline"
    assert result["messages"][-1].content == "Rayleigh scattering."
    assert fake.scripts["judge"].cancelled == 1


async def test_cancelling_the_run_cancels_every_upstream_call() -> None:
    fake = factory({"a": 3600.0, "b": 3600.0, "c": 3600.0})
    task = asyncio.create_task(build_graph(fake).ainvoke(ASK, context=ctx(["a", "b", "c"])))
    while len(fake.built) < 3:  # every panelist has its model and is waiting on it
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [fake.scripts[n].cancelled for n in "abc"] == [1, 1, 1]


async def test_progress_events_arrive_in_order() -> None:
    fake = factory({"a": 0.0, "b": 0.0})
    fake.scripts["b"] = Script([RuntimeError("boom")])
    events = [
        chunk["event"]
        async for chunk in build_graph(fake).astream(
            ASK, context=ctx(["a", "b"]), stream_mode="custom"
        )
    ]
    assert events[0] == "run_started"
    assert events.count("panelist_started") == 2
    assert "panelist_finished" in events and "panelist_failed" in events
    assert events[-4:] == [
        "judge_started",
        "judge_finished",
        "synthesis_started",
        "synthesis_finished",
    ]


async def test_cost_is_reported_per_node_from_the_price_table() -> None:
    fake = factory({"a": 0.0})
    prices = {
        "openai:a": {"input": 1.0, "output": 2.0},
        "openai:judge": {"input": 0, "output": 0},
        "openai:synth": {"input": 10.0, "output": 10.0},
    }
    result = await build_graph(fake).ainvoke(ASK, context=ctx(["a"], prices=prices))
    fusion = fusion_of(result)
    usage, cost = fusion["usage"], fusion["cost_usd"]
    expected_panel = (
        usage["panel"]["input_tokens"] * 1 + usage["panel"]["output_tokens"] * 2
    ) / 1e6
    assert cost["panel"] == pytest.approx(expected_panel)
    assert cost["judge"] == 0
    assert cost["total"] == pytest.approx(cost["panel"] + cost["synthesis"])
    assert fusion["panel"][0]["cost_usd"] == pytest.approx(expected_panel)


async def test_unknown_price_gives_unknown_cost_not_a_guess() -> None:
    result = await build_graph(factory({"a": 0.0})).ainvoke(ASK, context=ctx(["a"]))
    assert fusion_of(result)["cost_usd"]["total"] is None


async def test_budget_cap_refuses_an_expensive_plan_before_any_call() -> None:
    fake = factory({"a": 0.0, "b": 0.0})
    prices = {
        "openai:a": {"input": 5, "output": 25},
        "openai:b": {"input": 5, "output": 25},
        "openai:judge": {"input": 5, "output": 25},
        "openai:synth": {"input": 5, "output": 25},
    }
    with pytest.raises(FusionError) as info:
        await build_graph(fake).ainvoke(
            ASK, context=ctx(["a", "b"], prices=prices, max_cost_usd=0.01, tool_mode="agentic")
        )
    assert info.value.reason == "budget_exceeded" and info.value.details["worst_case_usd"] > 0.01
    assert fake.built == []
    # the same plan with a budget above its worst case runs
    result = await build_graph(fake).ainvoke(
        ASK,
        context=ctx(
            ["a", "b"], prices=prices, max_cost_usd=5.0, panel_max_tokens=500, max_tokens=500
        ),
    )
    assert result["messages"][-1].content == "Rayleigh scattering."


async def test_budget_cap_needs_known_prices() -> None:
    with pytest.raises(FusionConfigError) as info:
        await build_graph(factory({"a": 0.0})).ainvoke(ASK, context=ctx(["a"], max_cost_usd=1.0))
    assert info.value.field == "prices"


def test_openrouter_reported_cost_wins_over_the_price_table() -> None:
    from langchain_core.messages import AIMessage

    from fusiongraph.graph.pricing import cost_of
    from fusiongraph.graph.specs import Price
    from fusiongraph.graph.state import usage_of

    message = AIMessage(
        content="x",
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        response_metadata={"token_usage": {"cost": 0.0123}},
    )
    assert cost_of(usage_of(message), Price(input=1, output=1)) == 0.0123
