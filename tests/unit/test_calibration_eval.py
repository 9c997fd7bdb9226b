"""The eval closes the loop on scripted models: it writes a calibration profile whose numbers are
the items' own, and the `fusion:calibrated` arm is fitted on one split and judged on the other,
reusing the panel answers the other arms paid for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from fusiongraph.evals.calibration import split_items
from fusiongraph.evals.evaluate import arun_eval
from fusiongraph.evals.schema import EvalItem
from fusiongraph.evals.stats import wilson
from fusiongraph.graph.calibration import load_profile, stamp_of
from fusiongraph.graph.config import resolve_config
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json


def items(n: int) -> list[EvalItem]:
    return [
        EvalItem(
            id=f"sum-{i}",
            task_type="math",
            messages=[{"role": "user", "content": f"What is {i} + {10 * i}?"}],
            target=str(11 * i),
        )
        for i in range(1, n + 1)
    ]


def adder(wrong_from: int) -> Script:
    """Right on items below `wrong_from`, else one too many (the wrong ones agree)."""

    def reply(messages: list[BaseMessage]) -> str:
        question = next(m.content for m in reversed(messages) if m.type == "human")
        a, b = map(int, re.findall(r"\d+", str(question))[:2])
        total = a + b
        return f"Adding them up. Answer: {total if total < 11 * wrong_from else total + 1}"

    return Script([reply])


def factory() -> FakeFactory:
    return FakeFactory(
        {
            "m1": adder(wrong_from=99),  # always right
            "m2": adder(wrong_from=3),  # right on items 1-2
            "m3": adder(wrong_from=1),  # always wrong, agreeing with m2 from item 3 on
            "judge": Script([judge_json(consensus=["they add the numbers"])]),
            "synth": Script([lambda messages: "The sum. Answer: 0"]),
        }
    )


def context() -> dict[str, Any]:
    return fake_context(["m1", "m2", "m3"])


async def test_the_eval_writes_a_profile_whose_numbers_are_the_items(tmp_path: Path) -> None:
    report = await arun_eval(
        items(6),
        context=context(),
        arms=["fusion:vote", "panelist"],
        out_dir=tmp_path,
        model_factory=factory(),
        concurrency=1,
    )
    path = report.folder / "calibration.json"
    profile = load_profile(str(path))
    assert profile.stamp == stamp_of(resolve_config(context()))
    math = profile.task_types["math"]
    assert math.items == 6
    by_arm = {s["arm"]: [] for s in report.samples}
    for sample in report.samples:
        by_arm[sample["arm"]].append(sample["score"]["correct"])
    for slot, model in (("p1", "openai:m1"), ("p2", "openai:m2"), ("p3", "openai:m3")):
        scores = by_arm[f"panelist:{slot}"]
        member = math.members[slot]
        assert (member.model, member.correct, member.n) == (model, sum(scores), len(scores))
        assert member.ci == pytest.approx(wilson(sum(scores), len(scores)))
    assert (math.members["p1"].correct, math.members["p2"].correct) == (6, 2)
    assert math.best_member == "p1"
    # the weak majority outvotes p1 from item 3 on: vote is below p1, so p1 alone is the choice
    assert math.arms["fusion:vote"].accuracy == pytest.approx(2 / 6)
    assert not math.arms["fusion:vote"].significant
    assert math.winner == "panelist:p1" and not math.significant
    assert json.loads((report.folder / "summary.json").read_text())["calibration"] == {
        "profile": "calibration.json"
    }


def test_the_split_is_seeded_disjoint_and_per_task_type() -> None:
    mixed = [
        *items(5),
        *(i.model_copy(update={"id": f"x-{i.id}", "task_type": "short_answer"}) for i in items(3)),
    ]
    fit, held = split_items(mixed, 0.5, seed=7)
    assert {i.id for i in fit}.isdisjoint({i.id for i in held})
    assert len(fit) + len(held) == len(mixed)
    assert {i.task_type for i in fit} == {i.task_type for i in held} == {"math", "short_answer"}
    assert [i.id for i in split_items(mixed, 0.5, seed=7)[0]] == [i.id for i in fit]
    with pytest.raises(ValueError, match="at least two"):
        split_items(items(1), 0.5, seed=0)


async def test_the_calibrated_arm_is_fitted_on_one_split_and_judged_on_the_other(
    tmp_path: Path,
) -> None:
    fake = factory()
    report = await arun_eval(
        items(16),
        context=context(),
        arms=["fusion:vote", "panelist", "fusion:calibrated"],
        out_dir=tmp_path,
        model_factory=fake,
        concurrency=1,
    )
    meta = report.meta["calibration"]
    fit, held = set(meta["fit_items"]), set(meta["held_out_items"])
    assert len(fit) == len(held) == 8 and not fit & held
    assert fit | held == {f"sum-{i}" for i in range(1, 17)}
    calibrated = [s for s in report.samples if s["arm"] == "fusion:calibrated"]
    assert {s["item"] for s in calibrated} == held  # judged on the held-out items only
    fitted = load_profile(str(report.folder / "calibration-fit.json"))
    assert fitted.task_types["math"].items == 8  # fitted on the other split only
    assert fitted.task_types["math"].members["p1"].n == 8
    for sample in calibrated:
        decision = sample["aggregation"]["calibrated"]
        assert decision["chosen"] == "panelist:p1" and sample["score"]["correct"]
        assert decision["profile"].endswith(".json")
    # the calibrated runs asked p1 only, and were served its answer from the panel cache
    assert [len(fake.scripts[m].calls) for m in ("m1", "m2", "m3")] == [16, 16, 16]
    held_math = next(t for t in _held_out(report) if t["task_type"] == "math")
    arm = next(a for a in held_math["arms"] if a["arm"] == "fusion:calibrated")
    assert arm["n"] == 8 and arm["accuracy"] == 1.0 and arm["diff"] == 0.0
    assert "`fusion:calibrated` is equal to the best member `panelist:p1`" in report.markdown
    assert meta["decisions"] == {"math": {"panelist:p1": 8}}
    assert "Its choices: panelist:p1 ×8" in report.markdown
    # the main table is over every item, without the held-out-only arm
    assert all(a.arm != "fusion:calibrated" for a in report.task("math").arms)


def _held_out(report: Any) -> list[dict[str, Any]]:
    return json.loads((report.folder / "summary.json").read_text())["held_out"]


async def test_the_calibrated_arm_needs_the_panelist_arms(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="panelist"):
        await arun_eval(
            items(4),
            context=context(),
            arms=["fusion:vote", "fusion:calibrated"],
            out_dir=tmp_path,
            model_factory=factory(),
        )


async def test_a_fit_split_too_small_measures_the_fallback_and_says_so(tmp_path: Path) -> None:
    report = await arun_eval(
        items(6),
        context=context(),
        arms=["fusion:vote", "panelist", "fusion:calibrated"],
        out_dir=tmp_path,
        model_factory=factory(),
        concurrency=1,
    )
    assert report.meta["calibration"]["decisions"] == {"math": {"profile not used": 3}}
    for sample in (s for s in report.samples if s["arm"] == "fusion:calibrated"):
        reason = sample["aggregation"]["calibrated"]["reason"]
        assert reason.startswith("profile not used: the profile has 3 math items, fewer than 8")


def test_the_pooled_held_out_section_counts_every_types_choices() -> None:
    from fusiongraph.evals.report import held_out_markdown
    from fusiongraph.evals.stats import TaskStats

    meta = {"calibration": {"decisions": {"code": {"panelist:p3": 8}, "math": {"panelist:p3": 5}}}}
    meta["calibration"]["decisions"]["math"]["fusion:verify"] = 3
    tasks = [TaskStats(t, 8, None) for t in ("code", "math")] + [TaskStats("all", 16, None)]
    text = "\n".join(held_out_markdown(meta, tasks))
    assert "Its choices: panelist:p3 ×8 (" in text
    assert "Its choices: panelist:p3 ×5, fusion:verify ×3 (" in text
    assert "Its choices: panelist:p3 ×13, fusion:verify ×3 (" in text
