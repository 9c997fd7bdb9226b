"""The verify node: after the panel (and the gate), the answers checked by execution.

Code: the caller's tests (`verify_tests`) or the judge's (one structured call), every candidate
run on every test in the sandbox, the winner returned verbatim (nodes/verify.verify_code).
Math: the judge writes a program that computes the answer, run in the sandbox; the answer it
confirms wins, else the vote (nodes/verify.verify_math). Anything else, no tests, nothing that
passes, or no sandbox here: the judge selects instead (`select`), and the record says why.

The sandbox runs off the event loop, one candidate after another (the machine's cores are the
panel's too), each run cut at the time the run's deadline leaves. The judge's call counts in
the run's usage and cost (nodes/metadata.py reads `verify.judge.usage`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from fusiongraph.graph.answers import extract_answer
from fusiongraph.graph.config import FusionConfig, call_parts
from fusiongraph.graph.models import ModelFactory, close_model, quiet
from fusiongraph.graph.state import FusionState, Usage, add_usage, empty_usage
from fusiongraph.nodes.aggregation import answered, finish_route
from fusiongraph.nodes.failures import describe, failure_reason
from fusiongraph.nodes.images import without_images
from fusiongraph.nodes.judge import judge_spec
from fusiongraph.nodes.messages import last_user_text
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.routing import classify_by_rules
from fusiongraph.nodes.scheduling import run_deadline_cutoff, scope_of
from fusiongraph.nodes.verify import (
    ExpectedCall,
    JudgeProgram,
    JudgeTests,
    verify_code,
    verify_math,
)
from fusiongraph.nodes.verify_judge import ask_judge, program_messages, tests_messages
from fusiongraph.tools.sandbox import Limits, SandboxUnavailable, resolve_backend

# Each candidate's run: a right answer to a test-sized input finishes well inside it.
VERIFY_LIMITS = Limits(timeout_s=5.0)
JUDGE_SHARE = 0.85  # of the run's deadline, as the judge's own
SANDBOX_SHARE = 0.95
CALLER_SOURCE_REFUSED = (
    "the caller's verify_tests are Python, which runs only under bubblewrap (FUSIONGRAPH_SANDBOX="
    "process isolates nothing); give them as input/expected cases instead"
)


def verify_kind(record: dict[str, Any], question: str, answers: list[str]) -> str | None:
    """code | math | None (nothing to run): auto's task, else the request's rule; code also
    when an answer holds a code block; math also for a short answer (or a request no rule
    knows) when every answer ends on a number. Options, research and open questions: None."""
    task = record.get("task")
    if task is None:
        ruled = classify_by_rules(question)
        task = ruled[0] if ruled else None
    if task == "code" or any("```" in a for a in answers):
        return "code"
    if task == "math":
        return "math"
    if task not in (None, "short_answer"):
        return None
    finals = [extract_answer(a, "number") for a in answers]
    return "math" if answers and all(finals) else None


def caller_tests(config: FusionConfig) -> tuple[str | None, str | None, list[ExpectedCall]]:
    """(entry point, unit tests, cases) from `verify_tests`."""
    tests = config.verify_tests
    if isinstance(tests, str):
        return None, tests, []
    entry, cases = None, []
    for case in tests or []:
        args = case.args
        if case.call is not None:
            entry, args = call_parts(case.call)
        cases.append(ExpectedCall(args=list(args or []), expected=case.expected))
    return entry, None, cases


def _fallback(kind: str | None, why: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "winner": None,
        "fallback": "select",
        "why": f"{why}: the judge selects instead",
        "sandbox_s": 0.0,
    }


def make_verify(model_factory: ModelFactory):
    """Build the verify node (its judge call made with `model_factory`)."""

    async def verify(state: FusionState) -> dict[str, Any]:
        config = scope_of(state).config
        record = dict(state.get("aggregation") or {})
        panel = answered(state.get("panel", []))
        answers = {r["panelist"]: r["content"] for r in panel}
        question = last_user_text(without_images(state["messages"]))
        kind = verify_kind(record, question, list(answers.values()))
        weights = (record.get("calibrated") or {}).get("weights")  # calibrated auto chose verify
        emit("verify_started", kind=kind, candidates=len(answers))
        started = time.monotonic()
        judge: dict[str, Any] | None = None
        try:
            backend = resolve_backend()  # before paying for tests nobody could run
        except SandboxUnavailable as exc:
            result = _fallback(kind, f"sandbox unavailable: {exc}")
            result["error"] = f"sandbox unavailable: {exc}"
        else:
            if kind is None:
                result = _fallback(None, "nothing to run: the answers are neither code nor math")
            elif kind == "code" and isinstance(config.verify_tests, str) and backend != "bwrap":
                # A request's Python would run with none of bubblewrap's isolation.
                result = _fallback(kind, CALLER_SOURCE_REFUSED)
            elif kind == "code" and config.verify_tests:
                entry, unit_tests, pairs = caller_tests(config)
                result = await _run(
                    state,
                    config,
                    functools.partial(
                        verify_code,
                        answers,
                        entry_point=entry,
                        unit_tests=unit_tests,
                        pairs=pairs,
                        source="caller",
                    ),
                    backend,
                )
            else:
                judge, written = await _judge_writes(state, config, model_factory, kind, answers)
                if written is None:
                    why = f"the judge wrote no {'tests' if kind == 'code' else 'program'}"
                    result = _fallback(kind, f"{why} ({judge['error']['reason']})")
                    if kind == "math":  # the vote still stands without a program
                        check = functools.partial(verify_math, answers, "", weights=weights)
                        result = await _run(state, config, check, backend)
                elif isinstance(written, JudgeTests):
                    check = functools.partial(
                        verify_code,
                        answers,
                        entry_point=written.entry_point or None,
                        pairs=written.tests,
                        source="judge",
                    )
                    result = await _run(state, config, check, backend)
                else:
                    check = functools.partial(
                        verify_math, answers, written.program, weights=weights
                    )
                    result = await _run(state, config, check, backend)
                    result["reasoning"] = written.reasoning
        result["judge"] = judge
        result["latency_s"] = round(time.monotonic() - started, 3)
        record["verify"] = result
        if result.get("winner"):
            record.update(outcome="verify", route=finish_route(config), note=result["why"])
        else:
            record.update(
                outcome="judge",
                judge_select=True,
                candidates=None,
                route="judge",
                note=f"verify: {result['why']}",
            )
        emit(
            "verify_finished",
            kind=kind,
            winner=result.get("winner"),
            fallback=result.get("fallback"),
            why=result.get("why"),
            sandbox_s=round(result.get("sandbox_s", 0.0), 3),
        )
        return {"aggregation": record}

    return verify


async def _run(
    state: FusionState, config: FusionConfig, check: functools.partial[Any], backend: str
) -> dict[str, Any]:
    """A decision of nodes/verify.py in a worker thread, cut at the run's deadline."""
    cutoff = run_deadline_cutoff(state.get("started_at"), config.deadline_s, share=SANDBOX_SHARE)
    result = await asyncio.to_thread(check, limits=VERIFY_LIMITS, backend=backend, cutoff=cutoff)
    result["sandbox_s"] = round(result["sandbox_s"], 3)
    return result


async def _judge_writes(
    state: FusionState,
    config: FusionConfig,
    model_factory: ModelFactory,
    kind: str,
    answers: dict[str, str],
) -> tuple[dict[str, Any], JudgeTests | JudgeProgram | None]:
    """The judge's one call: tests for code, a program for math. (its record, what it wrote)"""
    spec = judge_spec(config)
    question = last_user_text(without_images(state["messages"]))
    messages = (
        tests_messages(question, list(answers.values()))
        if kind == "code"
        else program_messages(question)
    )
    schema: type[JudgeTests] | type[JudgeProgram] = JudgeTests if kind == "code" else JudgeProgram
    model = quiet(model_factory(spec))
    spent: list[Usage] = []
    info: dict[str, Any] = {"model": spec.name, "wrote": "tests" if kind == "code" else "program"}
    cutoff = run_deadline_cutoff(state.get("started_at"), config.deadline_s, share=JUDGE_SHARE)
    timeout = None if cutoff is None else max(cutoff - time.monotonic(), 0.0)
    started = time.monotonic()
    written = None
    try:
        work = ask_judge(model, spec.resolved_structured_output(), messages, schema, spent)
        written = await asyncio.wait_for(work, timeout)
        info.update(ok=True, error=None)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        message = "cut off at the judge's share of the run deadline (deadline_s)"
        info.update(ok=False, error={"reason": "deadline", "message": message})
    except Exception as exc:
        info.update(ok=False, error={"reason": failure_reason(exc), "message": describe(exc)})
    finally:
        await close_model(model)
    usage: Usage = functools.reduce(add_usage, spent, empty_usage())
    info["usage"] = usage
    info["latency_s"] = round(time.monotonic() - started, 3)
    return info, written


def after_verify(state: FusionState) -> str:
    """verify's conditional edge: finish (or synthesis with the caller's tools) with a winner,
    else the judge, selecting."""
    return state["aggregation"]["route"]
