"""verify's decisions on scripted panel answers: execution beats a wrong majority, a judge's
wrong test shows in the record, hostile or hanging code loses without stopping the others,
and a program outvotes a wrong majority on math."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from fusiongraph.nodes.verify import ExpectedCall, verify_code, verify_math
from fusiongraph.tools.sandbox import Limits, bwrap_problem

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)

RIGHT = "Here it is:\n```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n" + (
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```"
)
# The same plausible mistake twice (no averaging of the middle pair): a majority that is wrong.
WRONG = "```python\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```"
PAIRS = [
    ExpectedCall(args=[[3, 1, 2]], expected=2, reasoning="odd length: the middle one"),
    ExpectedCall(args=[[4, 1, 3, 2]], expected=2.5, reasoning="even length: the mean of 2 and 3"),
    ExpectedCall(args=[[5]], expected=5, reasoning="one element"),
]


def test_a_right_minority_beats_a_wrong_majority_and_the_judge_s_preference() -> None:
    answers = {"p1": WRONG, "p2": WRONG.replace("xs", "values"), "p3": RIGHT}
    # What the other strategies would do: vote counts the identical behaviour of p1 and p2,
    # and a judge that prefers p1 by opinion would select it.
    record = verify_code(answers, pairs=PAIRS, preference=["p1", "p2", "p3"])
    assert record["winner"] == "p3" and record["fallback"] is None
    assert record["tests"]["entry_point"] == "median"
    assert record["groups"] == [["p1", "p2"], ["p3"]]
    assert record["candidates"]["p1"]["passed"] == [True, False, True]
    assert record["candidates"]["p3"]["passed"] == [True, True, True]
    assert record["candidates"]["p1"]["outputs"][1] == "3"
    assert record["why"].startswith("p3 passed 3 of 3 tests")
    assert record["sandbox_s"] > 0


def test_a_judge_s_wrong_test_shows_in_the_record() -> None:
    nobody = ExpectedCall(args=[[1, 2]], expected=1, reasoning="(wrong: the median is 1.5)")
    record = verify_code({"p1": WRONG, "p2": RIGHT}, pairs=[*PAIRS, nobody])
    assert record["winner"] == "p2"
    assert [c["passed"][3] for c in record["candidates"].values()] == [False, False]
    assert record["tests"]["cases"][3]["reasoning"] == "(wrong: the median is 1.5)"
    # A wrong test that the wrong answer happens to pass misleads verify into a tie: the record
    # shows the right answer failing only that test, and the tie broken by the judge's order.
    misleading = nobody.model_copy(update={"expected": 2})
    record = verify_code({"p1": WRONG, "p2": RIGHT}, pairs=[*PAIRS, misleading])
    assert record["candidates"]["p2"]["passed"] == [True, True, True, False]
    assert record["candidates"]["p1"]["passed"] == [True, False, True, True]
    assert "tied with" in record["why"]
    only_wrong = verify_code(
        {"p1": WRONG, "p2": RIGHT}, pairs=[nobody.model_copy(update={"expected": 99})]
    )
    assert only_wrong["winner"] is None and only_wrong["fallback"] == "select"
    assert "no candidate passed" in only_wrong["why"]


def test_equal_passes_go_to_the_larger_behaviour_group_then_the_judge() -> None:
    other_right = RIGHT.replace("s = sorted(xs)", "s = list(sorted(xs))")
    answers = {"p1": RIGHT, "p2": WRONG, "p3": other_right}
    pairs = PAIRS[:1]  # all three pass; p1 and p3 behave alike on it, and so does p2
    record = verify_code(answers, pairs=pairs, preference=["p3", "p1", "p2"])
    assert record["groups"] == [["p1", "p2", "p3"]]
    assert record["winner"] == "p3" and "the judge preferred it" in record["why"]


def test_hanging_flooding_and_hostile_candidates_lose_without_stopping_the_others() -> None:
    answers = {
        "hangs": "```python\ndef median(xs):\n    while True:\n        pass\n```",
        "floods": RIGHT.replace("    s = sorted", "    print('x' * 50_000)\n    s = sorted"),
        "forges": (
            "```python\nclass Anything:\n    def __eq__(self, other):\n        return True\n"
            "def median(xs):\n    return Anything()\n```"
        ),
        "exits": "```python\nimport os\ndef median(xs):\n    os._exit(0)\n```",
    }
    record = verify_code(answers, pairs=PAIRS, limits=Limits(timeout_s=2))
    assert record["winner"] == "floods"
    assert record["candidates"]["hangs"]["ran"] in ("timeout", "cpu_limit")
    assert record["candidates"]["forges"]["passed"] == [False, False, False]
    assert "not plain data" in record["candidates"]["forges"]["outputs"][0]
    assert record["candidates"]["exits"]["passed"] == [False, False, False]


def test_the_caller_s_unit_tests_are_used_as_cases_or_as_written() -> None:
    tests = (
        "def check(candidate):\n    assert candidate([1, 2]) == 1.5\n"
        "    assert candidate([7]) == 7\n"
    )
    record = verify_code({"p1": WRONG, "p2": RIGHT}, unit_tests=tests, source="caller")
    assert record["tests"]["source"] == "caller"
    assert record["tests"]["conversion"] == "converted: 2 cases" and record["winner"] == "p2"
    whole = "def check(candidate):\n    got = candidate([1, 2])\n    assert got == 1.5\n"
    record = verify_code({"p1": WRONG, "p2": RIGHT}, unit_tests=whole, source="caller")
    assert record["tests"]["conversion"].startswith("unconverted")
    assert record["candidates"]["p1"]["passed"] == [False]
    assert record["winner"] == "p2"


def test_no_common_function_or_no_tests_falls_back_to_select() -> None:
    assert verify_code({"p1": "no code at all"}, pairs=PAIRS)["fallback"] == "select"
    assert verify_code({"p1": RIGHT}, pairs=[])["why"].startswith("no tests to run")


def test_math_a_program_outvotes_a_wrong_majority_and_the_disagreement_is_recorded() -> None:
    answers = {
        "p1": "Each box holds 12, so 7 boxes hold 74. Answer: 74",
        "p2": "7 * 12 = 74. Answer: 74",
        "p3": "12 per box times 7 boxes. Answer: 84",
    }
    assert Counter(["74", "74", "84"]).most_common(1)[0][0] == "74"  # what vote would pick
    record = verify_math(answers, "print(7 * 12)\n")
    assert record["winner"] == "p3" and record["computed"] == "84"
    assert record["disagreement"] and "majority said 74" in record["why"]
    assert record["program_output"]["stdout"] == "84\n"


def test_math_a_program_that_fails_leaves_the_vote_standing() -> None:
    answers = {"p1": "Answer: 5", "p2": "Answer: 5", "p3": "Answer: 6"}
    record = verify_math(answers, "raise SystemExit(1)\n")
    assert record["computed"] is None and record["winner"] == "p1"
    assert "vote's 5 stands" in record["why"] and not record["disagreement"]
    tie = verify_math(
        {"p1": "Answer: 5", "p2": "Answer: 6"},
        "while True:\n    pass\n",
        limits=Limits(timeout_s=1),
    )
    assert tie["winner"] is None and tie["fallback"] == "select"


def test_math_weighted_vote_lets_one_strong_member_outvote_two_weak_ones() -> None:
    """Calibrated auto chose verify: when the program decides nothing, the members' calibrated
    log odds weigh their votes, as in the vote strategy."""
    answers = {"p1": "Answer: 5", "p2": "Answer: 5", "p3": "Answer: 6"}
    plain = verify_math(answers, "")
    assert plain["winner"] == "p1" and plain["vote"] == {"5": 2, "6": 1}
    weighted = verify_math(answers, "", weights={"p1": 0.01, "p2": 0.2, "p3": 1.1})
    assert weighted["winner"] == "p3" and weighted["vote"] == {"6": 1.1, "5": 0.21}
    assert weighted["weights"] == {"p1": 0.01, "p2": 0.2, "p3": 1.1}
    confirmed = verify_math(answers, "print(5)\n", weights={"p1": 0.01, "p2": 0.2, "p3": 1.1})
    assert confirmed["winner"] == "p2"  # of the members the program confirms, the heaviest
