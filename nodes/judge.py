"""The judge node: compares the panel answers and returns a validated structured analysis.

The answers are anonymised and shuffled (Response A, B, ...) so the judge cannot favour a model
by name or position; labels are mapped back to panelist ids afterwards. The judge runs at
temperature 0 with the strongest structured-output method its endpoint supports, and falls back
to a tolerant parse of plain text. A judge failure never fails the run: synthesis then works from
the raw answers and the metadata says so.
"""

from __future__ import annotations

import asyncio
import functools
import random
import string
import time
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.errors import FailureReason
from fusiongraph.graph.models import ModelFactory, close_model, quiet, track_upstream_status
from fusiongraph.graph.reasoning import with_effort
from fusiongraph.graph.specs import ModelSpec, StructuredMethod
from fusiongraph.graph.state import (
    FusionState,
    PanelResult,
    Usage,
    add_usage,
    empty_usage,
    usage_of,
)
from fusiongraph.nodes import prompts
from fusiongraph.nodes.analysis import (
    Analysis,
    analysis_json_schema,
    analysis_model,
    json_schema_response_format,
    map_labels,
    parse_analysis,
)
from fusiongraph.nodes.failures import NamedFailure, cut_error, describe, failure_reason
from fusiongraph.nodes.images import without_images
from fusiongraph.nodes.judge_tools import judge_with_checks
from fusiongraph.nodes.messages import last_user_text, text_of
from fusiongraph.nodes.metadata import fusion_failure
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import run_deadline_cutoff, scope_of
from fusiongraph.tools.untrusted import delimit_untrusted

NOSTREAM: RunnableConfig = {"tags": ["nostream", "fusion:judge"]}
Schema = TypeVar("Schema", bound=BaseModel)
JUDGE_MAX_TOKENS = 1200
# Failures of what a reply said, as opposed to what the upstream did.
_REPLY_REASONS = ("invalid_response", "empty")


def successful(panel: list[PanelResult]) -> list[PanelResult]:
    return [r for r in panel if r["error"] is None and r["content"].strip()]


def anonymise(answers: list[PanelResult], seed: str) -> tuple[list[PanelResult], dict[str, str]]:
    """Shuffle the answers (reproducibly per run) and label them A, B, ...; return the label map."""
    order = list(answers)
    random.Random(seed).shuffle(order)
    labels = {string.ascii_uppercase[i]: r["panelist"] for i, r in enumerate(order)}
    return order, labels


def judge_spec(config: FusionConfig) -> ModelSpec:
    """The judge's model as it runs: temperature 0, a bounded analysis, the run's reasoning
    effort unless its spec has its own."""
    return with_effort(config.judge, config.reasoning_effort).model_copy(
        update={"temperature": 0.0, "max_tokens": config.judge.max_tokens or JUDGE_MAX_TOKENS}
    )


def judge_messages(
    state: FusionState, order: list[PanelResult], max_chars: int, *, select: bool = False
) -> list[Any]:
    """The judge's prompt; `select` also asks it to name the best response (nodes/aggregation)."""
    blocks = []
    for label, result in zip(string.ascii_uppercase, order, strict=False):
        content = result["content"]
        if len(content) > max_chars:
            content = content[:max_chars] + " [...truncated]"
        blocks.append(
            f"Response {label}:\n" + delimit_untrusted(content, f"Response {label}", notice=False)
        )
    user = prompts.JUDGE_USER.format(
        # The judge reads text: a note stands in for each image (nodes/images.py).
        question=last_user_text(without_images(state["messages"])),
        responses="\n\n".join(blocks),
    )
    system = prompts.JUDGE + (prompts.JUDGE_SELECT if select else "")
    return [SystemMessage(content=system), HumanMessage(content=user)]


async def ask_structured(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    spent: list[Usage],
    *,
    schema: type[Schema],
    response_format: Callable[[StructuredMethod], dict[str, Any]],
    parse: Callable[[str], Schema],
    config: RunnableConfig = NOSTREAM,
) -> Schema:
    """Ask for `schema` with one method; raise on any failure (the caller falls back). Shared by
    the analysis and verify's tests and program.

    The usage of every reply is appended to `spent` before parsing: a reply that fails to parse
    was still paid for. The JSON methods send `response_format(method)` as a raw body field, so
    the reply takes the plain completion path and `parse`: for llama.cpp the schema becomes a
    grammar, and a truncated reply is still parsed.
    """
    if method == "function_calling":
        runnable = model.with_structured_output(schema, method=method, include_raw=True)
        out = await runnable.ainvoke(messages, config)
        assert isinstance(out, dict)  # include_raw: {"raw", "parsed", "parsing_error"}
        spent.append(usage_of(out["raw"]))
        if isinstance(out.get("parsed"), schema):
            return out["parsed"]
        raw = out["raw"]
        return parse(text_of(raw) if isinstance(raw, AIMessage) else "")
    if method in ("json_schema", "json_object_schema"):
        fmt = response_format(method)
        extra_body = {**(getattr(model, "extra_body", None) or {}), "response_format": fmt}
        reply = await model.bind(extra_body=extra_body).ainvoke(messages, config)
    else:
        reply = await model.ainvoke(messages, config)
    spent.append(usage_of(reply))
    return parse(text_of(reply))


async def structured_call(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    spent: list[Usage],
    *,
    select: bool = False,
) -> Analysis:
    """The analysis with one method (`ask_structured`); for json_schema the strict format is
    precomputed (LangChain's route rebuilds it per call)."""

    def response_format(method: StructuredMethod) -> dict[str, Any]:
        if method == "json_schema":
            return json_schema_response_format(select)
        return {"type": "json_object", "schema": analysis_json_schema(grammar=True, select=select)}

    return await ask_structured(
        model,
        method,
        messages,
        spent,
        schema=analysis_model(select=select),
        response_format=response_format,
        parse=_parsed,
    )


def _parsed(text: str) -> Analysis:
    """The analysis in a reply; one that cannot be read is an `invalid_response`."""
    try:
        return parse_analysis(text)
    except ValueError as exc:
        raise NamedFailure("invalid_response", describe(exc, 200)) from exc


async def run_judge(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    spent: list[Usage],
    *,
    select: bool = False,
) -> tuple[Analysis, list[str]]:
    """The strongest method first, then a plain prompt parsed tolerantly.

    When every attempt fails, raise a NamedFailure whose message lists what each attempt did and
    whose reason is the upstream's failure (upstream_error, rate_limited, auth, timeout, ...) if
    an attempt had one, else `invalid_response` or `empty`: the cause, not a generic error.
    """
    reasons: list[str] = []
    notes: list[str] = []
    last: Exception | None = None  # chained, so the upstream's own exception is kept
    for attempt in dict.fromkeys([method, "prompt"]):
        try:
            analysis = await structured_call(model, attempt, messages, spent, select=select)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            last = exc
            reasons.append(failure_reason(exc))
            notes.append(f"{attempt}: {describe(exc, 200)}")
            continue
        if analysis.is_empty():
            reasons.append("empty")
            notes.append(f"{attempt}: empty analysis")
            continue
        return analysis, notes
    raise NamedFailure(_judge_reason(reasons), "; ".join(notes)) from last


def _judge_reason(reasons: list[str]) -> str:
    """The last upstream failure names the cause best; else a reply that did not parse; else an
    empty analysis."""
    upstream = [r for r in reasons if r not in _REPLY_REASONS]
    if upstream:
        return upstream[-1]
    return "invalid_response" if "invalid_response" in reasons else "empty"


def _judge_timeout(state: FusionState, config: FusionConfig) -> float | None:
    cutoff = run_deadline_cutoff(state.get("started_at"), config.deadline_s, share=0.85)
    return None if cutoff is None else max(cutoff - time.monotonic(), 0.0)


def make_judge(model_factory: ModelFactory):
    """Build the judge node (the join of the panel fan-out)."""

    async def judge(state: FusionState) -> dict[str, Any]:
        config = scope_of(state).config  # the plan dispatch resolved
        panel = state.get("panel", [])
        answers = successful(panel)
        # The strategy's ask (nodes/aggregation.py): name the best response, among these only.
        ask = state.get("aggregation") or {}
        select = bool(ask.get("judge_select"))
        if ask.get("candidates"):
            answers = [r for r in answers if r["panelist"] in ask["candidates"]]
        if not answers:
            reasons = {r["error"]["reason"] for r in panel if r["error"]}
            reason: FailureReason = "all_panelists_failed"
            if reasons == {"rate_limited"}:
                reason = "rate_limited"
            elif reasons == {"recursion"}:
                reason = "recursion"
            raise fusion_failure(reason, "no panelist produced an answer", state, config)
        spec = judge_spec(config)
        order, labels = anonymise(answers, state.get("run_key", ""))
        model = quiet(model_factory(spec))
        emit("judge_started", model=spec.name, answers=len(order))
        started = time.monotonic()
        info: dict[str, Any] = {"model": spec.name, "order": [labels[k] for k in sorted(labels)]}
        spent: list[Usage] = []
        mapped = None
        with track_upstream_status() as upstream:
            try:
                work = judge_with_checks(  # checked against the web when judge_tools is on
                    model,
                    spec.resolved_structured_output(),
                    judge_messages(state, order, config.judge_input_chars, select=select),
                    config,
                    spent,
                    info,
                    functools.partial(run_judge, select=select),
                )
                analysis, notes = await asyncio.wait_for(work, _judge_timeout(state, config))
                mapped = map_labels(analysis, labels)
                info.update(ok=True, error=None, fallbacks=notes)
            except asyncio.CancelledError:
                raise
            except TimeoutError:  # the run deadline's judge share (85 %)
                message = "cut off at the judge's share of the run deadline (deadline_s)"
                info.update(ok=False, error=cut_error("deadline", message, upstream.status))
            except Exception as exc:
                error = {"reason": failure_reason(exc), "message": describe(exc)}
                info.update(ok=False, error=error)
            finally:
                await close_model(model)
        info["usage"] = functools.reduce(add_usage, spent, empty_usage())
        info["latency_s"] = round(time.monotonic() - started, 3)
        emit(
            "judge_finished",
            model=spec.name,
            ok=info["ok"],
            latency_s=info["latency_s"],
            error=info["error"],
        )
        return {"analysis": mapped, "judge": info}

    return judge
