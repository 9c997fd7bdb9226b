"""Panel requests leave in turn, each as soon as it is built, the slowest-expected first.

A run's panel branches start together on one event loop. Building a model request costs a few
milliseconds of CPU (callbacks, payload, SDK, connection pool) with several awaits on the way.
Left alone, the branches interleave at every await and their requests all leave together, once
the last one is built. Taking turns, the first request leaves after one branch's work, the second
after two: the last leaves about when it did before and every other one earlier, so a slow
panelist starts sooner on average (about 5 ms at N=8; bench/RESULTS.md has the A/B). A turn
ends when the branch's request is handed to the HTTP client (`graph.models.on_request_sent`),
when its call ends, or after `MAX_TURN_S`.
Branches on different loops (sync invocation, one thread each) never wait for each other.

The turns follow the order of the fan-out's `Send`s, and `slowest_first` puts the panelist whose
answers took longest (a smoothed latency per model, remembered by this process) at the front:
the run waits for the slowest panelist, so its request should not be the one that leaves last.
Models not seen yet go first, in the configured order.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from fusiongraph.graph.models import on_request_sent

T = TypeVar("T")

# A safety net: a request is built in a few milliseconds, so a turn never blocks the others long.
MAX_TURN_S = 0.05
SMOOTHING = 0.3  # weight of the newest latency in a model's remembered average
MAX_REMEMBERED = 1024

_latencies: OrderedDict[str, float] = OrderedDict()  # model key -> smoothed seconds
_latencies_lock = threading.Lock()


def remember_latency(model_key: str, seconds: float) -> None:
    """Note how long a panelist's answer took (successful answers only)."""
    with _latencies_lock:
        previous = _latencies.pop(model_key, None)
        smoothed = seconds if previous is None else previous + SMOOTHING * (seconds - previous)
        _latencies[model_key] = smoothed
        if len(_latencies) > MAX_REMEMBERED:
            _latencies.popitem(last=False)


def slowest_first(model_keys: list[str]) -> list[int]:
    """Panel positions in send order: unseen models first (as configured), then the slowest."""
    with _latencies_lock:
        expected = [_latencies.get(key) for key in model_keys]
    return sorted(
        range(len(model_keys)),
        key=lambda i: (expected[i] is not None, -(expected[i] or 0.0)),
    )


class SendOrder:
    """The turn of one run's branches on each event loop."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock

    @asynccontextmanager
    async def turn(self, then: Callable[[], None] | None = None) -> AsyncIterator[None]:
        """Wait for this branch's turn; hold it until its first request leaves, then call
        `then`."""
        lock = self._lock()
        await lock.acquire()
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                timer.cancel()
                lock.release()
                if then is not None:
                    then()

        timer = asyncio.get_running_loop().call_later(MAX_TURN_S, end)
        try:
            with on_request_sent(end):
                yield
        finally:
            end()

    async def run(self, work: Awaitable[T], then: Callable[[], None] | None = None) -> T:
        """Await `work` (a panelist's answer), its first request sent in this branch's turn
        (`then` is called when the turn ends)."""
        async with self.turn(then):
            return await work
