"""The bundled suites and one's own task files as inspect tasks (evals/inspect_tasks.py), scored
by our scorers inside a real inspect evaluation on the fake upstream.

A panelist of the fake upstream named `-ans<X>-` ends its answer with "Answer: <X>.", so with
`fusion/custom/p<N>` (that panelist alone) the right and the wrong answer are known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval
from inspect_ai.log import EvalLog

from fusiongraph.evals.items import SUITES

SETTINGS = {
    "panel": ["openai:p1-ans42-0.01s", "openai:p2-ans7-0.01s"],
    "judge": "openai:judge",
    "synthesizer": "openai:synth",
    "tool_mode": "off",
}


def run(task: str, model: str, tmp_path: Path, **task_args: object) -> EvalLog:
    (log,) = inspect_eval(
        task,
        model=model,
        model_args=SETTINGS,
        task_args=task_args,
        log_dir=str(tmp_path / "logs"),
        display="none",
    )
    assert log.status == "success", log.error
    return log


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "six-sevens", "input": "What is 6 times 7?", "target": "42", "task_type": "math"},
        {"id": "forty-two", "input": "Write 42 in digits.", "target": "42.0"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(("panelist", "expected"), [("p1", 1.0), ("p2", 0.0)])
def test_a_task_file_is_scored_by_our_scorer(
    openai_env: str, task_file: Path, tmp_path: Path, panelist: str, expected: float
) -> None:
    log = run("fusiongraph/file", f"fusion/custom/{panelist}", tmp_path, path=str(task_file))
    samples = log.samples or []
    assert sorted(s.id for s in samples) == ["forty-two", "six-sevens"]
    for sample in samples:
        score = sample.scores["fusion_scorer"]
        assert score.value == expected
        assert score.answer == ("42" if panelist == "p1" else "7")  # extract_answer's pick
        assert score.metadata["scorer"] == "exact" and score.metadata["correct"] is bool(expected)
    assert log.results.scores[0].metrics["accuracy"].value == expected


def test_every_bundled_suite_is_a_registered_task() -> None:
    from inspect_ai._util.registry import registry_lookup

    for suite in SUITES:
        assert registry_lookup("task", f"fusiongraph/{suite}") is not None, suite


def test_a_bundled_suite_runs_against_fusion(openai_env: str, tmp_path: Path) -> None:
    log = run("fusiongraph/math", "fusion/custom", tmp_path, limit=2, seed=3)
    samples = log.samples or []
    assert len(samples) == 2
    for sample in samples:
        score = sample.scores["fusion_scorer"]
        assert 0.0 <= score.value <= 1.0 and score.metadata["scorer"] == "exact"
        assert sample.output.metadata["fusion"]["panel"]  # the fusion run behind the answer
        assert sample.target  # the generator's exact answer


def test_a_model_graded_suite_needs_a_grader(openai_env: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="-T grader="):
        inspect_eval(
            "fusiongraph/research",
            model="fusion/custom",
            model_args=SETTINGS,
            task_args={"limit": 1},
            log_dir=str(tmp_path / "logs"),
            display="none",
        )


def test_code_answers_run_their_unit_tests_in_our_sandbox(tmp_path: Path) -> None:
    """The code scorer inside inspect's loop: the reply's code runs the item's tests (no Docker)."""
    from inspect_ai import Task
    from inspect_ai.model import ModelOutput
    from inspect_ai.solver import Generate, TaskState, solver

    from fusiongraph.evals.inspect_tasks import fusion_scorer, item_sample
    from fusiongraph.evals.items import EvalItem

    replies = {
        "right": "```python\ndef add(a, b):\n    return a + b\n```",
        "wrong": "```python\ndef add(a, b):\n    return a - b\n```",
    }

    @solver
    def scripted():
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            state.output = ModelOutput.from_content("scripted", replies[str(state.sample_id)])
            return state

        return solve

    items = [
        EvalItem(
            id=name,
            task_type="code",
            messages=[{"role": "user", "content": "Write add(a, b)."}],
            tests="assert add(2, 3) == 5",
            entry_point="add",
        )
        for name in replies
    ]
    task = Task(dataset=[item_sample(i) for i in items], solver=scripted(), scorer=fusion_scorer())
    (log,) = inspect_eval(task, model="mockllm/model", log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    values = {s.id: s.scores["fusion_scorer"].value for s in log.samples or []}
    assert values == {"right": 1.0, "wrong": 0.0}
