"""The deliberation tool around a fusion chat model: an agent hands a hard question to a fusion
panel and gets back the final answer plus a compact account of where the panel agreed, disagreed
and what it missed. `graph/tool.py`'s `fusion_tool` builds it with a FusionChatModel; the chat
model's `as_tool` builds it around itself.

The tool returns content and artifact: the text (answer + analysis) goes to the agent's model,
the full `response_metadata["fusion"]` record (panel answers, sources, usage, cost) rides along as
the ToolMessage's artifact for the application, without costing the agent any context.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from fusiongraph.graph.errors import FusionError

DESCRIPTION = (
    "Ask a panel of independent models (each able to search the web) to deliberate on a "
    "question; a judge compares their answers and one final answer is written from that "
    "comparison. Use it for questions that deserve a second opinion: facts you are unsure of, "
    "contested or high-stakes questions, recent events, or when several perspectives matter. "
    "It is slow and costs several model calls, so do not use it for simple look-ups, arithmetic "
    "or anything you can answer confidently yourself. Returns the answer followed by the "
    "panel's consensus, contradictions, unique insights and blind spots."
)

MAX_ITEMS = 6  # per analysis section, so the tool output stays compact


class DeliberateInput(BaseModel):
    """Arguments of the deliberation tool."""

    question: str = Field(description="The question to deliberate on, self-contained.")
    context: str | None = Field(
        default=None,
        description="Optional background the panel needs (facts, constraints, prior findings).",
    )


def deliberation_messages(question: str, context: str | None = None) -> list[BaseMessage]:
    """The caller's background goes in a system message, so it reaches every model without
    turning the panel's search query (the last user message) into a wall of text."""
    messages: list[BaseMessage] = []
    if context and context.strip():
        messages.append(
            SystemMessage(content=f"Background from the asking agent:\n{context.strip()}")
        )
    messages.append(HumanMessage(content=question))
    return messages


def _clip(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_analysis(fusion: dict[str, Any]) -> str:
    """A compact text account of the deliberation (what an agent's model needs, no more)."""
    panel = fusion.get("panel") or []
    failed = fusion.get("failed_models") or []
    analysis = fusion.get("analysis")
    lines = [
        f"Deliberation: {len(panel)} panelist(s) answered"
        + (f", {len(failed)} failed" if failed else "")
        + "."
    ]
    aggregation = fusion.get("aggregation") or {}
    if analysis is None and not (fusion.get("judge") or {}).get("model"):
        # No judge was needed: every answer agreed, or a vote had a clear winner.
        lines.append(_clip(f"No judge was needed: {aggregation.get('note') or 'decided'}."))
    elif analysis is None:
        error = ((fusion.get("judge") or {}).get("error") or {}).get("message") or "no analysis"
        lines.append(
            f"The judge gave no usable analysis ({_clip(error, 120)}); the answer was "
            "written from the raw panel answers."
        )
    else:
        sections: list[tuple[str, list[str]]] = [
            ("Consensus", [_clip(c) for c in analysis.get("consensus") or []]),
            (
                "Contradictions",
                [
                    _clip(
                        f"{c.get('topic')}: "
                        + "; ".join(
                            f"{s.get('panelist')}: {s.get('stance')}"
                            for s in c.get("stances") or []
                        )
                    )
                    for c in analysis.get("contradictions") or []
                ],
            ),
            (
                "Partial coverage",
                [
                    _clip(f"{p.get('point')} ({', '.join(p.get('panelists') or [])})")
                    for p in analysis.get("partial_coverage") or []
                ],
            ),
            (
                "Unique insights",
                [
                    _clip(f"{u.get('panelist')}: {u.get('insight')}")
                    for u in analysis.get("unique_insights") or []
                ],
            ),
            ("Blind spots", [_clip(b) for b in analysis.get("blind_spots") or []]),
        ]
        for title, items in sections:
            if items:
                lines.append(f"{title}:")
                lines.extend(f"- {item}" for item in items[:MAX_ITEMS])
                if len(items) > MAX_ITEMS:
                    lines.append(f"- ... {len(items) - MAX_ITEMS} more")
    selected = aggregation.get("selected")
    if selected:
        how = "draft" if aggregation.get("draft") else "answer"
        lines.append(_clip(f"The {how} is {selected['panelist']}'s: {selected['reason']}"))
    for f in failed:
        lines.append(f"Failed: {f.get('panelist')} ({f.get('model')}): {f.get('reason')}")
    sources = list(
        dict.fromkeys(s["url"] for p in panel for s in p.get("sources") or [] if s.get("url"))
    )
    if sources:
        lines.append("Sources: " + ", ".join(sources[:MAX_ITEMS]))
    return "\n".join(lines)


def render(message: AIMessage) -> str:
    """The tool's content: the final answer, then the analysis."""
    fusion = message.response_metadata.get("fusion") or {}
    return f"{message.text.strip()}\n\n---\n{render_analysis(fusion)}"


def _tool_error(exc: FusionError) -> ToolException:
    return ToolException(f"Deliberation failed ({exc.reason}): {exc.message}")


def deliberation_tool(
    model: BaseChatModel, *, name: str = "deliberate", description: str | None = None
) -> BaseTool:
    """The deliberation tool around `model`, a chat model whose replies carry the fusion record
    (a FusionChatModel). Its inner model calls are tagged `nostream`, so a parent graph's
    message stream does not mistake the panel's deliberation for the agent's own reply."""
    config: RunnableConfig = {"tags": ["nostream", "fusion:tool"], "run_name": "fusion"}

    def deliberate(question: str, context: str | None = None) -> tuple[str, dict[str, Any]]:
        try:
            reply = model.invoke(deliberation_messages(question, context), config)
        except FusionError as exc:
            raise _tool_error(exc) from exc
        return render(reply), reply.response_metadata.get("fusion") or {}

    async def adeliberate(question: str, context: str | None = None) -> tuple[str, dict[str, Any]]:
        try:
            reply = await model.ainvoke(deliberation_messages(question, context), config)
        except FusionError as exc:
            raise _tool_error(exc) from exc
        return render(reply), reply.response_metadata.get("fusion") or {}

    return StructuredTool.from_function(
        func=deliberate,
        coroutine=adeliberate,
        name=name,
        description=description or DESCRIPTION,
        args_schema=DeliberateInput,
        response_format="content_and_artifact",
        # A failed deliberation becomes an error ToolMessage the agent can route around.
        handle_tool_error=True,
    )
