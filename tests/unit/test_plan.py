"""The run's plan is resolved once, by dispatch, and carried in its state and Send payloads:
every node of a run, and of its resume, uses the plan the run started with."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Send

from fusiongraph.graph import config as config_module
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import config_of, plan_of, resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.nodes.scheduling import RunScope
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

BASE = "http://127.0.0.1:9/v1"  # never dialled: the fakes answer


def context(**extra: Any) -> dict[str, Any]:
    return fake_context(["m1", "m2", "m3"], base_url=BASE, **extra)


def scripts(slow_m3: float = 0.0) -> dict[str, Script]:
    out = {f"m{i}": Script([f"Answer {i}."]) for i in (1, 2)}
    out["m3"] = Script(["Answer 3."], delay_s=slow_m3)
    out["judge"] = Script([judge_json(consensus=["they agree"])])
    out["synth"] = Script(["Final answer."])
    return out


def ask() -> dict[str, Any]:
    return {"messages": [HumanMessage(content="Why is the sky blue?")]}


def test_a_plan_reads_back_as_its_config_and_keys_are_checked_on_every_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    config = resolve_config({"preset": "quality", "quorum": 2})
    plan = plan_of(config)
    assert json.loads(json.dumps(plan)) == plan  # plain data: every checkpointer stores it
    restored = config_of(copy.deepcopy(plan))  # as read back from a checkpoint
    assert restored == config
    assert config_of(plan_of(restored)) == config  # the round trip is exact
    monkeypatch.delenv("OPENROUTER_API_KEY")
    with pytest.raises(FusionConfigError, match="OPENROUTER_API_KEY"):
        config_of(plan)


async def test_dispatch_resolves_once_and_every_node_reads_its_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    expand = config_module.expand  # what every resolve_config call runs

    def counting(*args: Any) -> Any:
        calls.append(args)
        return expand(*args)

    monkeypatch.setattr(config_module, "expand", counting)
    read_back: list[Any] = []
    monkeypatch.setattr(
        config_module.FusionConfig, "model_validate", lambda *a, **k: read_back.append(a)
    )
    out = await build_graph(FakeFactory(scripts())).ainvoke(ask(), context=context())
    assert out["messages"][-1].content == "Final answer."
    assert len(calls) == 1
    assert read_back == []  # the live run's nodes use its scope's plan: none reads it back


async def two_panel_answers_saved(
    saver: InMemorySaver, config: dict[str, Any], run: asyncio.Task[Any]
) -> None:
    """Wait until the run (its third panelist held) has saved two panel answers."""
    deadline = time.monotonic() + 30
    while True:
        saved = await saver.aget_tuple(config)
        if saved is not None and sum(1 for w in saved.pending_writes if w[1] == "panel") >= 2:
            return
        assert time.monotonic() < deadline and not run.done()
        await asyncio.sleep(0.02)


async def test_a_resumed_run_uses_the_plan_it_started_with() -> None:
    """Resumed with other settings, the run keeps its own: the stored plan, not the context."""
    saver = InMemorySaver()  # it stores serialised state: the resume reads the plan back
    config = {"configurable": {"thread_id": "t-plan"}}
    first = FakeFactory(scripts(slow_m3=60.0))
    graph = build_graph(first, checkpointer=saver)
    run = asyncio.create_task(graph.ainvoke(ask(), config, context=context(judge_input_chars=4000)))
    await two_panel_answers_saved(saver, config, run)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    second = FakeFactory(scripts())
    graph = build_graph(second, checkpointer=saver)
    other = context(judge_input_chars=500, synthesizer={"model": "other", "base_url": BASE})
    result = await graph.ainvoke(None, config, context=other)
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert fusion["settings"]["judge_input_chars"] == 4000
    assert fusion["synthesizer"]["model"] == "synth"
    assert len(second.scripts["synth"].calls) == 1
    assert [len(second.scripts[m].calls) for m in ("m1", "m2", "m3")] == [0, 0, 1]


MARK = 4321  # this test's judge_input_chars: tells its run's scope from other tests'


def _live_scopes() -> list[RunScope]:
    gc.collect()
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, RunScope) and o.config.judge_input_chars == MARK
    ]


async def test_the_run_scope_is_never_checkpointed_and_goes_with_a_cancelled_run() -> None:
    """The run's scope (plan, start turn, panel clocks) is state of the live run only: a
    checkpoint holds none of it, also not in the panelists' pending Sends, and a cancelled run
    leaves no scope behind: there is nothing to clean up."""
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": "t-scope"}}
    graph = build_graph(FakeFactory(scripts(slow_m3=60.0)), checkpointer=saver)
    run = asyncio.create_task(graph.ainvoke(ask(), config, context=context(judge_input_chars=MARK)))
    await two_panel_answers_saved(saver, config, run)
    assert len(_live_scopes()) == 1  # the run's, shared by its nodes and branches
    stored: list[Any] = []  # as read back: every checkpoint's values and pending writes
    async for saved in saver.alist(config):
        stored += [*saved.checkpoint["channel_values"].values(), *saved.pending_writes]
    assert "RunScope" not in repr(stored)
    sends = [w[2] for w in stored if isinstance(w, tuple) and isinstance(w[2], Send)]
    assert sends and all("run" not in send.arg for send in sends)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    del run  # its traceback holds the frames of the nodes it cancelled
    deadline = time.monotonic() + 10  # the cancelled branches unwind in their own tasks
    while _live_scopes() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _live_scopes() == []
