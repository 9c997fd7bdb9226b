"""Item 5: what early exit and cascade save against the full path, on the fake upstream.

Each row is a setting (`early_exit`, `cascade`, the strategies' names in FusionContext) on a
panel that agrees (every panelist ends with the same "Answer: 42.") or disagrees (41, 42, 43):
the fake upstream's `-ans<X>-` model names (tests/support/upstream.py). Against the full path
(`aggregation: synthesize`, nothing skipped, the same panel latencies) it reports

- calls / full path: the upstream calls the run really made (counted in the upstream's records
  of that run, by its tag), mean over the runs, over the full path's mean;
- wall / full path: the row's p50 (p95) wall time over the full path's p50 (p95).

The rows take turns run by run (one run of each, then the next round), so a change in the
machine's load reaches every row alike: ratios measured in one run, never a timed target.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.drivers import Driver
from bench.fake_upstream import UpstreamProcess
from bench.plans import JUDGE_S, PANEL_HI_S, PANEL_LO_S, SYNTH_S, Plan, Sample
from bench.stats import Row, pct, table

N = 3
AGREE, DISAGREE = ("42", "42", "42"), ("41", "42", "43")


@dataclass(frozen=True)
class Scenario:
    name: str
    answers: tuple[str, ...]
    settings: dict[str, Any]


SCENARIOS = (
    Scenario("full path (synthesize)", AGREE, {}),
    Scenario("early exit, panel agrees", AGREE, {"early_exit": True}),
    Scenario("early exit, panel disagrees", DISAGREE, {"early_exit": True}),
    Scenario(f"cascade 2 of {N}, first two agree", AGREE, {"cascade": 2}),
    Scenario(f"cascade 2 of {N} + early exit, agree", AGREE, {"cascade": 2, "early_exit": True}),
    Scenario(f"cascade 2 of {N}, first two disagree", DISAGREE, {"cascade": 2}),
)
FULL = SCENARIOS[0]


def savings_plan(scenario: Scenario, rng: random.Random, scale: float) -> Plan:
    """N panelists over [PANEL_LO_S, PANEL_HI_S] in a new order each run (so a cascade's first
    two are any two), each committing to its scenario's answer; the usual judge and synthesis;
    `aggregation: synthesize` with the scenario's settings."""
    step = (PANEL_HI_S - PANEL_LO_S) / (N - 1)
    lats = [PANEL_LO_S + i * step for i in range(N)]
    rng.shuffle(lats)
    return Plan(
        panel=[
            f"s{i + 1}-ans{answer}-{lat * scale:.3f}s"
            for i, (answer, lat) in enumerate(zip(scenario.answers, lats, strict=True))
        ],
        judge=f"judge-{JUDGE_S * scale:.3f}s",
        synthesizer=f"synth-{SYNTH_S * scale:.3f}s",
        extra={"aggregation": "synthesize", **scenario.settings},
    )


def calls_of(tag: str, records: list[Any]) -> dict[str, int]:
    """The upstream calls of one run, by role."""
    counts = {"panel": 0, "judge": 0, "synthesis": 0}
    for record in records:
        if record.tag == tag:
            counts[record.role] = counts.get(record.role, 0) + 1
    return counts


async def item_savings(
    driver: Driver,
    upstream: UpstreamProcess,
    runs: int,
    scale: float,
    rng: random.Random,
    log: Callable[[str], None],
) -> tuple[list[Row], dict[str, Any]]:
    for scenario in SCENARIOS:  # warm-up: clients built, panel latencies learnt
        await driver.run(savings_plan(scenario, rng, scale), stream=False)
    samples: dict[str, list[Sample]] = {s.name: [] for s in SCENARIOS}
    calls: dict[str, list[dict[str, int]]] = {s.name: [] for s in SCENARIOS}
    for _ in range(runs):
        for scenario in SCENARIOS:
            since = _last_id(upstream)
            sample = await driver.run(savings_plan(scenario, rng, scale), stream=False)
            sample.wall_s = sample.end - sample.start
            samples[scenario.name].append(sample)
            calls[scenario.name].append(calls_of(sample.tag, upstream.records(since)))
    rows = [row for s in SCENARIOS for row in _rows(driver.name, s, samples, calls)]
    log(table(rows))
    raw = {
        name: {"samples": [asdict(s) for s in samples[name]], "calls": calls[name]}
        for name in samples
    }
    return rows, raw


def _last_id(upstream: UpstreamProcess) -> int:
    records = upstream.records(0)
    return records[-1].id if records else 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _rows(
    surface: str,
    scenario: Scenario,
    samples: dict[str, list[Sample]],
    calls: dict[str, list[dict[str, int]]],
) -> list[Row]:
    mine, full = samples[scenario.name], samples[FULL.name]
    failed = sum(1 for s in mine if not s.ok)
    made = _mean([sum(c.values()) for c in calls[scenario.name]])
    full_made = _mean([sum(c.values()) for c in calls[FULL.name]])
    roles = {
        role: _mean([c.get(role, 0) for c in calls[scenario.name]])
        for role in ("panel", "judge", "synthesis")
    }
    walls = [s.wall_s for s in mine if s.ok]
    full_walls = [s.wall_s for s in full if s.ok]
    p50, p95 = pct(walls, 50), pct(walls, 95)
    f50, f95 = pct(full_walls, 50), pct(full_walls, 95)
    item = "5 early exit / cascade"
    label = f"{surface}: {scenario.name}"
    note = ", ".join(f"{role} {count:g}" for role, count in roles.items())
    note += f" (full path {full_made:g})" + (f"; {failed} failed" if failed else "")
    wall_note = (
        f"{p50:.2f} s ({p95:.2f} s) vs full path {f50:.2f} s ({f95:.2f} s)"
        if p50 is not None and p95 is not None and f50 and f95
        else ""
    )
    return [
        Row(
            item,
            label,
            N,
            "calls / full path",
            made / full_made if full_made else None,
            None,
            "(report)",
            "n/a",
            len(mine),
            note,
        ),
        Row(
            item,
            label,
            N,
            "wall / full path",
            p50 / f50 if p50 is not None and f50 else None,
            p95 / f95 if p95 is not None and f95 else None,
            "(report)",
            "n/a",
            len(mine),
            wall_note,
        ),
    ]
