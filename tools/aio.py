"""Async plumbing shared by every layer: async code from sync callers, and runs read from a task.

The nodes, the web tools and the chat model are async (a cancelled run cancels its HTTP calls)
but also serve sync callers, which may themselves run inside an event loop (a notebook, sync code
called from async code). The server and the chat model read a run from a task that owns it, so
cancelling that task cancels the run. One copy of each lives here, in the lowest layer that needs
it (the web tools), so the graph, the chat model and the server import it without reversing the
import direction (serve/chat model -> graph -> nodes -> tools); it imports nothing of fusiongraph.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")

# How long a cancelled run may take to unwind (close its HTTP clients) before we stop waiting.
CANCEL_WAIT_S = 10.0


def loop_running() -> bool:
    """Whether this thread runs an event loop (where asyncio.run refuses to start another)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def call_blocking(fn: Callable[[], T], context: contextvars.Context | None = None) -> T:
    """Call `fn`, which may start an event loop of its own, from sync code.

    It runs in `context` (default: this one), and in a worker thread when this thread already
    runs a loop; the worker gets `context` or a copy of this one, so LangGraph's runtime, stream
    writer and config are still found there.
    """
    if not loop_running():
        return fn() if context is None else context.run(fn)
    ctx = context if context is not None else contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="fusion") as pool:
        return pool.submit(ctx.run, fn).result()


def run_coroutine(coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None) -> T:
    """Run a coroutine to completion from sync code, on a loop of its own (`call_blocking`)."""
    return call_blocking(functools.partial(asyncio.run, coro), context)


async def _next(items: AsyncIterator[T], done: Any) -> T:
    return await anext(items, done)  # asyncio.Runner takes coroutines, not awaitables


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()


def iterate(
    items: AsyncIterator[T],
    context: contextvars.Context | None = None,
    *,
    before_close: Callable[[], Awaitable[None]] | None = None,
) -> Iterator[T]:
    """Drive an async iterator from sync code, one item per step, on a private event loop.

    The loop runs in this thread, or in a worker thread when this thread already runs one. Every
    step runs in `context` (default: a copy of this one), so what the iterator sets there holds
    from step to step. Closing the returned generator closes the iterator (cancelling what it
    runs), then awaits `before_close` (e.g. closing the loop's HTTP clients) and ends the loop.
    """
    ctx = context if context is not None else contextvars.copy_context()
    pool = ThreadPoolExecutor(1, thread_name_prefix="fusion") if loop_running() else None
    runner = asyncio.Runner()

    def step(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if pool is None:
            return fn(*args, **kwargs)
        return pool.submit(fn, *args, **kwargs).result()

    done = object()
    try:
        while (item := step(runner.run, _next(items, done), context=ctx)) is not done:
            yield item
    finally:
        try:
            step(runner.run, _close(items), context=ctx)
            if before_close is not None:
                step(runner.run, before_close(), context=ctx)
        finally:
            step(runner.close)
            if pool is not None:
                pool.shutdown()


async def cancel_and_wait(task: asyncio.Future[Any], timeout: float | None = CANCEL_WAIT_S) -> None:
    """Cancel `task` and wait until it has unwound (its upstream calls closed): shielded from the
    caller's own cancellation, and for at most `timeout` seconds."""
    if task.done():
        return
    task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.wait({task}, timeout=timeout)


class Pump(Generic[T]):
    """An async iterator run to completion in a task of its own, read through a queue.

    The task owns the iterator, so cancelling it (`cancel`, or leaving `async with`) cancels the
    work where it waits (inside LangGraph, which cancels its node tasks) instead of leaving a
    half-consumed generator to the garbage collector. The task runs in `context` (default: a
    copy of this one), which is how the chat model keeps the caller's run config out of its run.
    The iterator's exception, a cancellation included, reaches the reader.
    """

    def __init__(
        self,
        items: AsyncIterator[T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self._queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(items), name=name, context=context)

    async def _pump(self, items: AsyncIterator[T]) -> None:
        try:
            async for item in items:
                self._queue.put_nowait((True, item))
        except BaseException as exc:
            self._queue.put_nowait((False, exc))
            if not isinstance(exc, Exception):  # a cancellation ends the task as cancelled
                raise
        else:
            self._queue.put_nowait((False, None))

    def __aiter__(self) -> Pump[T]:
        return self

    async def __anext__(self) -> T:
        more, item = await self._queue.get()
        if more:
            return item
        self._queue.put_nowait((more, item))  # the end stays the end for every later read
        if item is None:
            raise StopAsyncIteration
        raise item

    def abort(self, exc: BaseException) -> None:
        """End the items for the reader with `exc` (after those already pumped) and cancel the
        work: how a server shutting down ends a run it can no longer wait for."""
        self._queue.put_nowait((False, exc))
        self.task.cancel()

    async def cancel(self, timeout: float | None = CANCEL_WAIT_S) -> None:
        """Cancel the work and wait (shielded, bounded) until its upstream calls are closed."""
        await cancel_and_wait(self.task, timeout)

    async def __aenter__(self) -> Pump[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()
