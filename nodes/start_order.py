"""Runs on one event loop start in turn: a burst of runs moves as a pipeline, not in lockstep.

Starting a run costs several milliseconds of CPU (plan, models, the panel's first requests)
spread over many awaits. When 100 runs arrive together, asyncio interleaves them at every await,
so every run's panel requests leave only once all 100 have done that work; the panel answers
then all come back together, and each later step waits for all 100 again. The loop idles through
every upstream wait in between. Taking turns, the first run's requests leave after one run's
start and the last's about when they did before; the answers come back spread out, and the loop
works through one run's next step while others wait on their models. Measured with bench item 4
(200 concurrent runs, two workers): bench/RESULTS.md.

A run's turn starts with its dispatch and ends when its first panel request leaves
(nodes/send_order.py), when its panel is done without one (cached answers: the gate node), when
dispatch fails, or after `MAX_TURN_S`, so a turn never holds the others back long (a dispatch
that starts the bundled local model server waits seconds for it: the next run goes on). A single
run never waits. A sync run's nodes each have an event loop of their own: they never wait either.
"""

from __future__ import annotations

import asyncio
import weakref

MAX_TURN_S = 0.1


class StartOrder:
    """The run whose start is under way on one event loop, and the runs waiting for theirs."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, run_key: str) -> None:
        await self._lock.acquire()
        self._holder = run_key
        self._timer = asyncio.get_running_loop().call_later(MAX_TURN_S, self.end, run_key)

    def end(self, run_key: str) -> None:
        """End `run_key`'s turn (nothing when it has none: it ended, or never started here)."""
        if self._holder != run_key:
            return
        self._holder = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lock.release()


_ORDERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StartOrder] = (
    weakref.WeakKeyDictionary()
)


async def take_start_turn(run_key: str) -> None:
    """Wait until no other run of this event loop is starting, then start `run_key`."""
    loop = asyncio.get_running_loop()
    order = _ORDERS.get(loop)
    if order is None:
        order = _ORDERS[loop] = StartOrder()
    await order.take(run_key)


def end_start_turn(run_key: str) -> None:
    """`run_key`'s start is over (its first panel request left, or it needs none)."""
    try:
        order = _ORDERS.get(asyncio.get_running_loop())
    except RuntimeError:  # no loop: a sync caller, which never took a turn
        return
    if order is not None:
        order.end(run_key)
