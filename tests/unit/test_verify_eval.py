"""The eval's `fusion:verify` on HumanEval items and a user's task file: the judge writes its
tests from the question (here, from the docstring's examples), the item's hidden tests are
never shown to any model nor passed as `verify_tests`, and the right answer is scored right."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from fusiongraph.evals.arms import build_arms
from fusiongraph.evals.evaluate import arun_eval
from fusiongraph.evals.items import load_items
from fusiongraph.tools.sandbox import bwrap_problem
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json
from tests.unit.test_eval_code import TASKS, replying

pytestmark = pytest.mark.skipif(
    bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)
EXAMPLE = re.compile(r">>> (\w+)\((.*)\)\n\s*(\S.*)")


def writing_judge(messages: list[BaseMessage]) -> str:
    """A judge that writes its tests from what it is shown: the docstring's examples."""
    if not str(messages[0].content).startswith("You write test cases"):
        return judge_json(consensus=["c"])
    shown = str(messages[-1].content)
    found = EXAMPLE.findall(shown)
    tests = [
        {"args": list(ast.literal_eval(f"({args},)")), "expected": ast.literal_eval(result)}
        for _, args, result in found
    ]
    entry = found[0][0] if found else re.findall(r"def (\w+)\(", shown)[0]
    return json.dumps({"entry_point": entry, "tests": tests})


def everything_shown(fake: FakeFactory) -> str:
    """Every message any model of the run was sent."""
    return "\n".join(
        str(message.content)
        for script in fake.scripts.values()
        for call in script.calls
        for message in call
    )


def hidden_calls(tests: str) -> list[str]:
    """The arguments of each call the hidden tests make (`candidate(...)` or the function)."""
    return [m.strip() for m in re.findall(r"assert \w+\((.*)\)\s*(?:==|is|<)", tests) if m.strip()]


def rows(report: Any) -> list[dict[str, Any]]:
    text = (report.folder / "samples.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def test_humaneval_s_hidden_tests_never_reach_the_verifier(tmp_path: Path) -> None:
    fake = FakeFactory(
        {
            "m1": replying("wrong"),
            "m2": replying("wrong"),
            "m3": replying("right"),
            "judge": Script([writing_judge]),
            "synth": Script(["no code here"]),
        }
    )
    items = [i for i in load_items("humaneval") if i.id in TASKS]
    report = await arun_eval(
        items,
        out_dir=tmp_path,
        model_factory=fake,
        concurrency=1,
        arms=["fusion:verify"],
        context=fake_context(["m1", "m2", "m3"]),
    )
    samples = rows(report)
    assert {r["item"]: r["score"]["correct"] for r in samples} == dict.fromkeys(TASKS, True)
    shown = everything_shown(fake)
    for item in items:
        calls = hidden_calls(item.tests or "")
        assert calls, item.tests
        asked = item.messages[-1]["content"]  # what the item shows everyone (its examples)
        leaked = [call for call in calls if call in shown and call not in asked]
        assert not leaked, f"{item.id}: hidden tests shown to a model: {leaked}"
    judged = [c for c in fake.scripts["judge"].calls if "You write test cases" in c[0].content]
    assert len(judged) == len(TASKS)  # the judge wrote the tests, once per item


async def test_a_task_file_s_hidden_tests_never_reach_the_verifier(tmp_path: Path) -> None:
    hidden = "assert median([10, 20, 30, 40]) == 25\nassert median([-7]) == -7\n"
    question = (
        "Write a Python function median(xs) returning the median of a list.\n"
        "    >>> median([3, 1, 2])\n    2\n    >>> median([4, 1, 3, 2])\n    2.5\n"
    )
    item = {
        "id": "median",
        "task_type": "code",
        "messages": [{"role": "user", "content": question}],
        "tests": hidden,
        "entry_point": "median",
    }
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(item) + "\n")
    right = "```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n" + (
        "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```"
    )
    wrong = "```python\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```"
    fake = FakeFactory(
        {
            "m1": [wrong],
            "m2": [wrong],
            "m3": [right],
            "judge": Script([writing_judge]),
            "synth": ["no code here"],
        }
    )
    context = fake_context(["m1", "m2", "m3"])
    report = await arun_eval(
        tasks,
        out_dir=tmp_path / "out",
        model_factory=fake,
        concurrency=1,
        arms=["fusion:verify", "fusion:vote"],
        context=context,
    )
    correct = {r["arm"]: r["score"]["correct"] for r in rows(report)}
    assert correct == {"fusion:verify": True, "fusion:vote": False}
    shown = everything_shown(fake)
    assert "[10, 20, 30, 40]" not in shown and "[-7]" not in shown
    # An eval's context cannot carry tests to the verifier either.
    with pytest.raises(ValueError, match="verify_tests cannot be set for an eval"):
        build_arms({**context, "verify_tests": hidden}, ["fusion:verify"])
