"""Scorers by task type, and the pairwise comparison against a baseline answer.

- exact (math, short answers): the reply's final answer (fusiongraph.graph.answers.extract_answer
  with the item's `answer_how`; a reply of one short line is its own answer) equals the target
  once both are normalised (numbers, units, case, punctuation).
- choice (multiple choice): the option letter the reply picks (or, failing that, the one option
  whose text it names) equals the target letter.
- code: the reply's code (its fenced block(s), else the whole text) passes the item's unit tests
  in the sandbox (fusiongraph.tools.check_cases.run_tests): pass@1. The tests become
  input/expected cases where they convert, and the reply's outputs are compared outside its
  sandbox; the explanation names the mode and the conversion.
- graded (research, open-ended): a grader model's verdict against the reference answer and/or
  rubric: CORRECT (value 1), PARTIAL (0.5), INCORRECT (0), or its 0-10 score. A missing,
  failing or unreadable grader is a Score with `error` set and an explanation, never an
  exception.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from fusiongraph.evals.grader import (
    COMPARE_SYSTEM,
    GRADE_SYSTEM,
    Grader,
    GraderReply,
    Preference,
    compare_prompt,
    grade_prompt,
    parse_grade,
    parse_preference,
)
from fusiongraph.evals.items import EvalItem
from fusiongraph.graph.answers import (
    extract_answer,
    extract_code,
    named_option,
    normalise_answer,
)
from fusiongraph.graph.state import Usage, add_usage, empty_usage
from fusiongraph.tools.check_cases import run_tests
from fusiongraph.tools.sandbox import Limits

__all__ = ["Comparison", "Grader", "Outcome", "Score", "compare", "compare_detailed", "score"]

Outcome = Literal["win", "tie", "loss"]
MAX_EXPLANATION_CHARS = 2000
MAX_SHORT_REPLY_CHARS = 100
DEFAULT_TIMEOUT_S = Limits().timeout_s
DEFAULT_MEMORY_MB = Limits().memory_mb


class Score(BaseModel):
    """How one answer scored. `error` is set when it could not be scored (no grader, the
    grader failed or gave no readable verdict): such a score is not a judgement of the answer."""

    correct: bool
    value: float = Field(ge=0.0, le=1.0)
    extracted: str | None = None
    explanation: str = ""
    usage: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float | None = None
    error: str | None = None


async def score(
    item: EvalItem,
    answer: str,
    *,
    grader: Grader | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> Score:
    """Score `answer` with the item's scorer (its own, else its task type's)."""
    scorer = item.effective_scorer
    if scorer == "exact":
        return score_exact(item, answer)
    if scorer == "choice":
        return score_choice(item, answer)
    if scorer == "code":
        return await score_code(item, answer, timeout_s=timeout_s, memory_mb=memory_mb)
    return await score_graded(item, answer, grader)


def score_exact(item: EvalItem, answer: str) -> Score:
    extracted = extract_answer(answer, item.answer_how)
    if extracted is None and _is_short(answer):
        extracted = answer.strip()
    if extracted is None:
        return Score(correct=False, value=0.0, explanation="no final answer found in the reply")
    got, want = normalise_answer(extracted), normalise_answer(item.target or "")
    correct = got == want
    return Score(
        correct=correct,
        value=float(correct),
        extracted=extracted,
        explanation=f"answer {got!r} {'==' if correct else '!='} target {want!r}",
    )


def score_choice(item: EvalItem, answer: str) -> Score:
    how = item.answer_how if item.answer_how != "auto" else "letter"
    extracted = extract_answer(answer, how)
    letter = normalise_answer(extracted) if extracted else named_option(answer, item.choices or [])
    if letter is None:
        return Score(correct=False, value=0.0, explanation="the reply picks no option")
    correct = letter == item.target
    return Score(
        correct=correct,
        value=float(correct),
        extracted=letter,
        explanation=f"picked {letter}, the answer is {item.target}",
    )


async def score_code(item: EvalItem, answer: str, *, timeout_s: float, memory_mb: int) -> Score:
    code = program(item, answer)
    prefix = item.metadata.get("code_prefix")
    result = await asyncio.to_thread(
        run_tests,
        code,
        item.tests or "",
        item.entry_point,
        prefix=prefix if isinstance(prefix, str) else "",
        limits=Limits(timeout_s=timeout_s, memory_mb=memory_mb),
    )
    explanation = f"{result.reason} ({result.mode}; {result.conversion})"
    detail = "\n".join(part for part in (result.error, result.output) if part)
    if detail and not result.passed:
        explanation += ": " + detail[-MAX_EXPLANATION_CHARS:]
    return Score(
        correct=result.passed,
        value=float(result.passed),
        extracted=code,
        explanation=explanation,
    )


async def score_graded(item: EvalItem, answer: str, grader: Grader | None) -> Score:
    if grader is None:
        return Score(
            correct=False,
            value=0.0,
            explanation="not graded: this item needs a grader model (give one with `grader`)",
            error="no_grader",
        )
    prompt = grade_prompt(conversation(item), answer, item.target, item.rubric)
    reply = await grader.ask(GRADE_SYSTEM, prompt)
    if reply.text is None:
        return _ungraded(reply, reply.error or "the grader failed", "grader_failed")
    grade = parse_grade(reply.text)
    if grade.verdict is None or grade.value is None:
        shown = reply.text.strip()[:300]
        return _ungraded(reply, f"no verdict in the grader's reply: {shown!r}", "unreadable")
    return Score(
        correct=grade.verdict == "CORRECT",
        value=grade.value,
        extracted=grade.verdict,
        explanation=reply.text.strip()[:MAX_EXPLANATION_CHARS],
        usage=dict(reply.usage),
        cost_usd=reply.cost_usd,
    )


def _ungraded(reply: GraderReply, explanation: str, error: str) -> Score:
    return Score(
        correct=False,
        value=0.0,
        explanation=explanation,
        usage=dict(reply.usage),
        cost_usd=reply.cost_usd,
        error=error,
    )


@dataclass
class Comparison:
    """A pairwise verdict. `orders` is the answer's result with the answer shown first, then
    second (None: that call failed or was unreadable)."""

    outcome: Outcome
    orders: tuple[Outcome | None, Outcome | None]
    explanation: str
    usage: Usage = field(default_factory=empty_usage)
    cost_usd: float | None = None
    error: str | None = None


async def compare(item: EvalItem, answer: str, baseline: str, *, grader: Grader) -> Outcome:
    """`answer` against `baseline`: "win", "tie" or "loss" (see compare_detailed)."""
    return (await compare_detailed(item, answer, baseline, grader=grader)).outcome


async def compare_detailed(
    item: EvalItem, answer: str, baseline: str, *, grader: Grader
) -> Comparison:
    """Ask the grader twice, with the answer shown as A then as B, to remove position bias.

    The rule: each order gives the answer +1 (preferred), 0 (tie) or -1 (the baseline
    preferred); the sum decides. So it wins when it wins both orders or wins one and ties the
    other, loses in the mirror cases, and ties when both orders tie or when the two orders
    disagree (each answer preferred only in one position: that preference was the position's).
    When either call fails or is unreadable the outcome is "tie" with `error` set: one order
    alone cannot separate quality from position.
    """
    question = conversation(item)
    first, second = await asyncio.gather(
        grader.ask(
            COMPARE_SYSTEM, compare_prompt(question, answer, baseline, item.target, item.rubric)
        ),
        grader.ask(
            COMPARE_SYSTEM, compare_prompt(question, baseline, answer, item.target, item.rubric)
        ),
    )
    shown_first = _outcome(first, answer_is="A")
    shown_second = _outcome(second, answer_is="B")
    usage = add_usage(first.usage, second.usage)
    costs = (first.cost_usd, second.cost_usd)
    cost = None if None in costs else sum(c for c in costs if c is not None)
    notes = [
        f"answer as A: {shown_first or 'no verdict'}",
        f"answer as B: {shown_second or 'no verdict'}",
    ]
    if shown_first is None or shown_second is None:
        failed = first if shown_first is None else second
        reason = (
            failed.error or f"no preference in the grader's reply: {(failed.text or '')[:200]!r}"
        )
        return Comparison("tie", (shown_first, shown_second), "; ".join(notes), usage, cost, reason)
    points = {"win": 1, "tie": 0, "loss": -1}
    total = points[shown_first] + points[shown_second]
    outcome: Outcome = "win" if total > 0 else "loss" if total < 0 else "tie"
    return Comparison(outcome, (shown_first, shown_second), "; ".join(notes), usage, cost)


def _outcome(reply: GraderReply, *, answer_is: Preference) -> Outcome | None:
    if reply.text is None:
        return None
    preference = parse_preference(reply.text)
    if preference is None:
        return None
    if preference == "TIE":
        return "tie"
    return "win" if preference == answer_is else "loss"


def conversation(item: EvalItem) -> str:
    """What the grader is shown as the question: the user's message, or the whole exchange."""
    if len(item.messages) == 1:
        return item.messages[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in item.messages)


def program(item: EvalItem, answer: str) -> str:
    """The code to test. With a `code_prefix` (HumanEval's prompt): a reply that does not define
    the entry point is taken as its body and appended to the prefix; one that does gets the
    prefix's imports in front (replies often drop `from typing import List`)."""
    code = extract_code(answer)
    prefix = item.metadata.get("code_prefix")
    if not isinstance(prefix, str) or not item.entry_point:
        return code
    if re.search(rf"^\s*def\s+{re.escape(item.entry_point)}\s*\(", code, re.MULTILINE):
        imports = [line for line in prefix.splitlines() if re.match(r"(?:import|from)\s+\w", line)]
        return "\n".join([*imports, code]) if imports else code
    return prefix + code


def _is_short(answer: str) -> bool:
    text = answer.strip()
    return bool(text) and "\n" not in text and len(text) <= MAX_SHORT_REPLY_CHARS
