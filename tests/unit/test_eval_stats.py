"""The eval's statistics on scripted arms whose correctness is known: Wilson intervals, the
paired bootstrap, the best-panelist baseline, win/tie/loss counts and each verdict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fusiongraph.evals.stats import (
    best_panelist,
    cost_per_item,
    paired_bootstrap,
    percentile,
    summarise,
    wilson,
)


def sample(arm: str, item: int, correct: bool, *, cost: float | None = 0.01, **extra: Any):
    kind = arm.split(":")[0]
    return {
        "item": f"i{item}",
        "task_type": extra.pop("task_type", "math"),
        "arm": arm,
        "kind": kind,
        "answer": "x",
        "error": None,
        "score": {"correct": correct, "value": float(correct)},
        "cost_usd": cost,
        "tokens": extra.pop("tokens", 100),
        "latency_s": extra.pop("latency_s", 1.0),
        **extra,
    }


def arm_rows(arm: str, correct_items: set[int], n: int = 20, **extra: Any) -> list[dict]:
    return [sample(arm, i, i in correct_items, **extra) for i in range(n)]


def by_arm(stats: Any, task_type: str = "math") -> dict[str, Any]:
    task = next(t for t in stats if t.task_type == task_type)
    return {a.arm: a for a in task.arms}


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # the textbook example
        (0, 10, 0.0, 0.2775),  # 0 %: the normal approximation would give [0, 0]
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_matches_known_values(correct: int, n: int, low: float, high: float):
    got = wilson(correct, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_without_items_is_the_whole_range() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("n", [3, 7, 10, 25])
def test_wilson_contains_0_and_100_percent_exactly(n: int) -> None:
    assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0


def test_percentile_interpolates_like_numpy() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    for q in (0, 5, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) is None


def test_paired_bootstrap_is_seeded_and_centred_on_the_mean() -> None:
    diffs = [1.0] * 6 + [0.0] * 12 + [-1.0] * 2
    mean, low, high = paired_bootstrap(diffs, seed=7)
    assert mean == pytest.approx(0.2)
    assert low < mean < high
    assert (mean, low, high) == paired_bootstrap(diffs, seed=7)  # same seed, same interval
    assert paired_bootstrap([1.0] * 5) == (1.0, 1.0, 1.0)  # no spread, no width


def test_baseline_is_the_most_accurate_panelist_and_counts_win_tie_loss() -> None:
    p1 = arm_rows("panelist:p1", set(range(12)), cost=0.01)  # 12/20
    p2 = arm_rows("panelist:p2", set(range(8)), cost=0.01)  # 8/20
    # fusion: right on 0-10 and 12-19 (wins 12-19: 8), wrong on 11 (a loss)
    fusion = arm_rows("fusion:synthesize", set(range(11)) | set(range(12, 20)), cost=0.04)
    stats = by_arm(summarise(p1 + p2 + fusion))
    assert stats["panelist:p1"].baseline and not stats["panelist:p2"].baseline
    f = stats["fusion:synthesize"]
    assert (f.wins, f.ties, f.losses) == (8, 11, 1)
    assert f.correct == 19 and f.accuracy == pytest.approx(0.95)
    assert f.ci == pytest.approx(wilson(19, 20))
    assert f.diff == pytest.approx(0.35)
    assert f.diff_ci == pytest.approx((0.1, 0.6))  # the seeded bootstrap's interval
    assert f.cost_ratio == pytest.approx(4.0)
    assert f.verdict == "gained +35 pts at 4.0× the cost"
    p2s = stats["panelist:p2"]
    assert (p2s.wins, p2s.ties, p2s.losses) == (0, 16, 4)


def test_a_significant_loss_says_lost() -> None:
    base = arm_rows("panelist:p1", set(range(18)))
    fusion = arm_rows("fusion:select", set(range(6)), cost=0.03)
    f = by_arm(summarise(base + fusion))["fusion:select"]
    assert (f.wins, f.ties, f.losses) == (0, 8, 12)
    assert f.verdict == "lost -60 pts at 3.0× the cost"


def test_an_interval_across_zero_is_no_significant_difference() -> None:
    base = arm_rows("panelist:p1", set(range(10)))
    fusion = arm_rows("fusion:synthesize", set(range(1, 11)), cost=0.02)  # one win, one loss
    f = by_arm(summarise(base + fusion))["fusion:synthesize"]
    assert (f.wins, f.ties, f.losses) == (1, 18, 1)
    assert f.diff == 0.0 and f.diff_ci[0] < 0 < f.diff_ci[1]
    assert f.verdict.startswith("no significant difference (+0 pts, 95 % CI")
    assert f.verdict.endswith("at 2.0× the cost")


def test_an_unknown_price_is_unknown_never_zero() -> None:
    base = arm_rows("panelist:p1", set(range(5)))
    fusion = arm_rows("fusion:synthesize", set(range(15)), cost=0.02)
    fusion[3]["cost_usd"] = None  # one answered sample whose model has no price
    stats = by_arm(summarise(base + fusion))
    f = stats["fusion:synthesize"]
    assert f.cost_per_item is None and f.cost_ratio is None
    assert f.verdict == "gained +50 pts at unknown cost (1.0× the tokens)"


def test_free_models_compare_by_tokens() -> None:
    base = arm_rows("panelist:p1", set(range(5)), cost=0.0, tokens=100)
    fusion = arm_rows("fusion:synthesize", set(range(5)), cost=0.0, tokens=450)
    f = by_arm(summarise(base + fusion))["fusion:synthesize"]
    assert f.cost_per_item == 0.0
    assert f.verdict.endswith("at no cost on either side (free models), 4.5× the tokens")


def test_a_failed_sample_counts_as_wrong_and_its_unknown_cost_is_left_out() -> None:
    rows = arm_rows("fusion:synthesize", set(range(4)), n=4, cost=0.02)
    rows[0].update(
        answer=None,
        error={"reason": "timeout"},
        cost_usd=None,
        score={"correct": False, "value": 0.0},
    )
    assert cost_per_item(rows) == pytest.approx(0.02)
    stats = by_arm(summarise(rows + arm_rows("panelist:p1", {0}, n=4)))
    assert stats["fusion:synthesize"].errors == 1 and stats["fusion:synthesize"].correct == 3


def test_unscored_samples_are_left_out_of_accuracy() -> None:
    rows = arm_rows("panelist:p1", {0, 1}, n=4)
    rows[3]["score"] = None  # a scorer could not score it (e.g. a graded item without a grader)
    stats = by_arm(summarise(rows))["panelist:p1"]
    assert (stats.n, stats.correct, stats.unscored) == (3, 2, 1)


def test_panelist_ties_go_to_the_cheaper_one() -> None:
    rows = arm_rows("panelist:p1", {0, 1}, n=4, cost=0.02) + arm_rows(
        "panelist:p2", {2, 3}, n=4, cost=0.01
    )
    assert best_panelist(rows) == "panelist:p2"


def test_graded_outcomes_from_the_pairwise_comparison_win_over_correctness() -> None:
    base = arm_rows("panelist:p1", set(range(4)), n=4)
    fusion = arm_rows("fusion:synthesize", set(range(4)), n=4)
    for row, outcome in zip(fusion, ("win", "win", "tie", "loss"), strict=True):
        row["vs_baseline"] = outcome
    f = by_arm(summarise(base + fusion))["fusion:synthesize"]
    assert (f.wins, f.ties, f.losses) == (2, 1, 1)


def test_each_task_type_has_its_own_baseline_and_all_pools_them() -> None:
    math = arm_rows("panelist:p1", set(range(8)), n=10) + arm_rows("panelist:p2", {0}, n=10)
    code = [
        sample(r["arm"], int(r["item"][1:]) + 100, r["score"]["correct"], task_type="code")
        for r in arm_rows("panelist:p1", {0}, n=10) + arm_rows("panelist:p2", set(range(9)), n=10)
    ]
    tasks = {t.task_type: t for t in summarise(math + code)}
    assert tasks["math"].baseline == "panelist:p1"
    assert tasks["code"].baseline == "panelist:p2"
    assert tasks["all"].items == 20 and tasks["all"].baseline == "panelist:p2"


def test_an_arm_with_no_scored_sample_says_so() -> None:
    rows = arm_rows("panelist:p1", {0}, n=3) + arm_rows("fusion:synthesize", {0}, n=3)
    for row in rows[3:]:
        row["score"] = None
    stats = by_arm(summarise(rows))["fusion:synthesize"]
    assert stats.n == 0 and stats.unscored == 3
    assert stats.verdict.startswith("not scored")


def test_the_plot_draws_arms_at_0_and_100_percent_and_skips_unscored_ones() -> None:
    from fusiongraph.evals.report import plot_svg

    rows = (
        arm_rows("panelist:p1", set(range(7)), n=7)
        + arm_rows("panelist:p2", set(), n=7)
        + arm_rows("fusion:synthesize", {1, 2}, n=7)
    )
    for row in rows[14:]:
        row["score"] = None
    (task,) = summarise(rows)
    svg = plot_svg(task)  # 0/7 once gave the error bar a negative length, which matplotlib refuses
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
