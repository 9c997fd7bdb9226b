"""`verify`: the panel's answers checked by execution, not by a judge's opinion.

On code, geometry and math a judge's opinion of which answer is right is weak, and rewriting
from a summary is worse; running the answers is what works (CodeT: candidates run on generated
tests, picked by dual execution agreement; AlphaCode: candidates clustered by behaviour on
generated inputs; program-aided answers check arithmetic by running it). The two decisions,
on plain data, with the sandbox (fusiongraph.tools.sandbox) as the only runner:

- `verify_code`: every panel answer's code is a candidate; the tests are the caller's (unit
  tests, or input/expected pairs) or the judge's (`JudgeTests`: inputs, expected outputs and the
  reasoning per case). Every candidate runs on every test; candidates with identical outputs on
  every input form a group (behavioural agreement). The winner: most tests passed, then the
  largest group, then the judge's preference. When nothing runs or nothing passes, the record
  says to fall back to `select`, and why.
- `verify_math`: each answer's final value (as the vote extracts it), and a short program the
  judge wrote (`JudgeProgram`) run in the sandbox: the answer the program's output confirms
  wins, else the vote's; a disagreement between them is recorded.

The record of each is what `fusion.aggregation.verify` holds: the tests and where they came
from, each candidate's pass/fail per test and outputs, the groups, the program and its output,
why the winner won, and the sandbox's time. A judge that writes a wrong test misleads verify;
the record shows it as a test every candidate fails, or one the winner fails while the group
that agrees on all other tests passes.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, Field

from fusiongraph.graph.answers import extract_answer, extract_code, normalise_answer
from fusiongraph.graph.calibration import MIN_WEIGHT
from fusiongraph.tools.check_cases import Case, convert, run_tests
from fusiongraph.tools.sandbox import (
    Backend,
    Call,
    CallOutcome,
    CallsResult,
    Limits,
    ProgramResult,
    run_calls,
    run_program,
)
from fusiongraph.tools.sandbox_harness import encode

__all__ = ["ExpectedCall", "JudgeProgram", "JudgeTests", "verify_code", "verify_math"]

MAX_SHOWN_CHARS = 300
NOT_RUN = "not run: the run's deadline left no time"
MIN_RUN_S = 0.2  # less time left than this: a run would only time out
PARALLEL_RUNS = 2  # a run's candidates in their sandboxes at once
# Sandboxes of every run in this process at once: one per core, so concurrent verify runs queue
# (each run's time left is taken when its turn comes) instead of crowding the machine.
SANDBOX_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 2)
TestSource = Literal["caller", "judge"]


class ExpectedCall(BaseModel):
    """One test the judge (or the caller) writes: the arguments, the expected result, and why
    that result is right."""

    args: list[Any] = Field(description="the positional arguments of the call, as JSON values")
    expected: Any = Field(description="the result the function must return, as a JSON value")
    reasoning: str = Field(default="", description="why that is the right result")


class JudgeTests(BaseModel):
    """What the judge writes for `verify` on code: the function to call and its tests."""

    entry_point: str = Field(description="the name of the function the answers must define")
    tests: list[ExpectedCall] = Field(
        description="inputs with expected outputs, edge cases included"
    )


class JudgeProgram(BaseModel):
    """What the judge writes for `verify` on math: a program that prints the answer."""

    program: str = Field(description="Python (standard library only) printing the final answer")
    reasoning: str = Field(default="", description="how the program computes it")


def verify_code(
    answers: Mapping[str, str],
    *,
    entry_point: str | None = None,
    unit_tests: str | None = None,
    pairs: Sequence[ExpectedCall] = (),
    source: TestSource = "judge",
    preference: Sequence[str] = (),
    limits: Limits | None = None,
    backend: Backend | None = None,
    cutoff: float | None = None,
) -> dict[str, Any]:
    """Run every answer's code on every test and pick the winner (see the module docstring).
    `answers`: label -> the panelist's reply; `unit_tests` (the caller's, in the eval's test
    form) or `pairs`; `preference`: labels, best first, as the judge ranked them (none: panel
    order); `cutoff` (time.monotonic): no run goes past it, and a candidate it leaves no time
    for is not run."""
    limits = limits or Limits()
    codes = {label: extract_code(text) for label, text in answers.items()}
    entry = entry_point or _common_entry_point(codes.values())
    record: dict[str, Any] = {
        "kind": "code",
        "tests": {"source": source, "entry_point": entry, "cases": [], "conversion": None},
        "candidates": {},
        "groups": [],
        "winner": None,
        "why": "",
        "fallback": None,
        "sandbox_s": 0.0,
    }
    if entry is None:
        return _fallback(record, "no function to call: the answers define none in common")
    cases, conversion = _cases(entry, unit_tests, pairs, backend)
    record["tests"]["conversion"] = conversion
    record["tests"]["cases"] = [_shown_case(entry, case) for case in cases]
    if unit_tests and not cases:
        return _run_whole_tests(
            record, codes, unit_tests, entry, limits, backend, preference, cutoff
        )
    if not cases:
        return _fallback(record, "no tests to run")
    calls = [Call(entry, case.args, case.kwargs) for case in cases]

    def run_one(code: str) -> tuple[Limits, CallsResult] | None:
        with SANDBOX_SLOTS:
            now = _within(limits, cutoff)
            if now is None:
                return None
            return now, run_calls(code, calls, limits=now, backend=backend)

    signatures: dict[str, str] = {}
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:  # a hanging one does not hold the others
        runs = list(pool.map(run_one, codes.values()))
    for label, run in zip(codes, runs, strict=True):
        if run is None:
            record["candidates"][label] = _not_run(len(calls))
            continue
        given, ran = run
        record["sandbox_s"] += ran.seconds
        passed = [case.judge(outcome) for case, outcome in zip(cases, ran.outcomes, strict=True)]
        record["candidates"][label] = {
            "ran": ran.reason,
            "passed": passed,
            "outputs": [_shown_outcome(o) for o in ran.outcomes],
            "error": ran.error[-MAX_SHOWN_CHARS:],
            "timeout_s": round(given.timeout_s, 2),  # its limit, cut to the run's time left
        }
        if ran.reason == "completed":
            signatures[label] = _signature(ran.outcomes)
    record["groups"] = _groups(signatures, list(codes))
    return _decide(record, preference)


def _cases(
    entry: str, unit_tests: str | None, pairs: Sequence[ExpectedCall], backend: Backend | None
) -> tuple[list[Case], str | None]:
    if unit_tests:
        conversion = convert(unit_tests, entry, backend=backend)
        return list(conversion.cases or ()), conversion.note
    return [
        Case("eq", tuple(pair.args), {}, expected=pair.expected, source=pair.reasoning)
        for pair in pairs
    ], None


def _run_whole_tests(
    record: dict[str, Any],
    codes: Mapping[str, str],
    unit_tests: str,
    entry: str,
    limits: Limits,
    backend: Backend | None,
    preference: Sequence[str],
    cutoff: float | None,
) -> dict[str, Any]:
    """Unit tests that do not convert to cases: one pass/fail per candidate, no groups."""
    record["tests"]["cases"] = [{"call": "the caller's unit tests, as written", "expected": ""}]
    for label, code in codes.items():
        with SANDBOX_SLOTS:
            now = _within(limits, cutoff)
            result = None
            if now is not None:
                result = run_tests(code, unit_tests, entry, limits=now, backend=backend)
        if result is None:
            record["candidates"][label] = _not_run(1)
            continue
        record["sandbox_s"] += result.seconds
        record["candidates"][label] = {
            "ran": result.reason,
            "passed": [result.passed],
            "outputs": [],
            "error": result.error[-MAX_SHOWN_CHARS:],
        }
    record["groups"] = [[label] for label in codes]
    return _decide(record, preference)


def _within(limits: Limits, cutoff: float | None) -> Limits | None:
    """The limits of a run that starts now, its timeout cut to the time left (None: none)."""
    if cutoff is None:
        return limits
    left = cutoff - time.monotonic()
    if left < MIN_RUN_S:
        return None
    return dataclasses.replace(limits, timeout_s=min(limits.timeout_s, left))


def _not_run(tests: int) -> dict[str, Any]:
    return {
        "ran": "deadline",
        "passed": [False] * tests,
        "outputs": ["(not run)"] * tests,
        "error": NOT_RUN,
    }


def _decide(record: dict[str, Any], preference: Sequence[str]) -> dict[str, Any]:
    candidates = record["candidates"]
    if not any(c["ran"] in ("completed", "passed", "failed") for c in candidates.values()):
        return _fallback(record, "no candidate ran")
    scores = {label: sum(c["passed"]) for label, c in candidates.items()}
    if max(scores.values(), default=0) == 0:
        return _fallback(record, "no candidate passed any test")
    group_of = {label: len(group) for group in record["groups"] for label in group}
    rank = {label: i for i, label in enumerate(preference)}
    order = list(candidates)
    winner = max(
        order,
        key=lambda label: (
            scores[label],
            group_of.get(label, 1),
            -rank.get(label, len(rank) + order.index(label)),
        ),
    )
    total = len(candidates[winner]["passed"])
    why = f"{winner} passed {scores[winner]} of {total} tests"
    tied = [label for label in order if label != winner and scores[label] == scores[winner]]
    if tied:
        peers = [label for label in tied if group_of.get(label, 1) == group_of.get(winner, 1)]
        if len(peers) < len(tied):
            why += "; of those that did as well, its behaviour is shared by the most answers"
        else:
            by = "the judge preferred it" if preference else "the first in panel order"
            why += f"; tied with {', '.join(peers)} on tests and agreement: {by}"
    record.update(winner=winner, why=why)
    return record


def _fallback(record: dict[str, Any], why: str) -> dict[str, Any]:
    record.update(winner=None, fallback="select", why=f"{why}: the judge selects instead")
    return record


def _signature(outcomes: Sequence[CallOutcome | None]) -> str:
    """What a candidate did on every input, comparable across candidates."""
    return json.dumps(
        [
            ["ok", encode(o.value)] if o and o.ok else ["error", (o.error or "")[:80] if o else ""]
            for o in outcomes
        ],
        sort_keys=True,
    )


def _groups(signatures: Mapping[str, str], order: Sequence[str]) -> list[list[str]]:
    """Candidates with identical behaviour, largest group first; one that did not complete is
    a group of its own."""
    groups: dict[str, list[str]] = {}
    for label in order:
        groups.setdefault(signatures.get(label, f"incomplete:{label}"), []).append(label)
    return sorted(groups.values(), key=lambda g: (-len(g), order.index(g[0])))


def _common_entry_point(codes: Sequence[str] | Any) -> str | None:
    """The function most answers define at top level (the first one each defines)."""
    names = []
    for code in codes:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        first = next((n.name for n in tree.body if isinstance(n, ast.FunctionDef)), None)
        if first:
            names.append(first)
    return Counter(names).most_common(1)[0][0] if names else None


def _shown_case(entry: str, case: Case) -> dict[str, Any]:
    arguments = ", ".join(repr(a) for a in case.args)
    return {
        "call": f"{entry}({arguments})"[:MAX_SHOWN_CHARS],
        "expected": repr(case.expected)[:MAX_SHOWN_CHARS],
        "check": case.kind,
        "reasoning": case.source[:MAX_SHOWN_CHARS],
    }


def _shown_outcome(outcome: CallOutcome | None) -> str:
    if outcome is None:
        return "(not run)"
    if outcome.ok:
        return repr(outcome.value)[:MAX_SHOWN_CHARS]
    return f"error: {(outcome.error or '').strip().splitlines()[-1:]}"[:MAX_SHOWN_CHARS]


def verify_math(
    answers: Mapping[str, str],
    program: str,
    *,
    how: str = "auto",
    limits: Limits | None = None,
    backend: Backend | None = None,
    cutoff: float | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Each answer's final value against what the judge's `program` prints (its last line).
    `cutoff` as for verify_code: the program's run is cut there. `weights` (a calibration
    profile's log odds per member, as for the vote strategy) make the vote a weighted one, so a
    strong member outvotes two weak ones when the program decides nothing."""
    finals = {}
    for label, text in answers.items():
        value = extract_answer(text, how)
        finals[label] = normalise_answer(value) if value else None
    ran = ProgramResult("no program", None, "", "")
    if program.strip():
        with SANDBOX_SLOTS:
            now = _within(limits or Limits(), cutoff)
            if now is None:
                ran = ProgramResult("deadline", None, "", NOT_RUN)
            else:
                ran = run_program(program, limits=now, backend=backend)
    lines = [line for line in ran.stdout.splitlines() if line.strip()]
    computed = None
    if ran.reason == "exited" and ran.exit_code == 0 and lines:
        value = extract_answer(lines[-1], how) or lines[-1].strip()
        computed = normalise_answer(value)
    votes: dict[str, float] = {}
    for label, value in finals.items():
        if value is not None:
            votes[value] = votes.get(value, 0) + (weights.get(label, MIN_WEIGHT) if weights else 1)
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    vote_winner = (
        ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    )
    confirmed = [label for label, value in finals.items() if computed and value == computed]

    def heaviest(labels: list[str]) -> str:
        """Of members giving the same answer, the one whose text is returned: the first in panel
        order, or the heaviest by calibrated weight."""
        return (
            max(labels, key=lambda label: weights.get(label, MIN_WEIGHT)) if weights else labels[0]
        )

    record: dict[str, Any] = {
        "kind": "math",
        "finals": finals,
        "program": program,
        "program_output": {
            "ran": ran.reason,
            "exit_code": ran.exit_code,
            "stdout": ran.stdout[-MAX_SHOWN_CHARS:],
            "stderr": ran.stderr[-MAX_SHOWN_CHARS:],
        },
        "computed": computed,
        "confirmed": confirmed,
        "vote": {value: round(n, 4) for value, n in ranked},
        "weights": dict(weights) if weights else None,
        "winner": None,
        "disagreement": bool(computed and vote_winner and computed != vote_winner),
        "why": "",
        "fallback": None,
        "sandbox_s": ran.seconds,
    }
    if confirmed:
        winner = heaviest(confirmed)
        record.update(winner=winner, why=f"the program computed {computed}, as {winner} answered")
        if record["disagreement"]:
            record["why"] += f" (the vote's majority said {vote_winner})"
    elif vote_winner is not None:
        winner = heaviest([label for label, value in finals.items() if value == vote_winner])
        shown = f"computed {computed}" if computed else f"did not compute ({ran.reason})"
        record.update(
            winner=winner,
            why=f"the program {shown}; no answer matches it, so the vote's {vote_winner} stands",
        )
    else:
        _fallback(record, "neither the program nor the vote decides")
    return record
