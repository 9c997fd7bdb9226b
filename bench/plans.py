"""The runs the benchmark makes: which models (their names are their latencies), and one run's
sample joined with the fake upstream's records of it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.upstream import RequestRecord

QUESTION = "Why does water boil at a lower temperature at high altitude?"

# Items 1-2 at --scale 1: panelists spread over [0.25, 0.45] s (shuffled each run), judge 0.30 s,
# synthesis 0.35 s (streamed: 10 chunks 10 ms apart). Critical path ~1.1 s: a stress path, far
# shorter than any real fusion run. The default --scale 4 (~4.4 s: panelists 1.0-1.8 s, judge
# 1.2 s, synthesis 1.4 s) is still short for hosted models that answer with web search (5-30 s
# per panelist), so the ratios it reports are conservative.
PANEL_LO_S, PANEL_HI_S, JUDGE_S, SYNTH_S = 0.25, 0.45, 0.30, 0.35
# Item 3: N=3, one never answers, quorum 2, grace 0.1 s.
QUORUM_PANEL_S, QUORUM_GRACE_S = (0.25, 0.40), 0.10
# Item 4.
LOAD_N, LOAD_CALL_S = 3, 1.0


@dataclass
class Plan:
    """The models of one run (names encode their latency for the fake upstream)."""

    panel: list[str]
    judge: str
    synthesizer: str
    extra: dict[str, Any] = field(default_factory=dict)  # quorum, grace, ...

    def context(self) -> dict[str, Any]:
        return {
            "panel": [f"openai:{m}" for m in self.panel],
            "judge": f"openai:{self.judge}",
            "synthesizer": f"openai:{self.synthesizer}",
            "tool_mode": "off",
            **self.extra,
        }


def spread_plan(n: int, rng: random.Random, scale: float, cold: bool = False) -> Plan:
    """N panelists whose latencies spread over [PANEL_LO_S, PANEL_HI_S], in a new order each run.

    A model is its latency (`m-1.800s` always takes 1.8 s), as in a deployment where the same
    models answer every request and the configured order says nothing about their speed. `cold`
    gives every run models no process has seen (a fresh prefix), so nothing learnt from earlier
    runs (the send order, nodes/scheduling.py; the built clients) can help: a process's first run.
    """
    if n == 1:
        lats = [PANEL_HI_S]
    else:
        step = (PANEL_HI_S - PANEL_LO_S) / (n - 1)
        lats = [PANEL_LO_S + i * step for i in range(n)]
    rng.shuffle(lats)
    prefix = f"cold{uuid.uuid4().hex[:8]}" if cold else "m"
    return Plan(
        panel=[f"{prefix}-{lat * scale:.3f}s" for lat in lats],
        judge=f"judge-{JUDGE_S * scale:.3f}s",
        synthesizer=f"synth-{SYNTH_S * scale:.3f}s",
    )


def quorum_plan(rng: random.Random, scale: float, bounded: bool) -> Plan:
    panel = [f"q{i + 1}-{lat * scale:.3f}s" for i, lat in enumerate(QUORUM_PANEL_S)]
    panel.append("q3-never")
    rng.shuffle(panel)
    extra = {"quorum": 2, "straggler_grace_s": QUORUM_GRACE_S} if bounded else {}
    return Plan(
        panel=panel,
        judge=f"judge-{JUDGE_S * scale:.3f}s",
        synthesizer=f"synth-{SYNTH_S * scale:.3f}s",
        extra=extra,
    )


@dataclass
class Sample:
    """One fusion run as the caller saw it (monotonic seconds), joined with the upstream's view."""

    tag: str
    start: float
    end: float
    first_token: float | None = None
    ok: bool = False
    error: str | None = None
    cpu_ms: float | None = None  # this process's CPU over the run (graph surface only)
    wall_s: float = 0.0
    critical_s: float | None = None
    overhead: float | None = None
    overhead_ms: float | None = None
    ttft_over_ms: float | None = None  # client TTFT - upstream TTFT (panel + judge + synth ttft)
    delivery_ms: float | None = None  # first token at the client - first chunk sent upstream
    gap_ms: dict[str, float] = field(default_factory=dict)  # where the overhead went


def tag() -> str:
    return uuid.uuid4().hex[:12]


def join(sample: Sample, records: Sequence[RequestRecord]) -> Sample:
    """Fill in the critical path from the upstream's records of this run."""
    sample.wall_s = sample.end - sample.start
    mine = [r for r in records if r.tag == sample.tag]
    panel = [r for r in mine if r.role == "panel" and not r.disconnected and r.done]
    judges = [r for r in mine if r.role == "judge" and r.done]
    synths = [r for r in mine if r.role == "synthesis" and r.done]
    if not (panel and judges and synths):
        return sample
    slowest = max(panel, key=lambda r: r.done or 0.0)
    judge, synth = judges[-1], synths[-1]
    panel_s = max(r.duration or 0.0 for r in panel)
    sample.critical_s = panel_s + (judge.duration or 0.0) + (synth.duration or 0.0)
    sample.overhead = sample.wall_s / sample.critical_s
    sample.overhead_ms = (sample.wall_s - sample.critical_s) * 1000
    first_panel = min(r.arrival for r in mine if r.role == "panel")
    sample.gap_ms = {
        "to_first_panel_request": (first_panel - sample.start) * 1000,
        "slowest_panel_request_late": (
            max(r.arrival for r in mine if r.role == "panel") - first_panel
        )
        * 1000,
        "panel_done_to_judge": (judge.arrival - (slowest.done or 0.0)) * 1000,
        "judge_done_to_synthesis": (synth.arrival - (judge.done or 0.0)) * 1000,
        "synthesis_done_to_end": (sample.end - (synth.done or 0.0)) * 1000,
    }
    if sample.first_token is not None and synth.ttft is not None:
        upstream_ttft = panel_s + (judge.duration or 0.0) + synth.ttft
        sample.ttft_over_ms = (sample.first_token - sample.start - upstream_ttft) * 1000
        sample.delivery_ms = (sample.first_token - (synth.first_chunk or 0.0)) * 1000
    return sample
