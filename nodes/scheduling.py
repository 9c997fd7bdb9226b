"""How one run's work is scheduled, and the `RunScope` that holds it for the run.

A run coordinates three things while it runs, each explained at its class below:

- its start turn (`StartOrder`): runs on one event loop start in turn, so a burst of runs moves
  as a pipeline, not in lockstep;
- its panel clocks (`PanelClock`): the deadlines and quorum every panelist branch of a wave
  shares;
- its send order (`SendOrder`): the branches' first requests leave in turn, slowest-expected
  first.

All of it lives in the run's `RunScope`, which dispatch creates with the run's resolved plan. The
scope travels in the graph's state (`FusionState.run`) and in each panelist's Send payload as an
untracked value: LangGraph never checkpoints it, and it goes when the run ends, finished or
cancelled, with nothing to clean up. A run resumed from a checkpoint has no scope yet: its nodes
make one from the plan in the state (`scope_of`).

Two things outlive a run, on purpose: the start order of each event loop (the turns are taken
between the runs of that loop) and the panel latencies each model showed (`PANEL_LATENCIES`,
which order the sends of later runs).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

from fusiongraph.graph.config import FusionConfig, config_of
from fusiongraph.graph.models import on_request_sent

T = TypeVar("T")

# --- start turns -----------------------------------------------------------------------------
#
# Starting a run costs several milliseconds of CPU (plan, models, the panel's first requests)
# spread over many awaits. When many runs arrive together, asyncio interleaves them at every
# await, so every run's panel requests leave only once all of them have done that work; the
# answers then come back together, and each later step waits for all of them again. Taking
# turns, the first run's requests leave after one run's start and the last's about when they
# did before; the answers come back spread out, and the loop works through one run's next step
# while others wait on their models (bench item 4 measures it: bench/RESULTS.md).
#
# A run's turn starts with its dispatch and ends when its first panel request leaves, when its
# panel is done without one (cached answers: the gate), when dispatch fails, or after
# START_TURN_MAX_S, so a turn never holds the others back long (a dispatch that starts the
# bundled local model server waits for it: the next run goes on). A single run never waits. A
# sync run's nodes each have an event loop of their own: they never wait either.

START_TURN_MAX_S = 0.1


class StartOrder:
    """The run whose start is under way on one event loop, and the runs waiting for theirs."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: object | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, holder: object) -> None:
        await self._lock.acquire()
        self._holder = holder
        self._timer = asyncio.get_running_loop().call_later(START_TURN_MAX_S, self.end, holder)

    def end(self, holder: object) -> None:
        """End `holder`'s turn (nothing when it has none: it ended, or never started here)."""
        if self._holder is not holder:
            return
        self._holder = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lock.release()


# One start order per event loop, shared by the runs on it (the turns are between them), and
# dropped with its loop.
_START_ORDERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StartOrder] = (
    weakref.WeakKeyDictionary()
)


class StartTurn:
    """One run's turn to start on the event loop of its dispatch."""

    def __init__(self, order: StartOrder, loop: asyncio.AbstractEventLoop) -> None:
        self._order = order
        self._loop = loop

    def end(self) -> None:
        """End the turn: once, and only from its own loop (a sync run's later nodes run on other
        loops; the turn's timer ends it there)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # no loop: a sync caller
            return
        if running is self._loop:
            self._order.end(self)


async def take_start_turn() -> StartTurn:
    """Wait until no other run of this event loop is starting; the turn is the caller's."""
    loop = asyncio.get_running_loop()
    order = _START_ORDERS.get(loop)
    if order is None:
        order = _START_ORDERS[loop] = StartOrder()
    turn = StartTurn(order, loop)
    await order.take(turn)
    return turn


# --- send order -------------------------------------------------------------------------------
#
# A run's panel branches start together on one event loop. Building a model request costs a few
# milliseconds of CPU (callbacks, payload, SDK, connection pool) with several awaits on the way.
# Left alone, the branches interleave at every await and their requests all leave together, once
# the last one is built. Taking turns, the first request leaves after one branch's work, the
# second after two: the last leaves about when it did before and every other one earlier, so a
# slow panelist starts sooner on average (bench/RESULTS.md has the A/B). A turn ends when the
# branch's request is handed to the HTTP client (`graph.models.on_request_sent`), when its call
# ends, or after SEND_TURN_MAX_S. Branches on different loops (sync invocation, one thread each)
# never wait for each other.
#
# The turns follow the order of the fan-out's `Send`s, and `slowest_first` puts the panelist
# whose answers took longest at the front: the run waits for the slowest panelist, so its
# request should not be the one that leaves last. Models not seen yet go first, as configured.

# A safety net: a request is built in a few milliseconds, so a turn never blocks the others long.
SEND_TURN_MAX_S = 0.05


class LatencyCache:
    """A smoothed answer latency per model, remembered across runs: a bounded LRU cache.

    Process-wide on purpose: it is what one run learns for the next ones (which panelist to send
    first). Each worker process learns its own; a model it has not seen is sent first, so a
    cold or evicted entry only loses the ordering hint. Thread-safe: sync runs record from
    several threads.
    """

    SMOOTHING = 0.3  # weight of the newest latency in a model's remembered average

    def __init__(self, max_models: int = 1024) -> None:
        self.max_models = max_models
        self._seconds: OrderedDict[str, float] = OrderedDict()  # model key -> smoothed seconds
        self._lock = threading.Lock()

    def remember(self, model_key: str, seconds: float) -> None:
        """Note how long a panelist's answer took (successful answers only)."""
        with self._lock:
            previous = self._seconds.pop(model_key, None)
            smoothed = (
                seconds if previous is None else previous + self.SMOOTHING * (seconds - previous)
            )
            self._seconds[model_key] = smoothed
            if len(self._seconds) > self.max_models:
                self._seconds.popitem(last=False)

    def slowest_first(self, model_keys: list[str]) -> list[int]:
        """Panel positions in send order: unseen models first (as configured), then the
        slowest."""
        with self._lock:
            expected = [self._seconds.get(key) for key in model_keys]
        return sorted(
            range(len(model_keys)),
            key=lambda i: (expected[i] is not None, -(expected[i] or 0.0)),
        )

    def clear(self) -> None:
        with self._lock:
            self._seconds.clear()


PANEL_LATENCIES = LatencyCache()


class SendOrder:
    """The turn of one wave's branches on each event loop."""

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

        timer = asyncio.get_running_loop().call_later(SEND_TURN_MAX_S, end)
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


# --- panel clocks -----------------------------------------------------------------------------
#
# Each panelist branch runs as its own LangGraph task, so the branches of one wave share a
# `PanelClock` (the run's scope holds it). The clock holds a cutoff time: the panel timeout at
# first (or the run deadline's panel share when that comes sooner), moved earlier to "now +
# straggler grace" once the quorum of successes is in. It remembers which of the three the
# cutoff is, so a cut panelist is reported as `timeout`, `deadline` or `straggler`. Every branch
# waits for its own work or the cutoff, whichever comes first, and is woken at once when the
# cutoff moves (branches may live on different event loops under sync invocation, hence
# call_soon_threadsafe).

# Why the cutoff holds: the panel timeout, the run deadline's panel share, or the quorum's grace.
CutoffCause = Literal["timeout", "deadline", "straggler"]

_CUT_MESSAGES: dict[CutoffCause, str] = {
    "timeout": "cut off at the panel timeout (panel_timeout_s)",
    "deadline": "cut off at the panel's share of the run deadline (deadline_s)",
    "straggler": "cut off: the quorum was in and the straggler grace ran out",
}


class PanelDeadline(Exception):
    """The panelist was cut off; `reason` says by which cutoff (the failure reason it reports)."""

    def __init__(self, reason: CutoffCause) -> None:
        super().__init__(_CUT_MESSAGES[reason])
        self.reason: CutoffCause = reason


class PanelClock:
    def __init__(
        self,
        cutoff: float,
        quorum: int | None,
        grace_s: float,
        cause: CutoffCause = "timeout",
    ) -> None:
        self.cutoff = cutoff  # time.monotonic() value
        self.cause: CutoffCause = cause  # why `cutoff` holds; changed with it, under the lock
        self.quorum = quorum
        self.grace_s = grace_s
        self.successes = 0
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.sends = SendOrder()  # the wave's requests leave in turn

    @classmethod
    def starting_now(
        cls,
        *,
        timeout_s: float,
        quorum: int | None,
        grace_s: float,
        hard_cutoff: float | None = None,
    ) -> PanelClock:
        """A clock whose cutoff is the panel timeout from now, or `hard_cutoff` if sooner."""
        cutoff = time.monotonic() + timeout_s
        cause: CutoffCause = "timeout"
        if hard_cutoff is not None and hard_cutoff < cutoff:
            cutoff, cause = hard_cutoff, "deadline"
        return cls(cutoff, quorum, grace_s, cause)

    def remaining(self) -> float:
        return self.cutoff - time.monotonic()

    def record_success(self) -> None:
        with self._lock:
            self.successes += 1
            if self.quorum is None or self.successes < self.quorum:
                return
            new_cutoff = time.monotonic() + self.grace_s
            if new_cutoff >= self.cutoff:
                return
            self.cutoff, self.cause = new_cutoff, "straggler"
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` until the cutoff; on cutoff cancel it (closing its HTTP calls)."""
        task = asyncio.ensure_future(work)
        event = asyncio.Event()
        waiter_key = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(waiter_key)
        try:
            while True:
                with self._lock:  # the cutoff and its cause, as one
                    remaining, cause = self.remaining(), self.cause
                if remaining <= 0:
                    raise PanelDeadline(cause)
                wake = asyncio.ensure_future(event.wait())
                try:
                    done, _ = await asyncio.wait(
                        {task, wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    wake.cancel()
                if task in done:
                    return task.result()
                event.clear()
        finally:
            with self._lock:
                self._waiters.discard(waiter_key)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def run_deadline_cutoff(
    started_at: float | None, deadline_s: float | None, share: float = 1.0
) -> float | None:
    """A monotonic cutoff at `share` of the run's overall deadline (wall-clock `started_at`)."""
    if started_at is None or deadline_s is None:
        return None
    left = started_at + deadline_s * share - time.time()
    return time.monotonic() + left


# --- the run's scope --------------------------------------------------------------------------

# The panel waves that have a clock each: all of the panel, or a cascade's first panelists, then
# the cascade's rest.
Wave = Literal["first", "rest"]


class RunScope:
    """What one run coordinates while it runs: its plan, its start turn and its panel clocks.

    Dispatch creates it; it reaches the other nodes through the graph's state and the panelists
    through their Send payloads, and is dropped with the run. Thread-safe: a sync run's branches
    run on threads of their own.
    """

    def __init__(self, config: FusionConfig, start_turn: StartTurn | None = None) -> None:
        self.config = config  # the run's plan, resolved and validated once (by dispatch)
        self.start_turn = start_turn
        self._clocks: dict[Wave, PanelClock] = {}
        self._lock = threading.Lock()

    def end_start_turn(self) -> None:
        """The run's start is over (its first panel request left, or it needs none)."""
        if self.start_turn is not None:
            self.start_turn.end()

    def panel_clock(self, wave: Wave, start: Callable[[], PanelClock]) -> PanelClock:
        """The clock the branches of `wave` share, started by whichever branch asks first."""
        with self._lock:
            clock = self._clocks.get(wave)
            if clock is None:
                clock = self._clocks[wave] = start()
            return clock


def scope_of(state: Mapping[str, Any]) -> RunScope:
    """The run's scope, from the state or a panelist's payload; a resumed run (whose scope was
    never checkpointed) gets a new one, its plan read back from the state."""
    scope = state.get("run")
    if isinstance(scope, RunScope):
        return scope
    return RunScope(config_of(state["plan"]))
