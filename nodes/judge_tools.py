"""The judge that checks (`judge_tools`): web evidence for the contradictions, then the analysis.

Two ways to the tools, by what the judge's endpoint can do (`FusionConfig.judge_tool_mode`):
- `agentic`: a bounded tool loop (nodes/tool_loop.py, the panel's own) in which the judge looks
  up what the responses disagree on, at most `judge_max_tool_calls` calls; then the structured
  analysis call, given what the tools returned.
- `prefetch`, for endpoints without tool calling (the bundled local model): the plain analysis
  first; then one web_search per contradiction's topic (at most `judge_max_tool_calls`); then
  the analysis again with those results. No contradictions, no searches and no second call.
A judge spec with `tool_mode: off` and judge_tools on is refused by the configuration.

Checking is a bonus, never a new way to fail: a tool that fails comes back as text (the loop
goes on), and a check step whose model call fails leaves the judge to write its analysis
without the evidence (`judge.tools.error` says why). The run deadline's judge share covers the
whole: a loop still running at the cut ends the judge like any slow judge.

Each contradiction says whether it was checked and on which sources. The judge's claim is kept
only as far as the run can vouch for it: a source must be a URL the judge's own tool calls
returned, and `checked` needs at least one such source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.pricing import cost_of, price_of
from fusiongraph.graph.specs import StructuredMethod
from fusiongraph.graph.state import Source, Usage, add_usage, empty_usage
from fusiongraph.nodes import prompts
from fusiongraph.nodes.analysis import Analysis
from fusiongraph.nodes.failures import describe, failure_reason
from fusiongraph.nodes.messages import text_of
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.tool_loop import ToolTally, run_tool_loop
from fusiongraph.tools.untrusted import delimit_untrusted
from fusiongraph.tools.web import make_web_tools, run_web_search

NOSTREAM: RunnableConfig = {"tags": ["nostream", "fusion:judge"]}
MAX_SOURCES = 8  # Contradiction.sources' bound
QUERY_CHARS = 200

# judge.run_judge: (model, method, messages, spent) -> (analysis, fallback notes).
JudgeCall = Callable[
    [BaseChatModel, StructuredMethod, list[Any], list[Usage]],
    Awaitable[tuple[Analysis, list[str]]],
]


class JudgeChecks:
    """What the checking step did; `record` is `fusion.judge.tools` in the run record."""

    def __init__(self, config: FusionConfig) -> None:
        self.config = config
        self.mode = config.judge_tool_mode()
        self.tally = ToolTally()
        self.extra_usage = empty_usage()  # prefetch: the second analysis call
        self.error: dict[str, str] | None = None
        self.checked = 0

    def usage(self) -> Usage:
        return add_usage(self.tally.usage, self.extra_usage)

    def record(self) -> dict[str, Any]:
        usage = self.usage()
        return {
            "mode": self.mode,
            "max_tool_calls": self.config.judge_max_tool_calls,
            "tool_calls": self.tally.tool_calls,
            "calls": [dict(c) for c in self.tally.calls],
            "sources": [dict(s) for s in self.tally.sources],
            "checked": self.checked,
            "usage": usage,
            "cost_usd": cost_of(usage, price_of(self.config.judge, self.config)),
            "error": self.error,
        }


async def judge_with_checks(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    config: FusionConfig,
    spent: list[Usage],
    info: dict[str, Any],
    run_judge: JudgeCall,
) -> tuple[Analysis, list[str]]:
    """The judge's work: checked when judge_tools is on, else the plain analysis. Fills
    `info["tools"]` (also when the deadline cuts the work) and appends every token to `spent`."""
    if not config.judge_tools:
        analysis, notes = await run_judge(model, method, messages, spent)
        return settle(analysis, []), notes  # a judge without tools checked nothing
    checks = JudgeChecks(config)
    info["tools"] = checks.record()
    try:
        strategy = _prefetch if checks.mode == "prefetch" else _agentic
        analysis, notes = await strategy(model, method, messages, config, spent, checks, run_judge)
        checks.checked = sum(c.checked for c in analysis.contradictions)
        return analysis, notes
    finally:
        info["tools"] = checks.record()
        emit(
            "judge_checked",
            mode=checks.mode,
            tool_calls=checks.tally.tool_calls,
            sources=len(checks.tally.sources),
            checked=checks.checked,
            error=checks.error,
        )


async def _agentic(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    config: FusionConfig,
    spent: list[Usage],
    checks: JudgeChecks,
    run_judge: JudgeCall,
) -> tuple[Analysis, list[str]]:
    system = prompts.JUDGE_CHECK.format(max_calls=config.judge_max_tool_calls)
    history: list[AnyMessage] = [
        SystemMessage(content=system),
        *(m for m in messages if not isinstance(m, SystemMessage)),
    ]
    start = len(history)
    try:
        await run_tool_loop(
            model,
            make_web_tools(config.search, config.fetch),
            history,
            max_calls=config.judge_max_tool_calls,
            tally=checks.tally,
            budget_spent=prompts.JUDGE_CHECK_BUDGET_SPENT,
            config=NOSTREAM,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the endpoint cannot do tools (or failed): judge unchecked
        checks.error = {"reason": failure_reason(exc), "message": describe(exc)}
    finally:
        spent.append(checks.tally.usage)
    evidence = _loop_evidence(history[start:])
    if not checks.tally.tool_calls:
        analysis, notes = await run_judge(model, method, messages, spent)
        return settle(analysis, []), notes
    analysis, notes = await run_judge(
        model, method, with_evidence(messages, evidence, checks), spent
    )
    return settle(analysis, checks.tally.sources), notes


async def _prefetch(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    config: FusionConfig,
    spent: list[Usage],
    checks: JudgeChecks,
    run_judge: JudgeCall,
) -> tuple[Analysis, list[str]]:
    first, notes = await run_judge(model, method, messages, spent)
    topics = list(dict.fromkeys(c.topic.strip() for c in first.contradictions if c.topic.strip()))
    topics = topics[: config.judge_max_tool_calls]
    if not topics:
        return settle(first, []), notes
    results = await asyncio.gather(
        *(run_web_search(topic[:QUERY_CHARS], config.search) for topic in topics)
    )
    evidence = []
    for topic, (text, artifact) in zip(topics, results, strict=True):
        checks.tally.tool_calls += 1
        failed = bool(artifact.get("error"))
        checks.tally.calls.append(
            {"name": "web_search", "args": {"query": topic[:QUERY_CHARS]}, "ok": not failed}
        )
        checks.tally.add_sources(artifact.get("sources", []))
        evidence.append(delimit_untrusted(text, "web_search") if failed else text)
    if not checks.tally.sources:
        return settle(first, []), notes
    second: list[Usage] = []
    try:
        checked, notes = await run_judge(
            model, method, with_evidence(messages, evidence, checks), second
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the first analysis stands, unchecked
        checks.error = {"reason": failure_reason(exc), "message": describe(exc)}
        return settle(first, []), notes
    finally:
        checks.extra_usage = _total(second)
        spent.extend(second)
    return settle(checked, checks.tally.sources), notes


def _total(usages: list[Usage]) -> Usage:
    total = empty_usage()
    for usage in usages:
        total = add_usage(total, usage)
    return total


def _loop_evidence(messages: list[AnyMessage]) -> list[str]:
    """What the tools returned, fenced, then the judge's own notes (fenced: they retell it)."""
    evidence = []
    for message in messages:
        if isinstance(message, ToolMessage):
            text = text_of(message)
            artifact = getattr(message, "artifact", None) or {}
            if message.status == "error" or artifact.get("error") or not artifact:
                text = delimit_untrusted(text, f"tool {message.name or ''}".strip())
            evidence.append(text)
    final = messages[-1] if messages else None
    if evidence and final is not None and not isinstance(final, ToolMessage | HumanMessage):
        notes = text_of(final).strip()
        if notes:
            evidence.append(delimit_untrusted(notes, "your notes from the checks"))
    return evidence


def with_evidence(messages: list[Any], evidence: list[str], checks: JudgeChecks) -> list[Any]:
    """The judge's messages with the checking instructions and the evidence added: the system
    message gains JUDGE_CHECKED, the last user message the evidence."""
    urls = ", ".join(s["url"] for s in checks.tally.sources) or "none"
    block = prompts.JUDGE_EVIDENCE.format(
        calls=checks.tally.tool_calls, urls=urls, evidence="\n\n".join(evidence) or "(none)"
    )
    out = list(messages)
    for i, message in enumerate(out):
        if isinstance(message, SystemMessage):
            out[i] = SystemMessage(content=f"{text_of(message)}\n\n{prompts.JUDGE_CHECKED}")
            break
    else:
        out.insert(0, SystemMessage(content=prompts.JUDGE_CHECKED))
    for i in range(len(out) - 1, -1, -1):
        if isinstance(out[i], HumanMessage):
            out[i] = HumanMessage(content=f"{text_of(out[i])}\n\n{block}")
            break
    else:
        out.append(HumanMessage(content=block))
    return out


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def settle(analysis: Analysis, gathered: Sequence[Source]) -> Analysis:
    """Keep of each contradiction's claim what the run can vouch for: sources the judge's own
    tool calls returned (matched on the URL, case and trailing slash aside), and `checked` only
    with at least one of them."""
    known = {_url_key(s["url"]): s["url"] for s in gathered if s.get("url")}
    settled = []
    for item in analysis.contradictions:
        sources = list(dict.fromkeys(known[k] for k in map(_url_key, item.sources) if k in known))
        sources = sources[:MAX_SOURCES]
        settled.append(
            item.model_copy(update={"sources": sources, "checked": item.checked and bool(sources)})
        )
    return analysis.model_copy(update={"contradictions": settled})
