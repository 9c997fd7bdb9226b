"""Deadlines and quorum for one run's panel.

Each panelist branch runs as its own LangGraph task, so the branches of one run share a
`PanelClock` (looked up by run key). The clock holds a cutoff time: the panel timeout at first
(or the run deadline's panel share when that comes sooner), moved earlier to "now + straggler
grace" once the quorum of successes is in. It remembers which of the three the cutoff is, so a
cut panelist is reported as `timeout`, `deadline` or `straggler`. Every branch waits
for its own work or the cutoff, whichever comes first, and is woken at once when the cutoff moves
(branches may live on different event loops under sync invocation, hence call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import Literal, TypeVar

from fusiongraph.nodes.send_order import SendOrder

T = TypeVar("T")

_CLOCK_TTL_S = 3600.0


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
        self.created = time.monotonic()
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.sends = SendOrder()  # the branches' requests leave in turn (send_order.py)

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


_clocks: dict[str, PanelClock] = {}
_registry_lock = threading.Lock()


def clock_for(
    run_key: str,
    *,
    timeout_s: float,
    quorum: int | None,
    grace_s: float,
    hard_cutoff: float | None = None,
) -> PanelClock:
    """The run's shared clock, created by whichever branch asks first."""
    with _registry_lock:
        clock = _clocks.get(run_key)
        if clock is None:
            now = time.monotonic()
            for key in [k for k, c in _clocks.items() if now - c.created > _CLOCK_TTL_S]:
                del _clocks[key]
            cutoff = now + timeout_s
            cause: CutoffCause = "timeout"
            if hard_cutoff is not None and hard_cutoff < cutoff:
                cutoff, cause = hard_cutoff, "deadline"
            clock = _clocks[run_key] = PanelClock(cutoff, quorum, grace_s, cause)
        return clock


def release_clock(run_key: str) -> None:
    with _registry_lock:
        _clocks.pop(run_key, None)


def run_deadline_cutoff(
    started_at: float | None, deadline_s: float | None, share: float = 1.0
) -> float | None:
    """A monotonic cutoff at `share` of the run's overall deadline (wall-clock `started_at`)."""
    if started_at is None or deadline_s is None:
        return None
    left = started_at + deadline_s * share - time.time()
    return time.monotonic() + left
