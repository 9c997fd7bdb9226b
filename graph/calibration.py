"""A calibration profile: what an eval measured, per task type, on one panel, read by a run.

`fusiongraph eval` writes it (evals/calibration.py) beside its report: each member's accuracy
with its Wilson interval, the best fusion arm and whether it beat the best member significantly,
stamped with the panel, judge, synthesizer and settings it was measured on. A run that names it
(the `calibration` setting) uses it in two places (nodes/aggregation.py):

- calibrated `auto`: per task type, the strategy of the arm that won; where no fusion arm beat
  the best member significantly, only that member is asked;
- weighted vote: each member's vote counts its calibrated log odds of being right.

A profile measured on another panel, judge, synthesizer or answer settings, or with too few items
of the task type, is not used: the run says so and falls back to auto's fixed rules.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusiongraph.graph.specs import ModelSpec

PROFILE_VERSION: Literal[1] = 1
# Fewer scored items of a task type than this, and the profile does not decide for it.
MIN_ITEMS = 8
# The settings besides the models that change what the panel answers or how it is judged: a
# profile measured with other values does not describe this run.
STAMPED_SETTINGS = (
    "tool_mode",
    "max_tool_calls",
    "panel_max_tokens",
    "reasoning_effort",
    "judge_input_chars",
    "include_raw_answers",
    "vote_answer",
    "temperature",
    "max_tokens",
)


class MemberAccuracy(BaseModel):
    """One panel member's score on a task type: correct of n, with a 95 % Wilson interval."""

    model_config = ConfigDict(extra="forbid")

    model: str
    correct: int = Field(ge=0)
    n: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    ci: tuple[float, float]
    tokens_per_item: float | None = None
    cost_per_item: float | None = None


class ArmResult(BaseModel):
    """A fusion arm against the best member on the same items (paired bootstrap)."""

    model_config = ConfigDict(extra="forbid")

    arm: str
    n: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    ci: tuple[float, float]
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    significant: bool = False  # the paired 95 % interval lies above zero
    verdict: str = ""
    tokens_per_item: float | None = None
    cost_per_item: float | None = None


class TaskCalibration(BaseModel):
    """One task type: the members, the fusion arms, and what a calibrated run does."""

    model_config = ConfigDict(extra="forbid")

    items: int = Field(ge=0)
    members: dict[str, MemberAccuracy]  # p1, p2, ...
    best_member: str
    arms: dict[str, ArmResult] = Field(default_factory=dict)
    winner: str  # `fusion:<strategy>` that beat the best member significantly, else `panelist:pN`
    verdict: str
    significant: bool


class Stamp(BaseModel):
    """What the profile was measured on."""

    model_config = ConfigDict(extra="forbid")

    panel: list[str]
    judge: str
    synthesizer: str
    settings: dict[str, Any]
    settings_hash: str


class CalibrationProfile(BaseModel):
    """The file `fusiongraph eval` writes as calibration.json and a run's `calibration` names."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fusiongraph.calibration"] = "fusiongraph.calibration"
    version: Literal[1] = PROFILE_VERSION
    fusiongraph_version: str
    created: str
    eval: str = Field(description="the eval it comes from: its name and items")
    stamp: Stamp
    grader: str | None = None
    task_types: dict[str, TaskCalibration]


def spec_label(spec: ModelSpec) -> str:
    """A model as the stamp names it: its name, and the sampling settings that change answers."""
    extra = [f"{k}={v}" for k in ("seed", "temperature", "max_tokens") if (v := getattr(spec, k))]
    return spec.name + (f" ({', '.join(extra)})" if extra else "")


def stamp_of(config: Any) -> Stamp:
    """The stamp of a run's plan (a FusionConfig): models, the stamped settings and their hash."""
    settings = config.model_dump(mode="json", include=set(STAMPED_SETTINGS))
    panel = [spec_label(s) for s in config.panel]
    judge, synthesizer = spec_label(config.judge), spec_label(config.synthesizer)
    blob = json.dumps([panel, judge, synthesizer, settings], sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return Stamp(
        panel=panel, judge=judge, synthesizer=synthesizer, settings=settings, settings_hash=digest
    )


def stamp_mismatch(profile: CalibrationProfile, config: Any) -> str | None:
    """Why the profile does not describe this run's plan (None: it does)."""
    ours, theirs = stamp_of(config), profile.stamp
    for what in ("panel", "judge", "synthesizer"):
        if getattr(ours, what) != getattr(theirs, what):
            return (
                f"the profile was measured on another {what} "
                f"({getattr(theirs, what)}, not {getattr(ours, what)})"
            )
    if ours.settings_hash != theirs.settings_hash:
        changed = sorted(
            k for k in STAMPED_SETTINGS if ours.settings.get(k) != theirs.settings.get(k)
        )
        return f"the profile was measured with other settings ({', '.join(changed)})"
    return None


class CalibrationError(ValueError):
    """A calibration file that cannot be read as a profile."""


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int) -> CalibrationProfile:
    try:
        with open(path, encoding="utf-8") as handle:
            return CalibrationProfile.model_validate_json(handle.read())
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "profile"
        why = f"{where}: {err['msg']}"
        raise CalibrationError(f"{path}: not a calibration profile ({why})") from None


def load_profile(path: str) -> CalibrationProfile:
    """The profile at `path` (read once per file version). Raises CalibrationError."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise CalibrationError(f"{path}: {exc.strerror or exc}") from None
    return _load(os.path.abspath(path), mtime)


def smoothed(correct: int, n: int) -> float:
    """A member's chance of being right, with Laplace's rule: never exactly 0 or 1."""
    return (correct + 1) / (n + 2)


# A member below even odds keeps this much weight: it breaks ties, it never votes against.
MIN_WEIGHT = 0.01


def vote_weight(member: MemberAccuracy) -> float:
    """Weighted majority voting's weight: the log odds of the member being right."""
    p = smoothed(member.correct, member.n)
    return round(max(math.log(p / (1 - p)), MIN_WEIGHT), 4)


def usable(profile: CalibrationProfile, config: Any, task: str | None) -> tuple[Any, str | None]:
    """The task type's calibration, or None and why the run cannot use it."""
    mismatch = stamp_mismatch(profile, config)
    if mismatch is not None:
        return None, mismatch
    if task is None:
        return None, "the task type is not known"
    found = profile.task_types.get(task)
    if found is None:
        return None, f"the profile has no {task} items"
    if found.items < MIN_ITEMS:
        return None, f"the profile has {found.items} {task} items, fewer than {MIN_ITEMS}"
    return found, None
