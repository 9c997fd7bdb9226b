"""The dispatch node: validates the run before any model is called, then fans out with Send."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.runtime import get_runtime
from langgraph.types import Send

from fusiongraph.graph.config import FusionConfig, FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.pricing import worst_case_cost
from fusiongraph.graph.state import FusionState, PanelTask
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.send_order import slowest_first


async def dispatch(state: FusionState) -> dict[str, Any]:
    """Check config and input; start the bundled local model server when the plan needs it."""
    config = resolve_config(get_runtime(FusionContext).context)
    check_conversation(state.get("messages", []))
    check_budget(config, state["messages"])
    if any(spec.provider == "local" for spec in config.all_specs()):
        from fusiongraph.serve.local_llm import ensure_local_server

        await asyncio.to_thread(ensure_local_server)
    emit("run_started", preset=config.preset, panel=[s.name for s in config.panel])
    return {
        "run_key": uuid.uuid4().hex,
        "started_at": time.time(),
        "panel": None,  # clears the previous turn's panel on a persistent thread
        "analysis": None,
        "judge": {},
    }


def check_budget(config: FusionConfig, messages: list[Any]) -> None:
    """Refuse a plan whose worst case (every max_tokens and tool step used) exceeds max_cost_usd."""
    if config.max_cost_usd is None:
        return
    prompt_chars = sum(len(str(m.content)) for m in messages)
    worst, unknown = worst_case_cost(config, prompt_chars)
    if unknown:
        raise FusionConfigError(
            "prices",
            f"no price known for {', '.join(unknown)}; add them to `prices` to use max_cost_usd",
        )
    if worst > config.max_cost_usd:
        raise FusionError(
            "budget_exceeded",
            f"the worst case of this plan is ${worst:.4f}, over max_cost_usd "
            f"${config.max_cost_usd:.4f}; lower max_tokens, max_tool_calls or the panel size",
            worst_case_usd=round(worst, 6),
            max_cost_usd=config.max_cost_usd,
        )


def fan_out(state: FusionState) -> list[Send]:
    """One `Send` per panelist: the branches run in parallel and join at the judge. The
    slowest-expected panelist is sent first (its request leaves first: nodes/send_order.py)."""
    config = resolve_config(get_runtime(FusionContext).context)
    tasks: list[PanelTask] = [
        {
            "panelist": f"p{i + 1}",
            "index": i,
            "run_key": state["run_key"],
            "started_at": state["started_at"],
            "messages": state["messages"],
            **panel_identity(config, i),
        }
        for i in range(len(config.panel))
    ]
    order = slowest_first([spec.latency_key() for spec in config.panel])
    return [Send("panelist", tasks[i]) for i in order]


def panel_identity(config: FusionConfig, index: int) -> dict[str, Any]:
    """What decides a panelist's answer besides the conversation: the resolved model spec (with
    its endpoint and the run's panel token cap) and its tool settings. Carried in the Send
    payload so the node cache can key on it (`panel_cache_key`)."""
    spec = config.panel[index]
    mode = config.panel_tool_mode(spec)
    tools: dict[str, Any] = {"mode": mode}
    if mode != "off":
        tools["search"] = config.search.model_dump(mode="json")
        tools["fetch"] = config.fetch.model_dump(mode="json")
        if mode == "agentic":
            tools["max_tool_calls"] = config.panel_max_tool_calls(spec)
    return {
        "spec": {
            **spec.model_dump(mode="json", exclude={"price"}),
            "base_url": spec.resolved_base_url(),
            "max_tokens": spec.max_tokens or config.panel_max_tokens,
        },
        "tools": tools,
    }


def _message_key(message: AnyMessage) -> dict[str, Any]:
    # Message ids are new on every request, so they stay out of the key.
    return {
        "type": message.type,
        "content": message.content,
        "name": message.name,
        "tool_calls": getattr(message, "tool_calls", None) or None,
        "tool_call_id": getattr(message, "tool_call_id", None),
    }


def panel_cache_key(task: PanelTask) -> str:
    """Node-cache key of one panel answer: same panelist slot, same resolved model and tools,
    same conversation. Leaves out run_key and started_at, which differ on every run."""
    return json.dumps(
        {
            "panelist": task["panelist"],
            "spec": task.get("spec"),
            "tools": task.get("tools"),
            "messages": [_message_key(m) for m in task["messages"]],
        },
        sort_keys=True,
        default=str,
    )
