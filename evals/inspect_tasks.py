"""The bundled suites as inspect-ai tasks: `inspect eval fusiongraph/math --model fusion/local`.

Every suite of `fusiongraph.evals.items.SUITES` is a task `fusiongraph/<suite>`, and
`fusiongraph/file -T path=my.jsonl` runs a task file of one's own (the schema of
`fusiongraph eval`). Task args: `limit` (a seeded sample, as `fusiongraph eval --limit`), `seed`,
`grader` (the model spec that grades research/open-ended answers: such a task refuses to start
without one, rather than score every sample 0). The scorer is ours
(`fusiongraph.evals.scorers.score`): code runs the item's unit tests in our bubblewrap sandbox,
so no Docker is needed; inspect's own sandboxes are not used.

These tasks run against any inspect model, not only fusion (`--model openai/gpt-5.5`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser
from inspect_ai.scorer import Score, Scorer, Target, accuracy, scorer, stderr
from inspect_ai.solver import TaskState, generate
from inspect_ai.util import registry_info

from fusiongraph.evals.items import SUITES, EvalItem, load_items

PACKAGE = "fusiongraph"
_MESSAGE_TYPES = {
    "system": ChatMessageSystem,
    "user": ChatMessageUser,
    "assistant": ChatMessageAssistant,
}


def item_sample(item: EvalItem) -> Sample:
    """One eval item as an inspect Sample; the item itself rides along for the scorer."""
    return Sample(
        id=item.id,
        input=[_MESSAGE_TYPES[m["role"]](content=m["content"]) for m in item.messages],
        target=item.target or "",
        metadata={"task_type": item.task_type, "item": item.model_dump(mode="json")},
    )


@scorer(metrics=[accuracy(), stderr()])
def fusion_scorer(grader: str | None = None) -> Scorer:
    """Our scorer for the item's task type, as an inspect scorer (value in [0, 1])."""
    from fusiongraph.evals.scorers import Grader, score

    judge = Grader(grader) if grader else None

    async def run(state: TaskState, target: Target) -> Score:
        item = EvalItem.model_validate(state.metadata["item"])
        result = await score(item, state.output.completion, grader=judge)
        explanation = result.explanation
        if result.error:  # the grader failed or gave no verdict: 0, and the log says why
            explanation = f"NOT GRADED ({result.error}): {explanation}"
        return Score(
            value=result.value,
            answer=result.extracted,
            explanation=explanation,
            metadata={
                "correct": result.correct,
                "error": result.error,
                "scorer": item.effective_scorer,
                "usage": result.usage,
                "cost_usd": result.cost_usd,
            },
        )

    return run


def items_task(
    tasks: str | Path, limit: int | None, seed: int, grader: str | None, name: str
) -> Task:
    items = load_items(tasks, limit=limit, seed=seed)
    graded = [i.id for i in items if i.effective_scorer == "graded"]
    if graded and not grader:
        # Refused up front: without a grader every such sample would score 0, silently.
        raise ValueError(
            f"{name}: {len(graded)} item(s) are model-graded (e.g. {graded[0]!r}); name the "
            "grader model: -T grader=openai:gpt-5-mini (any fusiongraph model spec)"
        )
    return Task(
        dataset=MemoryDataset([item_sample(i) for i in items], name=name),
        solver=generate(),
        scorer=fusion_scorer(grader=grader),
    )


def register_task(name: str, make: Callable[..., Task]) -> Callable[..., Task]:
    """Register `make` as the inspect task `fusiongraph/<name>` wherever the package runs from.

    inspect prefixes a task with its package's name only when it finds the package installed
    (site-packages, or editable by its direct_url.json). Run from the checkout, the project's
    own `fusiongraph.egg-info` (setuptools writes it on `pip install -e .`) shadows the editable
    install's metadata, inspect adds no prefix, and `fusiongraph/math` would not be found: the
    name inspect gave is read back, and the task registered again under the prefixed one.
    """
    registered = task(name=name)(make)
    if registry_info(registered).name != f"{PACKAGE}/{name}":
        registered = task(name=f"{PACKAGE}/{name}")(make)
    return registered


def _suite_task(suite: str) -> Any:
    """A registered task for one bundled suite (one per entry of SUITES, in step with it)."""

    def suite_task(limit: int | None = None, seed: int = 0, grader: str | None = None) -> Task:
        return items_task(suite, limit, seed, grader, name=suite)

    suite_task.__doc__ = SUITES[suite].get("description", suite)
    return register_task(suite, suite_task)


SUITE_TASKS = {suite: _suite_task(suite) for suite in SUITES}


def task_file(
    path: str, limit: int | None = None, seed: int = 0, grader: str | None = None
) -> Task:
    """One's own JSONL/CSV task file (the `fusiongraph eval` schema)."""
    return items_task(path, limit, seed, grader, name=Path(path).stem)


task_file = register_task("file", task_file)
