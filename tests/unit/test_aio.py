"""tools/aio.py: async code from sync callers (also inside a running loop), and Pump."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator

import pytest

from fusiongraph.tools.aio import Pump, call_blocking, iterate, run_coroutine

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("aio_test", default="unset")


async def _where() -> tuple[str, int]:
    return VAR.get(), threading.get_ident()


def test_run_coroutine_without_a_loop_runs_here() -> None:
    token = VAR.set("here")
    try:
        assert run_coroutine(_where()) == ("here", threading.get_ident())
    finally:
        VAR.reset(token)


async def test_run_coroutine_inside_a_loop_uses_a_worker_carrying_the_context() -> None:
    VAR.set("carried")
    value, thread = run_coroutine(_where())
    assert value == "carried" and thread != threading.get_ident()


async def test_call_blocking_runs_in_the_given_context() -> None:
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "isolated")
    assert call_blocking(VAR.get, ctx) == "isolated"
    assert VAR.get() != "isolated"


async def _counting(n: int, log: list[str]) -> AsyncIterator[int]:
    try:
        for i in range(n):
            VAR.set(f"step {i}")  # holds from step to step
            await asyncio.sleep(0)
            yield i
    finally:
        log.append(f"closed after {VAR.get()}")


@pytest.mark.parametrize("in_loop", [False, True])
def test_iterate_drives_steps_and_closes_early(in_loop: bool) -> None:
    log: list[str] = []

    async def after() -> None:
        log.append("before_close")

    def consume() -> list[int]:
        out = []
        for item in iterate(_counting(5, log), before_close=after):
            out.append(item)
            if item == 2:
                break
        return out

    if in_loop:

        async def main() -> list[int]:
            return consume()

        assert asyncio.run(main()) == [0, 1, 2]
    else:
        assert consume() == [0, 1, 2]
    assert log == ["closed after step 2", "before_close"]


def test_iterate_raises_the_iterators_error() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(iterate(failing()))


async def test_pump_reads_to_the_end_and_the_end_stays() -> None:
    log: list[str] = []
    pump = Pump(_counting(3, log))
    assert [i async for i in pump] == [0, 1, 2]
    assert await anext(pump, None) is None


async def test_pump_hands_over_the_error() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("boom")

    async with Pump(failing()) as pump:
        assert await anext(pump) == 1
        with pytest.raises(ValueError, match="boom"):
            await anext(pump)


async def test_leaving_a_pump_cancels_its_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hanging() -> AsyncIterator[int]:
        yield 0
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield 1

    async with Pump(hanging()) as pump:
        assert await anext(pump) == 0
        await started.wait()
    assert cancelled.is_set() and pump.task.cancelled()
