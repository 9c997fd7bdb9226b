"""Durable runs on a checkpointer, and the panel-answer cache, on scripted models.

A run stops after two of three panelists finished (the run is cancelled, or a BaseException
escapes the third branch, as when a process dies); a new graph on a new connection to the same
database, as a restarted process would build, resumes the thread and must not call the two
finished panelists again. The scenario helpers here also run on PostgreSQL
(tests/integration/test_durable_postgres.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.cache.memory import InMemoryCache
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.persistence import (
    PanelAnswerCache,
    has_unfinished_run,
    open_checkpointer,
    open_checkpointer_sync,
    parse_checkpointer_url,
)
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes.panel import panel_cache_key
from tests.support.fakes import FakeFactory, Script, ScriptedChatModel, fake_context, judge_json

BASE = "http://127.0.0.1:9/v1"  # never dialled: the fakes answer


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no node catches it."""


def context(n: int = 3, **extra: Any) -> dict[str, Any]:
    return fake_context([f"m{i}" for i in range(1, n + 1)], base_url=BASE, **extra)


def scripts(n: int = 3, slow: dict[str, float] | None = None) -> dict[str, Script]:
    slow = slow or {}
    out = {
        f"m{i}": Script([f"Answer {i}."], delay_s=slow.get(f"m{i}", 0.0)) for i in range(1, n + 1)
    }
    out["judge"] = Script([judge_json(consensus=["they agree"])])
    out["synth"] = Script(["Final answer."])
    return out


def ask(text: str = "Why is the sky blue?") -> dict[str, Any]:
    return {"messages": [HumanMessage(content=text)]}


def thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}"}}


def calls(*factories: FakeFactory) -> dict[str, int]:
    """Calls per model over every factory (every "process")."""
    total: dict[str, int] = {}
    for factory in factories:
        for name, script in factory.scripts.items():
            total[name] = total.get(name, 0) + len(script.calls)
    return total


def panel_of(result: dict[str, Any]) -> list[str]:
    return sorted(
        p["panelist"] for p in result["messages"][-1].response_metadata["fusion"]["panel"]
    )


async def saved_panel_writes(saver: BaseCheckpointSaver, config: dict[str, Any]) -> int:
    saved = await saver.aget_tuple(config)
    return 0 if saved is None else sum(1 for w in saved.pending_writes if w[1] == "panel")


def saved_panel_writes_sync(url: str, config: dict[str, Any]) -> int:
    with open_checkpointer_sync(url) as saver:
        assert saver is not None
        saved = saver.get_tuple(config)
    return 0 if saved is None else sum(1 for w in saved.pending_writes if w[1] == "panel")


# --- scenarios (also run on PostgreSQL) -----------------------------------------------------


async def cancel_and_resume(url: str) -> None:
    """Async: cancel the run once p1 and p2 are saved; resume in a "new process"."""
    config = thread()
    first = FakeFactory(scripts(slow={"m3": 60.0}))  # m3 hangs until the run is cancelled
    async with open_checkpointer(url) as saver:
        graph = build_graph(first, checkpointer=saver)
        run = asyncio.create_task(graph.ainvoke(ask(), config, context=context()))
        deadline = time.monotonic() + 30
        while await saved_panel_writes(saver, config) < 2:
            assert time.monotonic() < deadline, "p1 and p2 were never saved"
            assert not run.done(), run
            await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert first.scripts["m3"].cancelled == 1
    assert calls(first) == {"m1": 1, "m2": 1, "m3": 0, "judge": 0, "synth": 0}

    second = FakeFactory(scripts())
    async with open_checkpointer(url) as saver:
        graph = build_graph(second, checkpointer=saver)
        assert await has_unfinished_run(graph, config)
        assert (await graph.aget_state(config)).next == ("panelist",)
        result = await graph.ainvoke(None, config, context=context())
        assert not await has_unfinished_run(graph, config)
    assert result["messages"][-1].content == "Final answer."
    assert panel_of(result) == ["p1", "p2", "p3"]
    assert calls(first, second) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}

    # A second turn on the same thread is a new run: a fresh panel, everyone asked again.
    third = FakeFactory(scripts())
    async with open_checkpointer(url) as saver:
        graph = build_graph(third, checkpointer=saver)
        assert not await has_unfinished_run(graph, config)
        result = await graph.ainvoke(ask("And at sunset?"), config, context=context())
    assert calls(third) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}
    assert panel_of(result) == ["p1", "p2", "p3"]
    assert [type(m) for m in result["messages"]] == [HumanMessage, AIMessage] * 2
    asked = third.scripts["m1"].calls[0]
    assert [m.content for m in asked[1:]] == [
        "Why is the sky blue?",
        "Final answer.",
        "And at sunset?",
    ]


class CrashingFactory(FakeFactory):
    """m3's call dies (DyingModel) once p1 and p2 are saved."""

    def __init__(self, url: str, config: dict[str, Any]) -> None:
        super().__init__(scripts())
        self.url, self.config = url, config

    def __call__(self, spec: ModelSpec) -> Any:
        if spec.model == "m3":
            return DyingModel(script=self.scripts["m3"], wait=self.saved)
        return super().__call__(spec)

    async def saved(self) -> None:
        deadline = time.monotonic() + 30
        while saved_panel_writes_sync(self.url, self.config) < 2:
            assert time.monotonic() < deadline, "p1 and p2 were never saved"
            await asyncio.sleep(0.02)


def crash_and_resume_sync(url: str) -> None:
    """Sync `invoke` on a sync saver: a BaseException escapes p3; resume with a new saver."""
    config = thread()
    first = CrashingFactory(url, config)
    with open_checkpointer_sync(url) as saver:
        graph = build_graph(first, checkpointer=saver)
        with pytest.raises(Crash):
            graph.invoke(ask(), config, context=context())
    assert calls(first) == {"m1": 1, "m2": 1, "m3": 0, "judge": 0, "synth": 0}

    second = FakeFactory(scripts())
    with open_checkpointer_sync(url) as saver:
        graph = build_graph(second, checkpointer=saver)
        assert graph.get_state(config).next == ("panelist",)
        result = graph.invoke(None, config, context=context())
    assert result["messages"][-1].content == "Final answer."
    assert panel_of(result) == ["p1", "p2", "p3"]
    assert calls(first, second) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}


class DyingModel(ScriptedChatModel):
    """m3 in a dying process: once p1 and p2 are saved, a BaseException escapes its call."""

    wait: Any = None

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        await self.wait()
        raise Crash("the process died")


async def crash_and_resume_async(url: str) -> None:
    """Async: a BaseException escapes p3 after p1 and p2 finished; resume in a "new process"."""
    config = thread()
    first = FakeFactory(scripts())
    async with open_checkpointer(url) as saver:
        assert saver is not None

        async def saved() -> None:
            deadline = time.monotonic() + 30
            while await saved_panel_writes(saver, config) < 2:
                assert time.monotonic() < deadline, "p1 and p2 were never saved"
                await asyncio.sleep(0.02)

        def factory(spec: ModelSpec) -> Any:
            if spec.model == "m3":
                return DyingModel(script=first.scripts["m3"], wait=saved)
            return first(spec)

        graph = build_graph(factory, checkpointer=saver)
        with pytest.raises(Crash):
            await graph.ainvoke(ask(), config, context=context())
    assert calls(first) == {"m1": 1, "m2": 1, "m3": 0, "judge": 0, "synth": 0}

    second = FakeFactory(scripts())
    async with open_checkpointer(url) as saver:
        graph = build_graph(second, checkpointer=saver)
        result = await graph.ainvoke(None, config, context=context())
    assert result["messages"][-1].content == "Final answer."
    assert panel_of(result) == ["p1", "p2", "p3"]
    assert calls(first, second) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}


async def write_in_flight_lands(url: str) -> None:
    """A checkpoint write still in flight at close (a cancelled run leaves one) is not lost, and
    the database takes writes afterwards. On SQLite, closing under it used to keep the write
    lock for the rest of the process: the resumed run failed with "database is locked"."""
    config = {"configurable": {**thread()["configurable"], "checkpoint_ns": ""}}
    async with open_checkpointer(url) as saver:
        assert saver is not None
        saved = await saver.aput(config, empty_checkpoint(), {}, {})
        await saver.lock.acquire()  # the write queues behind a statement in progress
        write = asyncio.create_task(saver.aput_writes(saved, [("panel", ["p1"])], "task-1"))
        await asyncio.sleep(0.05)
        saver.lock.release()
    assert write.done() and write.exception() is None
    async with open_checkpointer(url) as saver:
        assert saver is not None
        async with asyncio.timeout(3):  # SQLite waits 5 s on a lock before it gives up
            await saver.aput_writes(saved, [("panel", ["p2"])], "task-2")
        assert await saved_panel_writes(saver, config) == 2


# --- tests ----------------------------------------------------------------------------------


async def test_cancelled_run_resumes_without_calling_finished_panelists(tmp_path: Path) -> None:
    await cancel_and_resume(f"sqlite:///{tmp_path / 'runs.db'}")


def test_crashed_sync_run_resumes_without_calling_finished_panelists(tmp_path: Path) -> None:
    crash_and_resume_sync(str(tmp_path / "runs.sqlite"))


async def test_crash_in_async_run_also_resumes(tmp_path: Path) -> None:
    await crash_and_resume_async(f"sqlite:///{tmp_path / 'runs.db'}")


async def test_sqlite_keeps_the_writes_a_cancelled_run_left_in_flight(tmp_path: Path) -> None:
    await write_in_flight_lands(f"sqlite:///{tmp_path / 'runs.db'}")


async def test_memory_checkpointer_keeps_threads_within_the_process() -> None:
    factory = FakeFactory(scripts())
    config = thread()
    async with open_checkpointer("memory") as saver:
        graph = build_graph(factory, checkpointer=saver)
        await graph.ainvoke(ask(), config, context=context())
        result = await graph.ainvoke(ask("And at sunset?"), config, context=context())
    assert len(result["messages"]) == 4
    assert calls(factory)["m1"] == 2


async def test_no_checkpointer_is_none_and_no_unfinished_run() -> None:
    async with open_checkpointer(None) as saver:
        assert saver is None
        graph = build_graph(FakeFactory(scripts()), checkpointer=saver)
        assert not await has_unfinished_run(graph, thread())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, ("none", "")),
        ("", ("none", "")),
        ("memory", ("memory", "")),
        ("sqlite:///runs.db", ("sqlite", "runs.db")),
        ("sqlite:////var/lib/fusion/runs.db", ("sqlite", "/var/lib/fusion/runs.db")),
        ("./state/runs.sqlite", ("sqlite", "./state/runs.sqlite")),
        ("postgresql://u:p@127.0.0.1:5432/db", ("postgres", "postgresql://u:p@127.0.0.1:5432/db")),
        ("postgres://u@db/x", ("postgres", "postgres://u@db/x")),
    ],
)
def test_checkpointer_urls(url: str | None, expected: tuple[str, str]) -> None:
    assert parse_checkpointer_url(url) == expected


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0", "runs.txt", "mysql://x/y", "sqlite://"])
def test_unknown_checkpointer_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match="checkpointer"):
        parse_checkpointer_url(url)


def test_sqlite_checkpointer_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "runs.db"
    with open_checkpointer_sync(f"sqlite:///{path}") as saver:
        assert saver is not None
    assert path.exists()


# --- panel-answer cache ---------------------------------------------------------------------


def fusion_of(result: dict[str, Any]) -> dict[str, Any]:
    return result["messages"][-1].response_metadata["fusion"]


async def test_cache_is_off_by_default() -> None:
    factory = FakeFactory(scripts())
    graph = build_graph(factory)
    for _ in range(2):
        await graph.ainvoke(ask(), context=context())
    assert calls(factory)["m1"] == 2


async def test_identical_request_is_answered_from_the_cache() -> None:
    factory = FakeFactory(scripts())
    graph = build_graph(factory, cache=True)
    first = await graph.ainvoke(ask(), context=context())
    again = await graph.ainvoke(ask(), context=context())
    counts = calls(factory)
    assert (counts["m1"], counts["m2"], counts["m3"]) == (1, 1, 1)
    assert (counts["judge"], counts["synth"]) == (2, 2)  # only the panel is cached
    cached = {p["panelist"]: p for p in fusion_of(again)["panel"]}
    fresh = {p["panelist"]: p for p in fusion_of(first)["panel"]}
    assert sorted(cached) == ["p1", "p2", "p3"]
    for pid, entry in cached.items():
        assert entry["content"] == fresh[pid]["content"]
        assert entry["usage"]["total_tokens"] == 0  # not paid for twice
        assert entry["cached"] is True and fresh[pid]["cached"] is False
    assert fusion_of(again)["usage"]["panel"]["total_tokens"] == 0
    assert fusion_of(first)["usage"]["panel"]["total_tokens"] > 0

    await graph.ainvoke(ask("A different question?"), context=context())
    assert calls(factory)["m1"] == 2


async def test_cache_key_covers_spec_and_tool_settings() -> None:
    factory = FakeFactory(scripts())
    graph = build_graph(factory, cache=True)
    await graph.ainvoke(ask(), context=context())
    hotter = context()
    hotter["panel"][0] = {**hotter["panel"][0], "temperature": 1.2}
    await graph.ainvoke(ask(), context=hotter)
    assert [calls(factory)[m] for m in ("m1", "m2", "m3")] == [2, 1, 1]
    await graph.ainvoke(ask(), context=context(panel_max_tokens=50))
    assert [calls(factory)[m] for m in ("m1", "m2", "m3")] == [3, 2, 2]


async def test_failed_panel_answers_are_not_cached() -> None:
    factory = FakeFactory(scripts())
    factory.scripts["m2"] = Script([RuntimeError("upstream 503"), "Answer 2."])
    graph = build_graph(factory, cache=True)
    first = await graph.ainvoke(ask(), context=context())
    assert [f["panelist"] for f in fusion_of(first)["failed_models"]] == ["p2"]
    second = await graph.ainvoke(ask(), context=context())
    assert fusion_of(second)["failed_models"] == []
    assert [calls(factory)[m] for m in ("m1", "m2", "m3")] == [1, 2, 1]


def test_cache_works_under_sync_invoke_and_with_a_given_cache() -> None:
    factory = FakeFactory(scripts())
    shared = InMemoryCache()
    for _ in range(2):  # two graphs (two servers) sharing one cache
        build_graph(factory, cache=shared).invoke(ask(), context=context())
    assert calls(factory)["m1"] == 1


async def test_cache_with_checkpointer_across_threads(tmp_path: Path) -> None:
    factory = FakeFactory(scripts())
    async with open_checkpointer(f"sqlite:///{tmp_path / 'runs.db'}") as saver:
        graph = build_graph(factory, checkpointer=saver, cache=True)
        await graph.ainvoke(ask(), thread(), context=context())
        result = await graph.ainvoke(ask(), thread(), context=context())
    assert panel_of(result) == ["p1", "p2", "p3"]
    assert calls(factory)["m1"] == 1


def test_panel_cache_key_ignores_run_identity_and_message_ids() -> None:
    base = {
        "panelist": "p1",
        "index": 0,
        "spec": {"model": "m1"},
        "tools": {"mode": "off"},
    }
    a = {**base, "run_key": "a", "started_at": 1.0, "messages": [HumanMessage("q", id="1")]}
    b = {**base, "run_key": "b", "started_at": 2.0, "messages": [HumanMessage("q", id="2")]}
    c = {**b, "panelist": "p2"}
    d = {**b, "messages": [HumanMessage("other", id="2")]}
    assert panel_cache_key(a) == panel_cache_key(b)  # type: ignore[arg-type]
    assert panel_cache_key(b) != panel_cache_key(c)  # type: ignore[arg-type]
    assert panel_cache_key(b) != panel_cache_key(d)  # type: ignore[arg-type]


def test_build_graph_rejects_a_bad_cache() -> None:
    with pytest.raises(TypeError, match="cache"):
        build_graph(FakeFactory(scripts()), cache="yes")  # type: ignore[arg-type]
    assert isinstance(build_graph(FakeFactory(scripts()), cache=True).cache, PanelAnswerCache)


async def test_unreachable_postgres_fails_at_once_with_the_reason() -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="refused"):
        async with open_checkpointer("postgresql://u:p@127.0.0.1:1/db"):
            pytest.fail("a checkpointer opened on a port where nothing listens")
