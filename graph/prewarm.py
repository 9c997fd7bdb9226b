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

import importlib
import logging
import os
import threading

logger = logging.getLogger(__name__)

PREWARM_ENV = "FUSIONGRAPH_PREWARM"  # "0": never (a process that builds a graph it won't run)
WAIT_S = 60.0  # bounds the wait of a run on a stuck import (an import never takes this long)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_client_prewarm() -> None:
    """Start loading the client stack in the background (once per process; returns at once)."""
    global _thread
    if os.environ.get(PREWARM_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_prewarm, name="fusion-prewarm", daemon=True)
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


def _prewarm() -> None:
    try:
        # The modules a default model's first build imports (graph/models.py `_build_model`).
        chat_openai = importlib.import_module("langchain_openai").ChatOpenAI
        compat_openai = importlib.import_module("fusiongraph.graph.compat_openai")
        models = importlib.import_module("fusiongraph.graph.models")
        models._tls_context()  # the CA bundle, shared by every client
        models.sync_http_client()
        models.warm_client_stack()  # anyio's backend, the SDK's response types
        # One throwaway model (no request is made) builds ChatOpenAI's validators and the SDK
        # client classes the first real build would build.
        model = chat_openai(
            model="prewarm",
            api_key="prewarm",
            base_url="http://127.0.0.1:9/v1",
            http_client=models.sync_http_client(),
            http_async_client=models._http_client(models.DEFAULT_CALL_TIMEOUT_S),
        )
        compat_openai.send_directly(model)
    except Exception:  # the run repeats the failing step and reports it there
        logger.debug("client prewarm failed", exc_info=True)
