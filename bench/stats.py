"""Percentiles, the results table and its rows, against the issue's targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.plans import Sample

TARGET_OVERHEAD_P50, TARGET_OVERHEAD_P95 = 1.01, 1.03
TARGET_TTFT_P95_MS = 50.0
TARGET_QUORUM = 1.03


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile with linear interpolation (q in 0..100)."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Row:
    """One line of the results table."""

    item: str
    surface: str
    n: int
    metric: str
    p50: float | None
    p95: float | None
    target: str
    verdict: str
    runs: int
    note: str = ""


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "succeeded":
        return f"{value:.0f}"
    in_ms = "ms" in metric.replace(",", " ").split() or metric.startswith("MB")
    return f"{value:.1f}" if in_ms else f"{value:.3f}"


def table(rows: Sequence[Row]) -> str:
    head = "| item | surface | N | metric | p50 | p95 | target | result | runs | note |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r.item} | {r.surface} | {r.n} | {r.metric} | {_fmt(r.p50, r.metric)} | "
            f"{_fmt(r.p95, r.metric)} | {r.target} | {r.verdict} | {r.runs} | {r.note} |"
        )
    return "\n".join(lines)


def overhead_rows(
    item: str, surface: str, n: int, samples: list[Sample], targeted: bool = True
) -> list[Row]:
    """The overhead and first-token rows of one measurement; `targeted=False` reports the values
    without a verdict (the cold rows: no target is set for a process's first run)."""
    good = [s for s in samples if s.ok and s.overhead is not None]
    failed = len(samples) - len(good)
    ratios = [s.overhead for s in good if s.overhead is not None]
    ms = [s.overhead_ms for s in good if s.overhead_ms is not None]
    p50, p95 = pct(ratios, 50), pct(ratios, 95)
    ok = None if p50 is None else (p50 <= TARGET_OVERHEAD_P50 and p95 <= TARGET_OVERHEAD_P95)
    crit = pct([s.critical_s for s in good if s.critical_s], 50)
    note = f"+{pct(ms, 50):.1f}/{pct(ms, 95):.1f} ms over a {crit:.2f} s path" if ms else ""
    if failed:
        note += f"; {failed} failed"
        ok = False
    rows = [
        Row(
            item,
            surface,
            n,
            "wall / critical path",
            p50,
            p95,
            f"≤{TARGET_OVERHEAD_P50} p50, ≤{TARGET_OVERHEAD_P95} p95" if targeted else "(report)",
            verdict(ok if targeted else None),
            len(samples),
            note,
        )
    ]
    ttft = [s.ttft_over_ms for s in good if s.ttft_over_ms is not None]
    if ttft:
        p95t = pct(ttft, 95)
        delivery = [s.delivery_ms for s in good if s.delivery_ms is not None]
        rows.append(
            Row(
                "2 first token",
                surface,
                n,
                "TTFT − upstream TTFT, ms",
                pct(ttft, 50),
                p95t,
                f"≤{TARGET_TTFT_P95_MS:.0f} ms p95" if targeted else "(report)",
                verdict(p95t is not None and p95t <= TARGET_TTFT_P95_MS if targeted else None),
                len(ttft),
                f"first-chunk delivery {pct(delivery, 50):.1f}/{pct(delivery, 95):.1f} ms",
            )
        )
    return rows


def gap_summary(samples: list[Sample]) -> dict[str, dict[str, float | None]]:
    keys = sorted({k for s in samples for k in s.gap_ms})
    return {
        k: {
            "p50": pct([s.gap_ms[k] for s in samples if k in s.gap_ms], 50),
            "p95": pct([s.gap_ms[k] for s in samples if k in s.gap_ms], 95),
        }
        for k in keys
    }


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value
