"""The bounded tool loop a panelist and the checking judge share.

A model holding web_search and web_fetch may call them until it answers or its budget of tool
calls is spent; then it is asked once more, with tools disabled, to answer from what it has. A
failing or unknown tool comes back as text the model can route around: it never ends the loop.
What the loop used (tokens, tool calls, the sources the tools returned) is counted in a
`ToolTally` as it goes, so a loop cut by a clock still reports what it paid for.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from fusiongraph.graph.state import Source, Usage, add_usage, empty_usage, usage_of
from fusiongraph.nodes.failures import describe


class ToolTally:
    """What a tool loop used: tokens, tool calls (and what each asked for), sources."""

    def __init__(self) -> None:
        self.usage: Usage = empty_usage()
        self.sources: list[Source] = []
        self.tool_calls = 0
        self.calls: list[dict[str, Any]] = []  # {"name", "args", "ok"}, in call order

    def add_sources(self, items: list[dict[str, Any]]) -> None:
        seen = {s["url"] for s in self.sources}
        for item in items:
            if item.get("url") and item["url"] not in seen:
                seen.add(item["url"])
                self.sources.append({"url": item["url"], "title": item.get("title") or ""})

    def count(self, message: AIMessage) -> AIMessage:
        self.usage = add_usage(self.usage, usage_of(message))
        return message


async def run_tool_loop(
    model: BaseChatModel,
    tools: list[BaseTool],
    history: list[AnyMessage],
    *,
    max_calls: int,
    tally: ToolTally,
    budget_spent: str,
    config: RunnableConfig,
) -> AIMessage:
    """Call tools until the model answers, at most `max_calls` tool calls in total; then one
    reply with tools disabled (`budget_spent` says why). `history` grows in place (the replies
    and the tool results), so the caller can read what the tools returned."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    while True:
        reply = tally.count(await bound.ainvoke(history, config))
        history.append(reply)
        if not reply.tool_calls:
            return reply
        for call in reply.tool_calls:
            history.append(await run_tool(by_name, call, tally, tally.tool_calls < max_calls))
        if tally.tool_calls >= max_calls:
            break
    final_model = model.bind_tools(tools, tool_choice="none")
    history.append(HumanMessage(content=budget_spent))
    reply = tally.count(await final_model.ainvoke(history, config))
    history.append(reply)
    return reply


async def run_tool(
    tools: dict[str, BaseTool], call: ToolCall, tally: ToolTally, budget_left: bool
) -> ToolMessage:
    """One tool call's result message; counted against the budget only when it ran."""
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
    tally.tool_calls += 1
    record = {"name": call["name"], "args": dict(call.get("args") or {}), "ok": True}
    tally.calls.append(record)
    try:
        result = await tool.ainvoke({**call, "type": "tool_call"})
    except Exception as exc:  # a broken tool is the model's problem to route around, not ours
        record["ok"] = False
        return ToolMessage(
            content=f"{call['name']} failed: {describe(exc)}", tool_call_id=call_id, status="error"
        )
    artifact = getattr(result, "artifact", None) or {}
    if artifact.get("error"):
        record["ok"] = False
    tally.add_sources(artifact.get("sources", []))
    return result
