"""`verify` through the whole graph, on scripted panels and a scripted judge: execution beats a
wrong majority where vote and the judge's opinion do not; a judge's wrong test shows in the
record; hanging and flooding code stays inside the sandbox's limits; math where the program
outvotes a wrong majority; the caller's tests; no sandbox; usage, cost and the worst case."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.pricing import worst_case_cost
from fusiongraph.nodes.verify_node import VERIFY_LIMITS, verify_kind
from fusiongraph.tools.sandbox import bwrap_problem
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)

TASK = "Write a Python function median(xs) that returns the median of a list of numbers."
RIGHT = "Here it is:\n```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n" + (
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```"
)
# The same plausible mistake from two panelists (no averaging of the middle pair).
WRONG = "```python\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```"
TESTS = [
    {"args": [[3, 1, 2]], "expected": 2, "reasoning": "odd length: the middle one"},
    {"args": [[4, 1, 3, 2]], "expected": 2.5, "reasoning": "even length: the mean of 2 and 3"},
    {"args": [[5]], "expected": 5, "reasoning": "one element"},
]


def judge(tests: list[dict[str, Any]] | None = None, *, program: str = "", prefers: str = ""):
    """A judge that writes `tests` (or `program`) when verify asks, and otherwise selects the
    response holding `prefers` (its opinion)."""

    def reply(messages: list[BaseMessage]) -> str:
        system = str(messages[0].content)
        if system.startswith("You write test cases"):
            return json.dumps({"entry_point": "median", "tests": tests or []})
        if system.startswith("You check the answer"):
            return json.dumps({"program": program, "reasoning": "computed"})
        shown = re.findall(
            r"Response ([A-Z]):\n(.*?)(?=\n\nResponse [A-Z]:|\Z)", str(messages[-1].content), re.S
        )
        best = next(label for label, text in shown if prefers in text)
        return judge_json(consensus=["c"], best=best, best_reason="the judge's opinion")

    return Script([reply])


def factory(answers: list[str], judge_script: Script) -> FakeFactory:
    scripts: dict[str, Any] = {f"m{i}": [a] for i, a in enumerate(answers, 1)}
    return FakeFactory({**scripts, "judge": judge_script, "synth": ["SYNTHESIZED"]})


async def run(f: FakeFactory, text: str = TASK, **ctx: Any) -> tuple[str, dict[str, Any]]:
    panel = [name for name in f.scripts if name.startswith("m")]
    result = await build_graph(f).ainvoke(
        {"messages": [HumanMessage(content=text)]}, context=fake_context(panel, **ctx)
    )
    final = result["messages"][-1]
    return final.content, final.response_metadata["fusion"]


async def test_a_wrong_majority_wins_vote_and_select_but_verify_runs_the_code() -> None:
    answers = [WRONG, WRONG, RIGHT]
    voted, _ = await run(
        factory(answers, judge(TESTS, prefers="return sorted")), aggregation="vote"
    )
    selected, _ = await run(
        factory(answers, judge(TESTS, prefers="return sorted")), aggregation="select"
    )
    assert voted == WRONG and selected == WRONG  # agreement and the judge's opinion: wrong
    f = factory(answers, judge(TESTS, prefers="return sorted"))
    content, fusion = await run(f, aggregation="verify")
    assert content == RIGHT  # verbatim: no rewrite
    assert len(f.scripts["judge"].calls) == 1 and not f.scripts["synth"].calls
    agg = fusion["aggregation"]
    assert agg["final"] == "verify" and agg["selected"]["panelist"] == "p3"
    checked = agg["verify"]
    assert checked["kind"] == "code" and checked["tests"]["source"] == "judge"
    assert [c["reasoning"] for c in checked["tests"]["cases"]] == [t["reasoning"] for t in TESTS]
    assert {p: c["passed"] for p, c in checked["candidates"].items()} == {
        "p1": [True, False, True],
        "p2": [True, False, True],
        "p3": [True, True, True],
    }
    assert checked["groups"] == [["p1", "p2"], ["p3"]]
    assert checked["why"] == "p3 passed 3 of 3 tests" and checked["sandbox_s"] > 0
    # The judge saw the task and the signature, never a candidate's body.
    shown = str(f.scripts["judge"].calls[0][-1].content)
    assert "def median(xs):" in shown and "sorted" not in shown


async def test_a_judge_s_wrong_test_shows_in_the_record_and_nothing_passing_selects() -> None:
    wrong_test = {"args": [[1, 2]], "expected": 1, "reasoning": "the smaller middle one"}
    content, fusion = await run(
        factory([WRONG, RIGHT], judge([*TESTS, wrong_test])), aggregation="verify"
    )
    checked = fusion["aggregation"]["verify"]
    assert content == RIGHT
    assert [c["passed"][3] for c in checked["candidates"].values()] == [False, False]
    assert checked["tests"]["cases"][3] == {
        "call": "median([1, 2])",
        "expected": "1",
        "check": "eq",
        "reasoning": "the smaller middle one",
    }
    # Only wrong tests: nobody passes, verify says so and the judge selects (a second call).
    f = factory([WRONG, RIGHT], judge([wrong_test], prefers="return sorted"))
    content, fusion = await run(f, aggregation="verify")
    agg = fusion["aggregation"]
    assert content == WRONG and agg["final"] == "select"
    assert agg["fallback"] == "verify: no candidate passed any test: the judge selects instead"
    assert len(f.scripts["judge"].calls) == 2
    assert agg["calls"] == {"made": 4, "full_path": 5}  # two answers, two judge calls


async def test_code_that_hangs_or_floods_is_cut_by_the_sandbox_within_the_run() -> None:
    hangs = "```python\ndef median(xs):\n    while True:\n        pass\n```"
    floods = RIGHT.replace("    s = sorted", "    print('x' * 1_000_000)\n    s = sorted")
    forks = "```python\nimport os\ndef median(xs):\n    while True:\n        os.fork()\n```"
    f = factory([hangs, floods, forks], judge(TESTS))
    content, fusion = await run(f, aggregation="verify", deadline_s=60)
    checked = fusion["aggregation"]["verify"]
    assert content == floods
    assert checked["candidates"]["p1"]["ran"] in ("timeout", "cpu_limit")
    assert checked["candidates"]["p2"]["passed"] == [True, True, True]
    assert checked["candidates"]["p3"]["passed"] == [False, False, False]


async def test_the_run_s_deadline_cuts_a_hanging_candidate() -> None:
    hangs = "```python\ndef median(xs):\n    while True:\n        pass\n```"
    f = factory([hangs, RIGHT], judge(TESTS))
    content, fusion = await run(f, aggregation="verify", deadline_s=2.0)
    checked = fusion["aggregation"]["verify"]
    # The hanging candidate's limit was cut to what the run had left (its own is longer), and
    # the right one ran beside it.
    assert checked["candidates"]["p1"]["ran"] in ("timeout", "cpu_limit")
    assert checked["candidates"]["p1"]["timeout_s"] < VERIFY_LIMITS.timeout_s
    assert content == RIGHT and checked["winner"] == "p2"


async def test_math_a_program_outvotes_a_wrong_majority() -> None:
    question = "A box holds 12 eggs. How many eggs are in 7 boxes?"
    answers = ["7 boxes of 12: Answer: 74", "12 * 7 = 74. Answer: 74", "12 per box, 7 boxes: 84"]
    voted, _ = await run(
        factory(answers, judge(program="print(7 * 12)")), question, aggregation="vote"
    )
    assert voted == answers[0]
    f = factory(answers, judge(program="print(7 * 12)"))
    content, fusion = await run(f, question, aggregation="auto")
    agg = fusion["aggregation"]
    assert content == answers[2] and agg["applied"] == "verify" and agg["task"] == "math"
    checked = agg["verify"]
    assert checked["kind"] == "math" and checked["computed"] == "84"
    assert checked["program"] == "print(7 * 12)" and checked["program_output"]["stdout"] == "84\n"
    assert checked["disagreement"] is True and "majority said 74" in checked["why"]
    assert checked["judge"]["wrote"] == "program"


async def test_the_caller_s_tests_are_used_and_the_judge_writes_none() -> None:
    cases = [{"call": "median([4, 1, 3, 2])", "expected": 2.5}, {"args": [[9]], "expected": 9}]
    f = factory([WRONG, RIGHT], judge(prefers="return sorted"))
    content, fusion = await run(f, aggregation="verify", verify_tests=cases)
    checked = fusion["aggregation"]["verify"]
    assert content == RIGHT and not f.scripts["judge"].calls
    assert checked["tests"]["source"] == "caller" and checked["judge"] is None
    assert [c["call"] for c in checked["tests"]["cases"]] == ["median([4, 1, 3, 2])", "median([9])"]
    asserts = "assert median([1, 2]) == 1.5\nassert median([7]) == 7\n"
    content, fusion = await run(
        factory([WRONG, RIGHT], judge()), aggregation="verify", verify_tests=asserts
    )
    assert content == RIGHT
    assert fusion["aggregation"]["verify"]["tests"]["conversion"] == "converted: 2 cases"


async def test_the_caller_s_python_runs_only_under_bubblewrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FUSIONGRAPH_SANDBOX", "process")
    asserts = "assert median([1, 2]) == 1.5\n"
    f = factory([WRONG, RIGHT], judge(prefers="s = sorted"))
    content, fusion = await run(f, aggregation="verify", verify_tests=asserts)
    agg = fusion["aggregation"]
    assert content == RIGHT and agg["final"] == "select"
    assert "runs only under bubblewrap" in agg["fallback"]
    cases = [{"call": "median([1, 2])", "expected": 1.5}]  # data, not code: these still run
    content, fusion = await run(
        factory([WRONG, RIGHT], judge()), aggregation="verify", verify_tests=cases
    )
    assert content == RIGHT and fusion["aggregation"]["final"] == "verify"


async def test_no_sandbox_falls_back_to_select_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fusiongraph.tools.sandbox.bwrap_problem", lambda: "no bwrap (test)")
    monkeypatch.delenv("FUSIONGRAPH_SANDBOX", raising=False)
    f = factory([WRONG, RIGHT], judge(TESTS, prefers="s = sorted"))
    content, fusion = await run(f, aggregation="verify")
    checked = fusion["aggregation"]["verify"]
    assert content == RIGHT and fusion["aggregation"]["final"] == "select"
    assert checked["error"].startswith("sandbox unavailable: ")
    assert "no bwrap (test)" in checked["error"] and "FUSIONGRAPH_SANDBOX" in checked["error"]
    assert len(f.scripts["judge"].calls) == 1  # no tests were paid for


async def test_the_judge_s_call_counts_in_usage_cost_and_the_worst_case() -> None:
    prices = {"judge": {"input": 1.0, "output": 2.0}, "m1": {"input": 1.0, "output": 1.0}}
    prices |= {"m2": {"input": 1.0, "output": 1.0}, "synth": {"input": 1.0, "output": 1.0}}
    _, fusion = await run(
        factory([WRONG, RIGHT], judge(TESTS)), aggregation="verify", prices=prices
    )
    usage, cost = fusion["usage"], fusion["cost_usd"]
    assert usage["verify"]["total_tokens"] > 0 and usage["judge"]["total_tokens"] == 0
    assert usage["total"]["total_tokens"] == (
        usage["panel"]["total_tokens"] + usage["verify"]["total_tokens"]
    )
    spent = usage["verify"]
    assert cost["verify"] == round((spent["input_tokens"] + 2 * spent["output_tokens"]) / 1e6, 8)
    assert cost["total"] == round(cost["panel"] + cost["verify"], 8)
    # What it saved: a judge's and a synthesizer's reading of every answer, less verify's call.
    used = [p["usage"] for p in fusion["panel"]]
    read_in = sum(u["input_tokens"] for u in used) // 2 + sum(u["output_tokens"] for u in used)
    read_out = sum(u["output_tokens"] for u in used) // 2
    skipped = (read_in + 2 * read_out) / 1e6 + (read_in + read_out) / 1e6
    assert fusion["aggregation"]["saved"]["cost_usd"] == round(skipped - cost["verify"], 8)
    context = fake_context(["m1", "m2"], prices=prices)
    plain = resolve_config(context)
    checked = resolve_config({**context, "aggregation": "verify"})
    assert worst_case_cost(checked, 100)[0] > worst_case_cost(plain, 100)[0]


async def test_with_the_caller_s_tools_the_winner_is_the_synthesizer_s_draft() -> None:
    tool = {"type": "function", "function": {"name": "save", "parameters": {"type": "object"}}}
    f = factory([WRONG, RIGHT], judge(TESTS))
    content, fusion = await run(f, aggregation="verify", synthesis_tools=[tool])
    assert content == "SYNTHESIZED" and fusion["aggregation"]["draft"] == "p2"
    assert "s = sorted(xs)" in str(f.scripts["synth"].calls[0][0].content)


@pytest.mark.parametrize(
    ("question", "answers", "kind"),
    [
        (TASK, ["def median(xs): ..."], "code"),  # the request says code
        ("Which is faster?", ["```python\nprint(1)\n```"], "code"),  # an answer holds code
        ("How many legs do 7 spiders have?", ["56"], "math"),
        ("When did the Berlin Wall fall?", ["In 1989."], "math"),  # a short numeric answer
        ("Tell me about lighthouses", ["Built in 1850.", "Since 1900."], "math"),  # no rule
        ("Explain why the sky is blue", ["Rayleigh, 1871."], None),  # an open question
        ("Which of the following is a prime? A) 4 B) 7", ["B) 7"], None),  # options: vote's
        ("Tell me about lighthouses", ["They guide ships.", "Since 1900."], None),
    ],
)
def test_what_verify_runs(question: str, answers: list[str], kind: str | None) -> None:
    assert verify_kind({}, question, answers) == kind
