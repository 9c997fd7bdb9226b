"""/readyz: can this server answer a run right now?

/healthz (and its old name /health) only says the process serves HTTP. Ready means more: every
model name the server offers beside the presets (the default model `fusion` and the operator's
aliases) resolves to a runnable configuration (settings valid, API keys present), the bundled
local model answers when the default model needs it, and the server is not shutting down. A
probe starts nothing: the local model is started by `fusiongraph local start` or by the first
run that needs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.errors import FusionError


def _needs_local(config: Any) -> bool:
    specs = [*config.panel, config.judge, config.synthesizer]
    if config.classifier is not None:
        specs.append(config.classifier)
    return any(spec.provider == "local" for spec in specs)


async def _local_model_up() -> bool:
    from fusiongraph.local_model.launcher import server_status

    status = await asyncio.to_thread(server_status)
    return status.running


async def readiness(
    models: dict[str, dict[str, Any]],
    names: list[str],
    context_schema: type[BaseModel],
    *,
    draining: bool,
) -> tuple[bool, dict[str, Any]]:
    """(ready, the body that says why) for the model names in `names`."""
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
    if needs_local:
        up = await _local_model_up()
        body["local_model"] = "up" if up else "down: run `fusiongraph local start`"
        ready = ready and up
    if draining:
        body["shutting_down"] = True
        ready = False
    body["status"] = "ready" if ready else "not ready"
    return ready, body
