"""The synthesis node: writes the final answer from the conversation and the judge's analysis.

The caller's tools are bound here and only here, so an agent using fusion as its model gets its
tool calls from this step; its tokens are the ones that stream. When the judge failed, it works
from the raw panel answers instead and the metadata says the run was degraded. It sees the raw
answers too whenever the strategy needs their details (nodes/aggregation.needs_raw_answers).
When a strategy decided the answer (a selection, a vote's winner, an early exit) but the caller
bound tools, it writes from that answer as its draft: a panel answer can make no tool call.

Without tools, a decided answer needs no synthesizer: the finish node, at the end of this
module, writes it as the final message verbatim, with the run's record.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.models import ModelFactory, close_model
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import (
    FusionState,
    empty_usage,
    estimate_usage,
    usage_metadata_of,
    usage_of,
)
from fusiongraph.nodes import prompts
from fusiongraph.nodes.aggregation import answered, decided, needs_raw_answers
from fusiongraph.nodes.failures import describe, failure_reason
from fusiongraph.nodes.images import without_images
from fusiongraph.nodes.messages import flatten_tool_history, with_system
from fusiongraph.nodes.metadata import fusion_failure, fusion_metadata
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import run_deadline_cutoff, scope_of
from fusiongraph.tools.untrusted import delimit_untrusted


def synthesis_instructions(state: FusionState, config: FusionConfig) -> str:
    parts = [prompts.SYNTHESIS]
    analysis = state.get("analysis")
    judge = state.get("judge") or {}
    if analysis is not None:
        # Without what was dropped for naming unknown panelists (nodes/analysis.map_labels).
        shown = {k: v for k, v in analysis.items() if k != "dropped"}
        text = json.dumps(shown, ensure_ascii=False, indent=1)
        parts.append(prompts.SYNTHESIS_ANALYSIS.format(analysis=delimit_untrusted(text, "judge")))
    elif judge:  # the judge ran and failed
        reason = (judge.get("error") or {}).get("reason", "no analysis")
        parts.append(prompts.SYNTHESIS_DEGRADED.format(reason=reason))
    if analysis is None or needs_raw_answers(state, config):
        answers = "\n\n".join(
            f"{r['panelist']} ({r['model']}):\n"
            + delimit_untrusted(r["content"][: config.judge_input_chars], r["panelist"])
            for r in answered(state.get("panel", []))
        )
        parts.append(prompts.SYNTHESIS_ANSWERS.format(answers=answers))
    draft = decided(state)  # a decided answer with the caller's tools bound: the draft
    if draft is not None:
        block = delimit_untrusted(draft["content"], draft["panelist"])
        parts.append(prompts.SYNTHESIS_DRAFT.format(reason=draft["reason"], draft=block))
    return "\n\n".join(parts)


def synthesis_conversation(state: FusionState, config: FusionConfig) -> list[AnyMessage]:
    """Keep the caller's tool history native only when its tools are bound here. The
    synthesizer writes from text: a note stands in for each image (nodes/images.py)."""
    messages = without_images(state["messages"])
    if not config.synthesis_tools:
        messages = flatten_tool_history(messages)
    return with_system(messages, synthesis_instructions(state, config))


def synthesis_spec(config: FusionConfig) -> ModelSpec:
    """The synthesizer's model as it runs: the caller's temperature and max_tokens apply here."""
    updates: dict[str, Any] = {}
    if config.temperature is not None:
        updates["temperature"] = config.temperature
    if config.max_tokens is not None:
        updates["max_tokens"] = config.max_tokens
    return config.synthesizer.model_copy(update=updates)


def make_synthesis(model_factory: ModelFactory):
    """Build the synthesis node; its model call is the one that streams to the caller."""

    async def synthesis(state: FusionState) -> dict[str, Any]:
        config = scope_of(state).config  # the plan dispatch resolved
        spec = synthesis_spec(config)
        model = model_factory(spec)
        emit("synthesis_started", model=spec.name)
        started = time.monotonic()
        runnable: Any = model
        if config.synthesis_tools:
            # BaseChatModel types tool_choice as a name; the providers' models (ChatOpenAI,
            # ChatAnthropic, ...) also take OpenAI's {"type": "function", ...} form.
            choice = config.tool_choice
            runnable = model.bind_tools(config.synthesis_tools, tool_choice=choice)  # type: ignore[arg-type]
        conversation = synthesis_conversation(state, config)
        cutoff = run_deadline_cutoff(state.get("started_at"), config.deadline_s)
        timeout = None if cutoff is None else max(cutoff - time.monotonic(), 0.0)
        try:
            reply = await asyncio.wait_for(
                runnable.ainvoke(conversation, {"tags": ["fusion:synthesis"]}),
                timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            judge_ok = (state.get("judge") or {}).get("ok", False)
            # Only wait_for's own (a bare TimeoutError) is the deadline: a stalled stream's is a
            # subclass (langchain-openai's StreamChunkTimeoutError), the model's own timeout.
            reason = "deadline" if type(exc) is TimeoutError else failure_reason(exc)
            raise fusion_failure(
                "synthesis_failed" if judge_ok else "judge_and_synthesis_failed",
                f"the synthesizer {spec.name} failed ({reason}): {describe(exc)}",
                state,
                config,
                synthesis_latency_s=round(time.monotonic() - started, 3),
            ) from exc
        finally:
            await close_model(model)
        latency = round(time.monotonic() - started, 3)
        usage = usage_of(reply)
        estimated = usage["total_tokens"] == 0
        if estimated:  # e.g. llama.cpp reports no usage when streaming: estimate, and say so
            usage = estimate_usage(conversation, reply)
        meta = fusion_metadata(state, config, synthesis_usage=usage, synthesis_latency_s=latency)
        meta["usage_estimated"] = estimated
        total = meta["usage"]["total"]
        final = AIMessage(
            content=reply.content,
            tool_calls=reply.tool_calls,
            invalid_tool_calls=reply.invalid_tool_calls,
            id=reply.id,
            response_metadata={**reply.response_metadata, "fusion": meta},
            usage_metadata=usage_metadata_of(total),
        )
        emit("synthesis_finished", model=spec.name, latency_s=latency)
        return {"messages": [final]}

    return synthesis


# --- the finish node: a decided answer, no model call ------------------------------------------
#
# Early exit, a vote's winner and the judge's selection (nodes/aggregation.py) end here: the
# final message is that panelist's answer verbatim, with the run's record. It reaches every
# surface like a synthesized one: in `messages` stream mode as the node's output (from node
# `finish`), and graph/runner.py turns it into the token stream the chat model and the server
# send.


async def finish(state: FusionState) -> dict[str, Any]:
    config = scope_of(state).config
    choice = decided(state)
    if choice is None:  # the routes reach this node only with a decided answer
        raise RuntimeError("finish reached without a decided answer")
    meta = fusion_metadata(state, config, synthesis_usage=empty_usage(), synthesis_latency_s=None)
    meta["usage_estimated"] = False
    total = meta["usage"]["total"]
    final = AIMessage(
        content=choice["content"],
        id=f"fusion-{state.get('run_key', '')}",
        response_metadata={"fusion": meta, "finish_reason": "stop"},
        usage_metadata=usage_metadata_of(total),
    )
    emit(
        "answer_selected",
        panelist=choice["panelist"],
        reason=choice["reason"],
        final=meta["aggregation"]["final"],
    )
    return {"messages": [final]}
