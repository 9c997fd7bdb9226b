"""The panelist node: one model answers the conversation on its own, with web tools.

Tool modes: `agentic` (a bounded tool-calling loop over web_search, web_fetch and the tools of
the operator's MCP servers), `prefetch` (search the question once, fetch the top pages, answer
from them: for models without tool calling) and `off`. A failing panelist never fails the run:
it returns a result with `error` set. A panelist whose spec (or model profile) accepts images
is sent the conversation's images; the others get a note in place of each (nodes/images.py).

How a panelist is sent lives here too: the Send of each (`panel_sends`, used by dispatch for the
first wave and by the gate for a cascade's rest) and the key its cached answer is stored under
(`panel_cache_key`).
"""

from __future__ import annotations

import json
import time
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Send

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.models import (
    ModelFactory,
    close_model,
    quiet,
    reports_sends,
    track_upstream_status,
)
from fusiongraph.graph.reasoning import with_effort
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import FusionState, PanelError, PanelResult, PanelTask
from fusiongraph.nodes import prompts
from fusiongraph.nodes.failures import cut_error, describe, failure_reason
from fusiongraph.nodes.images import accepts_images, content_key, count_images, without_images
from fusiongraph.nodes.messages import flatten_tool_history, last_user_text, text_of, with_system
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import (
    PANEL_LATENCIES,
    PanelClock,
    PanelDeadline,
    Wave,
    run_deadline_cutoff,
    scope_of,
)
from fusiongraph.nodes.tool_loop import ToolTally, run_tool_loop
from fusiongraph.tools.mcp import mcp_tools, servers_identity
from fusiongraph.tools.web import make_web_tools, prefetch_context

NOSTREAM: RunnableConfig = {"tags": ["nostream", "fusion:panel"]}


class PanelAnswer(ToolTally):
    """What a panelist produced, accumulated across its tool loop."""

    def __init__(self) -> None:
        super().__init__()
        self.content = ""


async def answer_off(model: BaseChatModel, messages: list[AnyMessage], out: PanelAnswer) -> None:
    reply = await model.ainvoke(with_system(messages, prompts.PANELIST), NOSTREAM)
    out.content = text_of(out.count(reply))


async def answer_prefetch(
    model: BaseChatModel,
    messages: list[AnyMessage],
    config: FusionConfig,
    out: PanelAnswer,
    query: str | None = None,
) -> None:
    """Search `query` (the last user message's text: never an image or its note) once."""
    query = last_user_text(messages) if query is None else query
    if query.strip():
        context, sources = await prefetch_context(query, config.search, config.fetch)
    else:  # an image with no words: nothing to search for
        context, sources = prompts.NOTHING_TO_SEARCH, []
    out.add_sources(sources)
    system = prompts.PANELIST_PREFETCH.format(context=context)
    reply = await model.ainvoke(with_system(messages, system), NOSTREAM)
    out.content = text_of(out.count(reply))


async def answer_agentic(
    model: BaseChatModel,
    messages: list[AnyMessage],
    config: FusionConfig,
    max_calls: int,
    out: PanelAnswer,
) -> None:
    """Tool loop: at most `max_calls` tool calls in total, then one answer without tools."""
    web = make_web_tools(config.search, config.fetch)
    # The operator's MCP servers add their tools (tools/mcp.py), under the same budget.
    async with mcp_tools(config.mcp_servers, taken=frozenset(t.name for t in web)) as extra:
        system = prompts.PANELIST_AGENTIC.format(max_calls=max_calls)
        if extra:
            system += prompts.PANELIST_MCP_TOOLS.format(names=", ".join(t.name for t in extra))
        reply = await run_tool_loop(
            model,
            [*web, *extra],
            with_system(messages, system),
            max_calls=max_calls,
            tally=out,
            budget_spent=prompts.TOOL_BUDGET_SPENT,
            config=NOSTREAM,
        )
    out.content = text_of(reply)


def panel_spec(config: FusionConfig, index: int) -> ModelSpec:
    """The panelist's model as it runs: the run's panel token cap and reasoning effort apply
    unless it has its own."""
    spec = with_effort(config.panel[index], config.reasoning_effort)
    if spec.max_tokens is None and config.panel_max_tokens is not None:
        return spec.model_copy(update={"max_tokens": config.panel_max_tokens})
    return spec


def make_panelist(model_factory: ModelFactory):
    """Build the panelist node around a model factory (real endpoints, or fakes in tests)."""

    async def panelist(task: PanelTask) -> dict[str, list[PanelResult]]:
        scope = scope_of(task)  # the run's: its plan, start turn and clocks
        config = scope.config
        spec = panel_spec(config, task["index"])
        panelist_id = task["panelist"]
        # Built before the clock starts: a process's first build imports the client library
        # (about a second), which is no part of this panelist's time (dispatch warms it too).
        model = quiet(model_factory(spec))
        clock = scope.panel_clock(
            "rest" if task.get("wave") == "rest" else "first",  # a cascade's rest: its own
            lambda: PanelClock.starting_now(
                timeout_s=config.panel_timeout_s,
                quorum=task.get("quorum", config.quorum),
                grace_s=config.straggler_grace_s,
                hard_cutoff=run_deadline_cutoff(
                    task.get("started_at"), config.deadline_s, share=0.6
                ),
            ),
        )
        emit("panelist_started", panelist=panelist_id, model=spec.name)
        started = time.monotonic()
        out = PanelAnswer()
        error: PanelError | None = None
        images = 0
        with track_upstream_status() as upstream:
            try:
                messages = flatten_tool_history(task["messages"])
                if accepts_images(spec, model):
                    images = count_images(messages)
                else:  # a note in place of each image
                    messages = without_images(messages)
                mode = config.panel_tool_mode(spec)
                if mode == "agentic":
                    work = answer_agentic(
                        model, messages, config, config.panel_max_tool_calls(spec), out
                    )
                elif mode == "prefetch":
                    query = last_user_text(task["messages"])  # its text only
                    work = answer_prefetch(model, messages, config, out, query)
                else:
                    work = answer_off(model, messages, out)
                if mode != "prefetch" and reports_sends(model):  # its first step is a request
                    work = clock.sends.run(work, then=scope.end_start_turn)
                else:  # no request to wait for: the run's start is over as far as this one goes
                    scope.end_start_turn()
                await clock.run(work)
                if not out.content.strip():
                    error = {"reason": "empty", "message": "the model returned no text"}
            except PanelDeadline as exc:  # cut while the SDK retried an HTTP error: say so
                error = cut_error(exc.reason, describe(exc), upstream.status)
            except Exception as exc:
                error = {"reason": failure_reason(exc), "message": describe(exc)}
            finally:
                await close_model(model)
        latency = round(time.monotonic() - started, 3)
        if error is None:
            clock.record_success()
            PANEL_LATENCIES.remember(spec.latency_key(), latency)
            emit(
                "panelist_finished",
                panelist=panelist_id,
                model=spec.name,
                latency_s=latency,
                chars=len(out.content),
                tool_calls=out.tool_calls,
            )
        else:
            emit(
                "panelist_failed", panelist=panelist_id, model=spec.name, latency_s=latency, **error
            )
        result: PanelResult = {
            "panelist": panelist_id,
            "model": spec.name,
            "content": out.content if not error else "",
            "sources": out.sources,
            "usage": out.usage,
            "latency_s": latency,
            "tool_calls": out.tool_calls,
            "error": error,
            "images": images,
        }
        return {"panel": [result]}

    return panelist


# --- how a panelist is sent, and what its cached answer is keyed on ------------------------


def panel_sends(
    state: FusionState,
    config: FusionConfig,
    indices: list[int],
    *,
    wave: Wave = "first",
    quorum: int | None = None,
) -> list[Send]:
    """The panelists at `indices` as Sends, the slowest-expected first (its request leaves
    first: nodes/scheduling.py). A cascade's second wave (`rest`) has a clock of its own and the
    quorum that is left."""
    plan, scope = state["plan"], scope_of(state)
    tasks: dict[int, PanelTask] = {}
    for i in indices:
        task: PanelTask = {
            "panelist": f"p{i + 1}",
            "index": i,
            "run_key": state["run_key"],
            "started_at": state["started_at"],
            "messages": state["messages"],
            "plan": plan,
            "run": scope,
            **panel_identity(config, i),
        }
        if wave != "first":
            task["wave"] = wave
            task["quorum"] = quorum
        tasks[i] = task
    order = PANEL_LATENCIES.slowest_first([config.panel[i].latency_key() for i in indices])
    return [Send("panelist", tasks[indices[k]]) for k in order]


class PanelIdentity(TypedDict):
    spec: dict[str, Any]
    tools: dict[str, Any]


def panel_identity(config: FusionConfig, index: int) -> PanelIdentity:
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
            if config.mcp_servers:  # another server, or the same one reached otherwise
                tools["mcp_servers"] = servers_identity(config.mcp_servers)
    return {
        "spec": {
            **spec.model_dump(mode="json", exclude={"price"}),
            "base_url": spec.resolved_base_url(),
            "max_tokens": spec.max_tokens or config.panel_max_tokens,
            "reasoning_effort": panel_spec(config, index).reasoning_effort,
        },
        "tools": tools,
    }


def _message_key(message: AnyMessage) -> dict[str, Any]:
    # Message ids are new on every request, so they stay out of the key.
    return {
        "type": message.type,
        "content": content_key(message.content),  # an image as its digest
        "name": message.name,
        "tool_calls": getattr(message, "tool_calls", None) or None,
        "tool_call_id": getattr(message, "tool_call_id", None),
    }


def panel_cache_key(task: PanelTask) -> str:
    """Node-cache key of one panel answer: same panelist slot, same resolved model and tools,
    same conversation. Leaves out run_key, started_at and the run's scope, which differ on every
    run."""
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
