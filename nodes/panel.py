"""The panelist node: one model answers the conversation on its own, with web tools.

Tool modes: `agentic` (a bounded tool-calling loop over web_search and web_fetch), `prefetch`
(search the question once, fetch the top pages, answer from them: for models without tool
calling) and `off`. A failing panelist never fails the run: it returns a result with `error` set.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage

from fusiongraph.graph.config import FusionConfig, config_of
from fusiongraph.graph.models import (
    ModelFactory,
    close_model,
    quiet,
    reports_sends,
    track_upstream_status,
)
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import PanelResult, PanelTask, Source, add_usage, empty_usage, usage_of
from fusiongraph.nodes import prompts
from fusiongraph.nodes.failures import cut_error, describe, failure_reason
from fusiongraph.nodes.messages import flatten_tool_history, last_user_text, text_of, with_system
from fusiongraph.nodes.panel_clock import PanelDeadline, clock_for, run_deadline_cutoff
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.send_order import remember_latency
from fusiongraph.tools.web import make_web_tools, prefetch_context

NOSTREAM = {"tags": ["nostream", "fusion:panel"]}


class PanelAnswer:
    """What a panelist produced, accumulated across its tool loop."""

    def __init__(self) -> None:
        self.content = ""
        self.usage = empty_usage()
        self.sources: list[Source] = []
        self.tool_calls = 0

    def add_sources(self, items: list[dict[str, Any]]) -> None:
        seen = {s["url"] for s in self.sources}
        for item in items:
            if item.get("url") and item["url"] not in seen:
                seen.add(item["url"])
                self.sources.append({"url": item["url"], "title": item.get("title") or ""})

    def count(self, message: AIMessage) -> AIMessage:
        self.usage = add_usage(self.usage, usage_of(message))
        return message


async def answer_off(model: BaseChatModel, messages: list[AnyMessage], out: PanelAnswer) -> None:
    reply = await model.ainvoke(with_system(messages, prompts.PANELIST), NOSTREAM)
    out.content = text_of(out.count(reply))


async def answer_prefetch(
    model: BaseChatModel, messages: list[AnyMessage], config: FusionConfig, out: PanelAnswer
) -> None:
    context, sources = await prefetch_context(last_user_text(messages), config.search, config.fetch)
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
    tools = {t.name: t for t in make_web_tools(config.search, config.fetch)}
    bound = model.bind_tools(list(tools.values()))
    history = with_system(messages, prompts.PANELIST_AGENTIC.format(max_calls=max_calls))
    while True:
        reply = out.count(await bound.ainvoke(history, NOSTREAM))
        history.append(reply)
        if not reply.tool_calls:
            out.content = text_of(reply)
            return
        for call in reply.tool_calls:
            history.append(
                await _run_tool(tools, call, out, budget_left=out.tool_calls < max_calls)
            )
        if out.tool_calls >= max_calls:
            break
    final_model = model.bind_tools(list(tools.values()), tool_choice="none")
    history.append(HumanMessage(content=prompts.TOOL_BUDGET_SPENT))
    reply = out.count(await final_model.ainvoke(history, NOSTREAM))
    out.content = text_of(reply)


async def _run_tool(
    tools: dict[str, Any], call: dict[str, Any], out: PanelAnswer, budget_left: bool
) -> ToolMessage:
    call_id = call.get("id") or ""
    if not budget_left:
        return ToolMessage(content="Not run: the tool budget is spent.", tool_call_id=call_id)
    tool = tools.get(call["name"])
    if tool is None:
        return ToolMessage(
            content=f"Unknown tool {call['name']!r}; use web_search or web_fetch.",
            tool_call_id=call_id,
            status="error",
        )
    out.tool_calls += 1
    try:
        result = await tool.ainvoke({**call, "type": "tool_call"})
    except Exception as exc:  # a broken tool is the model's problem to route around, not ours
        return ToolMessage(
            content=f"{call['name']} failed: {describe(exc)}", tool_call_id=call_id, status="error"
        )
    artifact = getattr(result, "artifact", None) or {}
    out.add_sources(artifact.get("sources", []))
    return result


def panel_spec(config: FusionConfig, index: int) -> ModelSpec:
    """The panelist's model as it runs: the run's panel token cap applies unless it has its own."""
    spec = config.panel[index]
    if spec.max_tokens is None and config.panel_max_tokens is not None:
        return spec.model_copy(update={"max_tokens": config.panel_max_tokens})
    return spec


def make_panelist(model_factory: ModelFactory):
    """Build the panelist node around a model factory (real endpoints, or fakes in tests)."""

    async def panelist(task: PanelTask) -> dict[str, list[PanelResult]]:
        config = config_of(task["plan"])  # the plan dispatch resolved
        spec = panel_spec(config, task["index"])
        panelist_id = task["panelist"]
        # Built before the clock starts: a process's first build imports the client library
        # (about a second), which is no part of this panelist's time (dispatch warms it too).
        model = quiet(model_factory(spec))
        clock = clock_for(
            task["run_key"],
            timeout_s=config.panel_timeout_s,
            quorum=config.quorum,
            grace_s=config.straggler_grace_s,
            hard_cutoff=run_deadline_cutoff(task.get("started_at"), config.deadline_s, share=0.6),
        )
        emit("panelist_started", panelist=panelist_id, model=spec.name)
        started = time.monotonic()
        out = PanelAnswer()
        error = None
        with track_upstream_status() as upstream:
            try:
                messages = flatten_tool_history(task["messages"])
                mode = config.panel_tool_mode(spec)
                if mode == "agentic":
                    work = answer_agentic(
                        model, messages, config, config.panel_max_tool_calls(spec), out
                    )
                elif mode == "prefetch":
                    work = answer_prefetch(model, messages, config, out)
                else:
                    work = answer_off(model, messages, out)
                if mode != "prefetch" and reports_sends(model):  # its first step is a request
                    work = clock.sends.run(work)
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
            remember_latency(spec.latency_key(), latency)
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
        }
        return {"panel": [result]}

    return panelist
