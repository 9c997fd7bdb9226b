"""Cold start: the model client stack is loaded in a background thread when a graph is built.

Why: a process's first run used to pay, inside dispatch and before any panelist's request left,
for importing langchain-openai and the openai SDK, loading the CA bundle and building the SDK's
pydantic types — about 0.4 s on this machine, all of it on the run's critical path. None of it
depends on the run, so `build_graph()` (with the default model factory) starts it in a daemon
thread and returns at once: importing the public API stays light (nothing here runs at import),
and whatever the process does between building the graph and its first run (parsing the CLI,
opening a checkpointer, starting the server) overlaps with it. The model factory's `prepare`
waits for the thread, off the event loop, so a first run that comes sooner only finishes it.

The work runs once per process. A failure here is ignored: the same import or build, repeated by
the run, raises it where it can be reported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

PREWARM_ENV = "FUSIONGRAPH_PREWARM"  # "0": never (a process that builds a graph it won't run)
WAIT_S = 60.0  # bounds the wait of a run on a stuck import (an import never takes this long)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_client_prewarm(work: Callable[[], None]) -> None:
    """Start `work`, loading the client stack (the model factory's `prewarm_clients`), in the
    background: once per process; returns at once."""
    global _thread
    if os.environ.get(PREWARM_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return
    with _lock:
        if _thread is None:
            _thread = threading.Thread(
                target=_prewarm, args=(work,), name="fusion-prewarm", daemon=True
            )
            _thread.start()


def prewarm_pending() -> bool:
    """Whether the background load was started and has not finished yet."""
    thread = _thread
    return thread is not None and thread.is_alive()


def wait_client_prewarm(timeout_s: float = WAIT_S) -> None:
    """Block until the background load is done (at once when it was never started)."""
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout_s)


def _prewarm(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # the run repeats the failing step and reports it there
        logger.debug("client prewarm failed", exc_info=True)
