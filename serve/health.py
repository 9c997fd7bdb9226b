"""/readyz: can this server answer a run right now?

/healthz (and its old name /health) only says the process serves HTTP. Ready means more: every
model name the server offers beside the presets (the default model `fusion` and the operator's
aliases) resolves to a runnable configuration (settings valid, API keys present), the bundled
local model answers when the default model needs it, and the server is not shutting down.

Ready must be able to become true on its own: a load balancer that waits for it sends no run, so
nothing that starts "on the first run" would ever start. `fusiongraph serve` therefore starts the
local model its default model needs at boot, in the background (`LocalModelStarter`), and /readyz
says "starting local model" (503) until it answers, then 200. If it stops later, the next probe
starts it again; a start that failed is retried after RETRY_AFTER_S, and a missing `local` extra
is reported as such. An app built without a starter (`create_app` embedded elsewhere) keeps
probes free of side effects: the local model is then started by `fusiongraph local start` or by
the first run that needs it, and /readyz says so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionError

logger = logging.getLogger("fusiongraph.serve")

# How long after a failed start the next probe may try again (a server that crashes while
# loading would otherwise be respawned by every probe).
RETRY_AFTER_S = 30.0
STARTING = "starting local model"
DOWN = "down: run `fusiongraph local start` (or the first run that needs it starts it)"


def _needs_local(config: Any) -> bool:
    specs = [*config.panel, config.judge, config.synthesizer]
    if config.classifier is not None:
        specs.append(config.classifier)
    return any(spec.provider == "local" for spec in specs)


async def _local_model_up() -> bool:
    from fusiongraph.local_model.launcher import server_status

    status = await asyncio.to_thread(server_status)
    return status.running


class LocalModelStarter:
    """Starts the bundled local model in the background and tells readiness how far it got.

    The start runs in a daemon thread (loading the model takes seconds, and a server shutting
    down must not wait for it); the launcher's file lock makes the workers of one server, and any
    other process, start one model server between them (local_model/launcher.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._permanent = False  # the `local` extra is missing: retrying cannot help
        self._failed_at = 0.0

    def start(self) -> None:
        """Start the local model unless a start is under way (or failed moments ago)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._error is not None and (
                self._permanent or time.monotonic() - self._failed_at < RETRY_AFTER_S
            ):
                return
            self._thread = threading.Thread(
                target=self._run, name="fusiongraph-local-model-start", daemon=True
            )
            self._thread.start()

    @property
    def starting(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def failure(self) -> tuple[str | None, bool]:
        """The last start's error (None: it did not fail) and whether retrying can help."""
        with self._lock:
            return self._error, not self._permanent

    def _run(self) -> None:
        from fusiongraph.local_model.launcher import ensure_local_server, missing_packages
        from fusiongraph.local_model.settings import INSTALL_HINT

        logger.info("starting the local model in the background (the default model needs it)")
        try:
            url = ensure_local_server()
        except Exception as exc:  # the thread's boundary: whatever it was, readiness says it
            permanent = bool(missing_packages())
            message = f"not installed: {INSTALL_HINT}" if permanent else f"failed to start: {exc}"
            logger.warning("local model: %s", message)
            with self._lock:
                self._error, self._permanent = message, permanent
                self._failed_at = time.monotonic()
            return
        logger.info("local model up at %s", url)
        with self._lock:
            self._error, self._permanent = None, False

    async def state(self) -> tuple[bool, str]:
        """(up, what /readyz says about it); starts the model when it is down."""
        if not self.starting and await _local_model_up():
            return True, "up"
        self.start()
        if self.starting:
            return False, STARTING
        error, retried = self.failure()
        if error is None:  # the start just finished: look once more
            return (True, "up") if await _local_model_up() else (False, STARTING)
        return False, f"{error} (retrying)" if retried else error


async def readiness(
    models: dict[str, dict[str, Any]],
    names: list[str],
    context_schema: type[FusionContext],
    *,
    draining: bool,
    starter: LocalModelStarter | None = None,
) -> tuple[bool, dict[str, Any]]:
    """(ready, the body that says why) for the model names in `names`; with `starter`, the
    local model the default model needs is started rather than waited for."""
    checks: dict[str, Any] = {}
    needs_local = False
    for name in names:
        try:
            config = resolve_config(context_schema(**models[name]))
        except FusionError as exc:
            checks[name] = {"ok": False, "error": exc.message}
            continue
        checks[name] = {"ok": True}
        needs_local = needs_local or (name == names[0] and _needs_local(config))
    body: dict[str, Any] = {"models": checks}
    ready = all(check["ok"] for check in checks.values())
    starting = False
    if needs_local:
        if starter is not None and not draining:  # a server shutting down starts nothing
            up, said = await starter.state()
            starting = said == STARTING
        else:
            up = await _local_model_up()
            said = "up" if up else DOWN
        body["local_model"] = said
        ready = ready and up
    if draining:
        body["shutting_down"] = True
        ready = False
    body["status"] = "ready" if ready else ("starting" if starting else "not ready")
    return ready, body


def needs_local_model(
    models: dict[str, dict[str, Any]], name: str, context_schema: type[FusionContext]
) -> bool:
    """Whether model `name` runs on the bundled local model (False when it does not resolve)."""
    try:
        return _needs_local(resolve_config(context_schema(**models[name])))
    except FusionError:
        return False
