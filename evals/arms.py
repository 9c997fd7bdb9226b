"""The arms of an eval: what is compared, each one a FusionContext over the user's settings.

- `fusion:calibrated` (named only): calibrated `auto` on held-out items, with a profile fitted
  on the other items' results of the other arms (evals/calibration.py; run by evals/evaluate.py).
- `fusion:<strategy>`: the configured panel, judge and synthesizer, one arm per aggregation
  strategy the graph offers (read from FusionContext's `aggregation` Literal, never listed here).
  `fusion:verify` checks the panel's answers by execution on tests the judge writes from the
  item's question: the item's own tests stay hidden from every model (a run gets the item's
  messages only, and an eval's context may not carry `verify_tests`).
- `panelist:pN`: the answer panelist N gave inside the fusion run, read from its record: never
  paid twice (same request, same tools).
- `self-consistency:<model>`: k samples of one model (distinct seeds, temperature > 0), the
  majority over their extracted answers: the graph's `vote` strategy (early exit on agreement).
- `self-fusion:<model>`: the same k samples, judged and synthesized.

An arm names the graph run it reads (`run`) and how it reads it (`read`). Arms whose runs
resolve to the same plan share one run (the local preset's panel is already three samples of one
model, so its self-fusion is its fusion), and the strategy arms of one item share the panel
answers through the graph's panel cache.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

from fusiongraph.evals.cache import digest
from fusiongraph.graph.config import FusionConfig, FusionContext, resolve_config
from fusiongraph.graph.specs import ModelSpec

Read = Literal["final", "panelist"]
KINDS = ("fusion", "panelist", "self-consistency", "self-fusion")
DEFAULT_STRATEGY = "synthesize"
# Sampling temperature of self-samples whose model spec sets none (or 0): k equal samples of a
# greedy decoder would agree by construction.
SAMPLE_TEMPERATURE = 0.7
SAMPLE_SEED = 1000


def strategies() -> list[str]:
    """The aggregation strategies the graph offers, from FusionContext's `aggregation` field
    (today's graph without the field offers only synthesis)."""
    field_info = FusionContext.model_fields.get("aggregation")
    if field_info is None:
        return [DEFAULT_STRATEGY]
    found: list[str] = []

    def collect(annotation: Any) -> None:
        for arg in typing.get_args(annotation):
            if isinstance(arg, str):
                found.append(arg)
            elif arg is not type(None):
                collect(arg)

    collect(field_info.annotation)
    return list(dict.fromkeys(found)) or [DEFAULT_STRATEGY]


def has_setting(name: str) -> bool:
    return name in FusionContext.model_fields


@dataclass(frozen=True)
class RunPlan:
    """One graph run per item: its context and the digest of the plan it resolves to."""

    context: dict[str, Any]
    key: str


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str
    run: RunPlan
    read: Read = "final"
    panelist: str | None = None
    note: str = ""


def run_plan(context: dict[str, Any]) -> RunPlan:
    """Validate the context (a FusionConfigError names a bad setting before anything runs) and
    key the run by the plan it resolves to, so equal plans share one run. The key leaves out
    what is at its default, so a new setting added to the graph (at its default) keeps every
    cached result valid; a changed default is not seen by it."""
    FusionContext(**context)
    config = resolve_config(context)
    plan = config.model_dump(mode="json", exclude_defaults=True)
    return RunPlan(context=context, key=digest("run", plan))


def _spec_data(spec: ModelSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True)


def samples_of(config: FusionConfig, model: str, k: int) -> list[ModelSpec]:
    """k samples of `model`: the panel's own entries when they already are k distinct samples of
    it (the local preset), else its spec (from the panel, or parsed) with seeds 1000, 1001, ...
    and a temperature above 0."""
    own = [spec for spec in config.panel if spec.name == model]
    distinct = {(spec.seed, spec.temperature) for spec in own}
    if len(own) == k and len(distinct) == k and all((s.temperature or 0) > 0 for s in own):
        return own
    base = own[0] if own else ModelSpec.model_validate(model)
    temperature = base.temperature if (base.temperature or 0) > 0 else SAMPLE_TEMPERATURE
    return [
        base.model_copy(update={"seed": SAMPLE_SEED + i, "temperature": temperature})
        for i in range(k)
    ]


def _with_strategy(context: dict[str, Any], strategy: str) -> dict[str, Any]:
    if not has_setting("aggregation"):
        return dict(context)
    return {**context, "aggregation": strategy}


def _plain(context: dict[str, Any]) -> dict[str, Any]:
    """The run the panelist arms read: the whole panel answers (no cascade, no early exit).
    With neither set by the user, it is the `fusion:synthesize` run itself."""
    out = _with_strategy(context, DEFAULT_STRATEGY)
    out.pop("cascade", None)
    if out.get("early_exit"):
        out["early_exit"] = False
    return out


def _self_context(
    context: dict[str, Any], config: FusionConfig, samples: list[ModelSpec], strategy: str
) -> dict[str, Any]:
    out = {
        **context,
        "preset": config.preset or "",
        "panel": [_spec_data(s) for s in samples],
        "judge": _spec_data(config.judge),
        "synthesizer": _spec_data(config.synthesizer),
    }
    return _with_strategy(out, strategy)


def default_arm_names(config: FusionConfig) -> list[str]:
    models = list(dict.fromkeys(spec.name for spec in config.panel))
    return [
        *(f"fusion:{s}" for s in strategies()),
        *(f"panelist:p{i + 1}" for i in range(len(config.panel))),
        *(f"self-consistency:{m}" for m in models),
        *(f"self-fusion:{m}" for m in models),
    ]


def expand_names(names: list[str], config: FusionConfig) -> list[str]:
    """`fusion`, `panelist`, `self-consistency`, `self-fusion` alone stand for all of theirs."""
    defaults = default_arm_names(config)
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in KINDS:
            out += [d for d in defaults if d.startswith(f"{name}:")]
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def build_arms(
    context: dict[str, Any], names: list[str] | None = None, *, samples: int | None = None
) -> list[Arm]:
    """The arms named (default: every fusion strategy, each panelist, self-consistency and
    self-fusion of each panel model), with k = `samples` (default: the panel's size, at least
    2). Raises ValueError naming an unknown arm; FusionConfigError for a bad setting."""
    if context.get("verify_tests"):
        raise ValueError(
            "verify_tests cannot be set for an eval: one set of tests would apply to every item, "
            "and tests written from an item's answers would make the evidence worthless; "
            "fusion:verify has the judge write them from each question"
        )
    config = resolve_config(context)
    k = samples or max(len(config.panel), 2)
    offered = strategies()
    plain = run_plan(_plain(context))
    arms: list[Arm] = []
    for name in expand_names(names or default_arm_names(config), config):
        kind, sep, what = name.partition(":")
        if kind not in KINDS or not sep or not what:
            raise ValueError(
                f"unknown arm {name!r}: use fusion:<strategy>, fusion:calibrated, panelist:pN, "
                "self-consistency:<model>, self-fusion:<model> (or fusion, panelist, "
                "self-consistency, self-fusion for all of theirs)"
            )
        if kind == "fusion" and what == "calibrated":
            if "auto" not in offered:
                raise ValueError(f"{name}: the graph offers no `auto` strategy ({offered})")
            note = (
                "calibrated auto: the profile fitted on the other split's results routes each "
                "held-out item (a fusion strategy, or only the best member)"
            )
            # Its run names the profile once it is fitted (evals/evaluate.py).
            arms.append(Arm(name, kind, run_plan(_with_strategy(context, "auto")), note=note))
        elif kind == "fusion":
            if what not in offered:
                raise ValueError(f"unknown strategy in {name!r}; the graph offers {offered}")
            note = f"the configured panel, judge and synthesizer; aggregation `{what}`"
            if what == "verify":
                note += " (the judge's tests from the question; the item's tests stay hidden)"
            arms.append(Arm(name, kind, run_plan(_with_strategy(context, what)), note=note))
        elif kind == "panelist":
            slots = [f"p{i + 1}" for i in range(len(config.panel))]
            if what not in slots:
                raise ValueError(f"unknown panelist in {name!r}; the panel has {slots}")
            spec = config.panel[slots.index(what)]
            note = f"{spec.name}: its answer inside the fusion run (reused, not paid again)"
            arms.append(Arm(name, kind, plain, read="panelist", panelist=what, note=note))
        else:
            try:
                specs = samples_of(config, what, k)
            except ValueError as exc:
                raise ValueError(f"arm {name!r}: {exc}") from None
            if kind == "self-fusion":
                run = run_plan(_self_context(context, config, specs, DEFAULT_STRATEGY))
                arms.append(Arm(name, kind, run, note=f"{k} samples, judged and synthesized"))
            else:
                if "vote" not in offered:
                    raise ValueError(f"{name}: the graph offers no `vote` strategy ({offered})")
                run = run_plan(_self_context(context, config, specs, "vote"))
                note = f"{k} samples, the graph's vote over their extracted answers"
                arms.append(Arm(name, kind, run, note=note))
    return arms
