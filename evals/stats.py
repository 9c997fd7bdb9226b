"""The numbers of a report: accuracy with a Wilson interval, win/tie/loss and a paired bootstrap
against the best single panelist, cost, tokens and latency per item, and a verdict.

The baseline is the panelist with the best accuracy on these very items (ties: the cheaper, then
the first). Choosing it on the same items favours it (its luck on these items is part of its
score), so a fusion gain shown against it is, if anything, understated. An arm's missing answer
(timeout, upstream error) counts as wrong; a sample no scorer could score is left out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Z95 = 1.959963984540054
RESAMPLES = 2000


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sound at small n and at 0 % or 100 %, where
    the normal approximation collapses to a zero-width interval. n = 0: the whole range."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 % (100 %) the lower (upper) end is exactly 0 (1); computed, it misses by rounding.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def paired_bootstrap(
    diffs: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-item differences and its 95 % percentile-bootstrap interval: items are
    resampled with replacement, keeping each item's pair together. Seeded: same data, same
    interval."""
    if not diffs:
        return 0.0, 0.0, 0.0
    n = len(diffs)
    rng = random.Random(seed)
    means = [sum(rng.choices(diffs, k=n)) / n for _ in range(resamples)]
    low, high = percentile(means, 2.5), percentile(means, 97.5)
    assert low is not None and high is not None
    return sum(diffs) / n, low, high


@dataclass
class ArmStats:
    arm: str
    kind: str
    n: int
    correct: int
    accuracy: float
    ci: tuple[float, float]
    errors: int = 0
    unscored: int = 0
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    paired: int = 0
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    cost_per_item: float | None = None
    cost_ratio: float | None = None
    tokens_per_item: float | None = None
    tokens_ratio: float | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    verdict: str = ""
    baseline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskStats:
    task_type: str
    items: int
    baseline: str | None
    arms: list[ArmStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_type": self.task_type,
            "items": self.items,
            "baseline": self.baseline,
            "arms": [a.to_dict() for a in self.arms],
        }


def _scored(samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in samples if s.get("score") is not None]


def _correct(sample: dict[str, Any]) -> bool:
    return bool(sample["score"]["correct"])


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def cost_per_item(samples: Sequence[dict[str, Any]]) -> float | None:
    """Mean deployment cost; unknown (None) when an answered sample's cost is unknown (a price
    missing), never 0. A failed sample whose cost is unknown (a timeout) is left out."""
    costs = [s.get("cost_usd") for s in samples if s.get("cost_usd") is not None or not s["error"]]
    known = [c for c in costs if c is not None]
    if not costs or len(known) < len(costs):
        return None
    return sum(known) / len(known)


def best_panelist(samples: Sequence[dict[str, Any]]) -> str | None:
    """The panelist arm with the best accuracy on these items; ties: cheaper, then first."""
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample["kind"] == "panelist":
            by_arm.setdefault(sample["arm"], []).append(sample)
    ranked = []
    for order, (arm, rows) in enumerate(by_arm.items()):
        scored = _scored(rows)
        if not scored:
            continue
        accuracy = sum(_correct(s) for s in scored) / len(scored)
        cost = cost_per_item(rows)
        ranked.append((-accuracy, math.inf if cost is None else cost, order, arm))
    return min(ranked)[3] if ranked else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def cost_phrase(stats: ArmStats, base: ArmStats) -> str:
    """How the arm's cost compares: a cost ratio when both are known and the baseline's is not
    zero; else what can be said (free models, unknown prices) with the token ratio."""
    tokens = f"{stats.tokens_ratio:.1f}× the tokens" if stats.tokens_ratio is not None else ""
    if stats.cost_ratio is not None:
        return f"at {stats.cost_ratio:.1f}× the cost"
    if stats.cost_per_item is None or base.cost_per_item is None:
        return "at unknown cost" + (f" ({tokens})" if tokens else "")
    if stats.cost_per_item == 0 and base.cost_per_item == 0:
        return "at no cost on either side (free models)" + (f", {tokens}" if tokens else "")
    return f"at ${stats.cost_per_item:.4f} per item against $0"


def verdict(stats: ArmStats, base: ArmStats) -> str:
    """'gained +x pts at y× the cost' / 'no significant difference' / 'lost -x pts': the gain is
    significant when the paired 95 % interval excludes zero."""
    if stats.baseline:
        return "baseline: the best single panelist on these items"
    if stats.diff is None or stats.diff_ci is None or stats.paired < 2:
        return "too few items to tell"
    cost = cost_phrase(stats, base)
    points = stats.diff * 100
    low, high = (v * 100 for v in stats.diff_ci)
    if low > 0:
        return f"gained {points:+.0f} pts {cost}"
    if high < 0:
        return f"lost {points:+.0f} pts {cost}"
    return (
        f"no significant difference ({points:+.0f} pts, 95 % CI {low:+.0f} to {high:+.0f}) {cost}"
    )


def _outcome(sample: dict[str, Any], base: dict[str, Any]) -> str:
    if "vs_baseline" in sample:
        return sample["vs_baseline"]
    ours, theirs = _correct(sample), _correct(base)
    return "win" if ours > theirs else "loss" if theirs > ours else "tie"


def arm_stats(
    arm: str, rows: Sequence[dict[str, Any]], base_rows: dict[str, dict[str, Any]] | None, seed: int
) -> ArmStats:
    scored = _scored(rows)
    correct = sum(_correct(s) for s in scored)
    latencies = [s["latency_s"] for s in rows if s.get("latency_s") is not None]
    tokens = [s["tokens"] for s in rows if s.get("tokens") is not None]
    stats = ArmStats(
        arm=arm,
        kind=rows[0]["kind"],
        n=len(scored),
        correct=correct,
        accuracy=correct / len(scored) if scored else 0.0,
        ci=wilson(correct, len(scored)),
        errors=sum(1 for s in rows if s["error"]),
        unscored=len(rows) - len(scored),
        cost_per_item=cost_per_item(rows),
        tokens_per_item=_mean(tokens),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
    )
    if base_rows is not None:
        pairs = [(s, base_rows[s["item"]]) for s in scored if s["item"] in base_rows]
        outcomes = [_outcome(s, b) for s, b in pairs]
        stats.wins, stats.ties, stats.losses = (outcomes.count(o) for o in ("win", "tie", "loss"))
        diffs = [float(_correct(s)) - float(_correct(b)) for s, b in pairs]
        stats.paired = len(pairs)
        if pairs:
            mean, low, high = paired_bootstrap(diffs, seed=seed)
            stats.diff, stats.diff_ci = mean, (low, high)
    return stats


def summarise(samples: Sequence[dict[str, Any]], *, seed: int = 0) -> list[TaskStats]:
    """Per task type (and `all` when there are several), per arm in the order first seen."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(sample["task_type"], []).append(sample)
    if len(groups) > 1:
        groups["all"] = list(samples)
    out = []
    for task_type, rows in groups.items():
        baseline = best_panelist(rows)
        base_rows = (
            {s["item"]: s for s in _scored(r for r in rows if r["arm"] == baseline)}
            if baseline
            else None
        )
        by_arm: dict[str, list[dict[str, Any]]] = {}
        for sample in rows:
            by_arm.setdefault(sample["arm"], []).append(sample)
        arms = []
        for arm, arm_rows in by_arm.items():
            is_base = arm == baseline
            stats = arm_stats(arm, arm_rows, None if is_base else base_rows, seed)
            stats.baseline = is_base
            arms.append(stats)
        base = next((a for a in arms if a.baseline), None)
        for stats in arms:
            if stats.n == 0:
                stats.verdict = "not scored (each sample's score_error says why)"
            elif base is not None:
                stats.cost_ratio = _ratio(stats.cost_per_item, base.cost_per_item)
                stats.tokens_ratio = _ratio(stats.tokens_per_item, base.tokens_per_item)
                stats.verdict = verdict(stats, base)
            else:
                stats.verdict = "no panelist arm to compare with"
        out.append(TaskStats(task_type, len({s["item"] for s in rows}), baseline, arms))
    return out
