"""Graceful shutdown: on SIGTERM, let in-flight runs finish within a grace, then cancel them.

uvicorn already stops accepting at SIGTERM and waits for open requests; what it cannot do is
end a fusion run cleanly when the wait is over (it cancels the request task, and the client
sees a dropped connection). A `Drain` learns of the signal by wrapping the handler uvicorn
installed, and when the grace runs out it ends every run it still holds with `ShuttingDown`:
a 503 for a request still waiting, the API's error event for an open stream. Checkpointed runs
keep their finished panelists and resume when the client retries on the same thread.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

from sse_starlette.sse import AppStatus

from fusiongraph.serve.openai_errors import OpenAIError, logger

DEFAULT_GRACE_S = 30.0


class ShuttingDown(OpenAIError):
    """The server is shutting down and its grace ran out before this run finished."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "the server is shutting down; retry the request (with the same X-Fusion-Thread-Id "
            "a checkpointed run resumes where it stopped)",
            code="server_shutting_down",
        )


class Drain:
    """The runs of one app that a shutdown must end, and the clock of its grace."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s
        self.draining = False
        self._expired: asyncio.Event | None = None
        self._aborts: set[Callable[[BaseException], None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def expired(self) -> asyncio.Event:
        if self._expired is None:
            self._expired = asyncio.Event()
        return self._expired

    def hold(self, abort: Callable[[BaseException], None]) -> Callable[[], None]:
        """Register a run's abort; returns the call that releases it when the run ends."""
        if self.expired.is_set():
            abort(ShuttingDown())
            return lambda: None
        self._aborts.add(abort)
        return lambda: self._aborts.discard(abort)

    @property
    def in_flight(self) -> int:
        return len(self._aborts)

    def begin(self) -> None:
        """Start the grace (idempotent): runs that outlive it are ended with ShuttingDown."""
        if self.draining:
            return
        self.draining = True
        logger.info(
            "shutting down: %d run(s) in flight, grace %.1f s", self.in_flight, self.grace_s
        )
        asyncio.get_running_loop().call_later(self.grace_s, self._expire)

    def _expire(self) -> None:
        self.expired.set()
        if self._aborts:
            logger.warning("grace over: cancelling %d run(s)", len(self._aborts))
        for abort in list(self._aborts):
            abort(ShuttingDown())
        self._aborts.clear()

    def watch_signals(self) -> None:
        """Chain onto the SIGTERM/SIGINT handlers uvicorn installed (main thread only; a server
        in a test thread has none), so that a signal also starts the grace."""
        if threading.current_thread() is not threading.main_thread():
            return
        # sse-starlette would end every open stream at the signal; the grace decides instead.
        AppStatus.disable_automatic_graceful_drain()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
                loop.call_soon_threadsafe(self.begin)
                previous(signum, frame)

            signal.signal(sig, handler)


def quiet_exit_after_signal() -> None:
    """uvicorn re-raises the signal it shut down on once it is done; with this handler in place
    beforehand, that re-raise is a no-op and a drained server exits 0 instead of dying of it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
