"""The calibration profile an eval writes (graph/calibration.py reads it in a run), and the
seeded split the `fusion:calibrated` arm is measured on.

Per task type: each member's accuracy (its panelist arm) with its Wilson interval; each fusion
strategy's arm against the best member, paired on the same items; the winner is the fusion arm
with the largest significant gain, else the best member. `auto` and `calibrated` never win: they
route to the others.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fusiongraph.evals.stats import TaskStats, summarise
from fusiongraph.graph.calibration import (
    ArmResult,
    CalibrationProfile,
    MemberAccuracy,
    TaskCalibration,
    stamp_of,
)
from fusiongraph.graph.config import FusionConfig

CALIBRATED_ARM = "fusion:calibrated"
ROUTERS = ("fusion:auto", CALIBRATED_ARM)  # arms that pick among the others: never a winner
DEFAULT_SPLIT = 0.5


def package_version() -> str:
    try:
        return version("fusiongraph")
    except PackageNotFoundError:
        return "unknown"


def split_items(items: Sequence[Any], fit_share: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(fit, held out): a seeded shuffle within each task type, `fit_share` of each to fit on,
    at least one item on each side, so every task type is both fitted and judged."""
    if not 0 < fit_share < 1:
        raise ValueError(f"the calibration split must lie between 0 and 1, not {fit_share}")
    by_type: dict[str, list[Any]] = {}
    for item in items:
        by_type.setdefault(item.task_type, []).append(item)
    fit: list[Any] = []
    held: list[Any] = []
    for task_type, group in by_type.items():
        order = sorted(group, key=lambda item: item.id)
        random.Random(f"{seed}:{task_type}").shuffle(order)
        if len(order) < 2:
            raise ValueError(
                f"{task_type}: {len(order)} item; fusion:calibrated needs at least two of each "
                "task type (one to fit the profile on, one to judge it on)"
            )
        cut = min(max(1, round(len(order) * fit_share)), len(order) - 1)
        fit += order[:cut]
        held += order[cut:]
    return fit, held


def _panel_models(config: FusionConfig) -> dict[str, str]:
    return {f"p{i + 1}": spec.name for i, spec in enumerate(config.panel)}


def task_calibration(task: TaskStats, models: dict[str, str]) -> TaskCalibration | None:
    """One task type's calibration from its statistics (None: no scored panelist arm)."""
    members: dict[str, MemberAccuracy] = {}
    arms: dict[str, ArmResult] = {}
    for arm in task.arms:
        if arm.kind == "panelist" and arm.n:
            slot = arm.arm.removeprefix("panelist:")
            members[slot] = MemberAccuracy(
                model=models.get(slot, slot),
                correct=arm.correct,
                n=arm.n,
                accuracy=arm.accuracy,
                ci=arm.ci,
                tokens_per_item=arm.tokens_per_item,
                cost_per_item=arm.cost_per_item,
            )
        elif arm.kind == "fusion" and arm.n:
            arms[arm.arm] = ArmResult(
                arm=arm.arm,
                n=arm.n,
                accuracy=arm.accuracy,
                ci=arm.ci,
                diff=arm.diff,
                diff_ci=arm.diff_ci,
                significant=arm.diff_ci is not None and arm.paired >= 2 and arm.diff_ci[0] > 0,
                verdict=arm.verdict,
                tokens_per_item=arm.tokens_per_item,
                cost_per_item=arm.cost_per_item,
            )
    if not members or task.baseline is None:
        return None
    best = task.baseline.removeprefix("panelist:")
    gains = [a for name, a in arms.items() if a.significant and name not in ROUTERS]
    if gains:
        top = max(gains, key=lambda a: (a.diff or 0.0, a.accuracy))
        winner, verdict, significant = top.arm, top.verdict, True
    else:
        winner, significant = f"panelist:{best}", False
        contenders = [a for name, a in arms.items() if name not in ROUTERS]
        near = max(contenders, key=lambda a: (a.diff or 0.0, a.accuracy), default=None)
        verdict = f"no fusion arm beat {best} significantly" + (
            f" (closest: {near.arm}, {near.verdict})" if near else ""
        )
    return TaskCalibration(
        items=task.items,
        members=members,
        best_member=best,
        arms=arms,
        winner=winner,
        verdict=verdict,
        significant=significant,
    )


def fit_profile(
    rows: Sequence[dict[str, Any]],
    config: FusionConfig,
    *,
    name: str,
    grader: str | None,
    seed: int = 0,
) -> CalibrationProfile | None:
    """The profile of these samples (the calibrated arm's own left out); None when no task type
    has a scored panelist arm to calibrate on."""
    used = [r for r in rows if r["arm"] != CALIBRATED_ARM]
    models = _panel_models(config)
    task_types: dict[str, TaskCalibration] = {}
    for task in summarise(used, seed=seed):
        if task.task_type == "all":
            continue
        found = task_calibration(task, models)
        if found is not None:
            task_types[task.task_type] = found
    if not task_types:
        return None
    items = len({r["item"] for r in used})
    return CalibrationProfile(
        fusiongraph_version=package_version(),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        eval=f"{name}: {items} items",
        stamp=stamp_of(config),
        grader=grader,
        task_types=task_types,
    )


def write_profile(profile: CalibrationProfile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
