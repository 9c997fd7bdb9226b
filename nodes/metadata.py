"""The `response_metadata["fusion"]` record: what ran, what it said, what failed, what it cost."""

from __future__ import annotations

from typing import Any

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.errors import FailureReason, FusionError
from fusiongraph.graph.pricing import cost_of, price_of
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import (
    FusionState,
    PanelResult,
    Usage,
    add_usage,
    empty_usage,
    panel_index,
)
from fusiongraph.nodes.aggregation import summary as aggregation_summary


def failed_entry(result: PanelResult) -> dict[str, Any]:
    error = result["error"] or {"reason": "empty", "message": ""}
    return {"panelist": result["panelist"], "model": result["model"], **error}


def _sum(costs: list[float | None]) -> float | None:
    """A total is only known when every part is."""
    return None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 8)


def _panel_spec(result: PanelResult, config: FusionConfig) -> ModelSpec:
    return config.panel[panel_index(result)]


def fusion_metadata(
    state: FusionState,
    config: FusionConfig,
    *,
    synthesis_usage: Usage | None,
    synthesis_latency_s: float | None,
) -> dict[str, Any]:
    """The run's record. `synthesis_usage` None: the synthesizer was called and failed, so what
    it used is unknown (zero tokens counted, its cost null); `synthesis_latency_s` None: it
    never ran."""
    panel = state.get("panel", [])
    judge = state.get("judge") or {}
    panel_usage, panel_costs = empty_usage(), []
    entries, failed = [], []
    for result in panel:
        panel_usage = add_usage(panel_usage, result["usage"])
        cost = cost_of(result["usage"], price_of(_panel_spec(result, config), config))
        panel_costs.append(cost)
        if result["error"] is None:
            entry = {
                k: result[k]
                for k in (
                    "panelist",
                    "model",
                    "content",
                    "sources",
                    "usage",
                    "latency_s",
                    "tool_calls",
                )
            }
            entries.append(
                {
                    **entry,
                    "images": result.get("images", 0),  # sent to it (else a note for each)
                    "cost_usd": cost,
                    "cached": result.get("cached", False),
                }
            )
        else:
            failed.append(
                {**failed_entry(result), "latency_s": result["latency_s"], "cost_usd": cost}
            )
    judge_usage = judge.get("usage") or empty_usage()
    judge_cost = cost_of(judge_usage, price_of(config.judge, config))
    synthesis_cost = (
        None
        if synthesis_usage is None
        else cost_of(synthesis_usage, price_of(config.synthesizer, config))
    )
    synthesis_usage = synthesis_usage or empty_usage()
    panel_cost = _sum(panel_costs)
    total = add_usage(add_usage(panel_usage, judge_usage), synthesis_usage)
    # auto's classifier, when it ran: its call counts in the totals (nodes/routing.py).
    classifier = (state.get("aggregation") or {}).get("classifier") or {}
    extra_usage, extra_cost = {}, {}
    if classifier and config.classifier is not None:
        extra_usage["classifier"] = classifier.get("usage") or empty_usage()
        extra_cost["classifier"] = cost_of(
            extra_usage["classifier"], price_of(config.classifier, config)
        )
        total = add_usage(total, extra_usage["classifier"])
    # verify's judge call (tests or a program), when it ran: the judge's model, counted apart.
    verify_judge = ((state.get("aggregation") or {}).get("verify") or {}).get("judge") or {}
    if verify_judge:
        extra_usage["verify"] = verify_judge.get("usage") or empty_usage()
        extra_cost["verify"] = cost_of(extra_usage["verify"], price_of(config.judge, config))
        total = add_usage(total, extra_usage["verify"])
    return {
        "preset": config.preset,
        "settings": config.settings_used(),
        "panel": entries,
        "failed_models": failed,
        "analysis": state.get("analysis"),
        # The judge failed on a path that needed it (early exit and a vote's winner need none).
        "degraded": bool(judge) and not judge.get("ok", False),
        "aggregation": aggregation_summary(
            state, config, synthesized=synthesis_latency_s is not None
        ),
        "judge": {
            k: judge.get(k) for k in ("model", "ok", "error", "latency_s", "fallbacks", "tools")
        },
        "synthesizer": {"model": config.synthesizer.name, "latency_s": synthesis_latency_s},
        "usage": {
            "panel": panel_usage,
            "judge": judge_usage,
            "synthesis": synthesis_usage,
            **extra_usage,
            "total": total,
        },
        "cost_usd": {
            "panel": panel_cost,
            "judge": judge_cost,
            "synthesis": synthesis_cost,
            **extra_cost,
            "total": _sum([panel_cost, judge_cost, synthesis_cost, *extra_cost.values()]),
        },
    }


def fusion_failure(
    reason: FailureReason,
    message: str,
    state: FusionState,
    config: FusionConfig,
    *,
    synthesis_latency_s: float | None = None,
) -> FusionError:
    """A failed run's error, carrying the record a successful run has (panel, failed_models,
    analysis, judge, usage, cost_usd): what was paid for is reported, never lost. The judge
    raises it before synthesis ran (`synthesis_latency_s` None: zero synthesis usage), the
    synthesizer after its own call failed (its usage unknown)."""
    ran = synthesis_latency_s is not None
    record = fusion_metadata(
        state,
        config,
        synthesis_usage=None if ran else empty_usage(),
        synthesis_latency_s=synthesis_latency_s,
    )
    return FusionError(reason, message, **record)
