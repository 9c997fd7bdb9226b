"""The files of an eval: report.md, a self-contained report.html (inline CSS, plots as inline
SVG), samples.jsonl (every sample) and summary.json, in `fusion-evals/<name>-<timestamp>/`."""

from __future__ import annotations

import html
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusiongraph.evals.stats import ArmStats, TaskStats

NOTES = [
    "A panelist arm is the answer that panelist gave inside the fusion run (same request, same "
    "tools), read from the run's record: it was not paid for twice.",
    "The strategy arms of an item share its panel answers through the graph's panel cache: only "
    "the judge and the synthesis ran again. Each arm's cost, tokens and latency are its "
    "deployment figures: what it costs on its own, panel included (a cached panel answer counts "
    "what it cost when it was paid for; latency adds its panel time to the run's wall time).",
    "The baseline is the best single panelist chosen by accuracy on these same items, which "
    "favours the baseline: a gain over it is, if anything, understated.",
    "Accuracy: 95 % Wilson interval. Δ: the paired difference against the baseline, 95 % "
    "percentile bootstrap over items (seeded). A missing answer (timeout, error) counts as wrong.",
    "Cost 'unknown' means a price was missing for a model, never zero.",
]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _ci(ci: Sequence[float] | None, signed: bool = False) -> str:
    if ci is None:
        return ""
    fmt = "{:+.0f}" if signed else "{:.0f}"
    return f"[{fmt.format(ci[0] * 100)}, {fmt.format(ci[1] * 100)}]"


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}s"


def _tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _wtl(stats: ArmStats) -> str:
    if stats.baseline:
        return "baseline"
    if stats.wins is None:
        return "–"
    return f"{stats.wins}/{stats.ties}/{stats.losses}"


def _delta(stats: ArmStats) -> str:
    if stats.baseline or stats.diff is None:
        return "–"
    return f"{stats.diff * 100:+.0f} {_ci(stats.diff_ci, signed=True)}"


HEADERS = [
    "arm",
    "n",
    "accuracy [95% CI]",
    "W/T/L vs best panelist",
    "Δ pts [95% CI]",
    "cost/item",
    "tokens/item",
    "latency p50 / p95",
    "errors",
    "verdict",
]


def arm_row(stats: ArmStats) -> list[str]:
    return [
        stats.arm,
        str(stats.n),
        f"{_pct(stats.accuracy)} {_ci(stats.ci)}" if stats.n else "–",
        _wtl(stats),
        _delta(stats),
        _cost(stats.cost_per_item),
        _tokens(stats.tokens_per_item),
        f"{_seconds(stats.latency_p50)} / {_seconds(stats.latency_p95)}",
        str(stats.errors) + (f" (+{stats.unscored} unscored)" if stats.unscored else ""),
        stats.verdict,
    ]


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def headline(task: TaskStats) -> str:
    """The task type's verdict in one line: the fusion arms against the baseline."""
    fusion = [a for a in task.arms if a.kind == "fusion"]
    if not any(a.n for a in task.arms):
        return "not scored: no sample got a score (samples.jsonl says why, in `score_error`)"
    if not fusion or task.baseline is None:
        return "no fusion arm and baseline to compare"
    best = max(fusion, key=lambda a: (a.accuracy, -(a.cost_per_item or 0)))
    return f"best fusion arm `{best.arm}` against `{task.baseline}`: {best.verdict}"


CALIBRATED = "fusion:calibrated"


def calibrated_line(task: TaskStats) -> str:
    """Where calibrated auto stands against the best member on the held-out items: above, equal
    or below, and whether the paired interval says it is significant."""
    arm = next((a for a in task.arms if a.arm == CALIBRATED), None)
    if arm is None or not arm.n:
        return "no scored `fusion:calibrated` sample"
    if task.baseline is None:
        return "no panelist arm to compare with"
    if arm.diff is None:
        return f"`{CALIBRATED}` against `{task.baseline}`: {arm.verdict}"
    where = "above" if arm.diff > 0 else "below" if arm.diff < 0 else "equal to"
    low, high = arm.diff_ci or (0.0, 0.0)
    sure = "significantly " if low > 0 or high < 0 else ""
    return (
        f"`{CALIBRATED}` is {sure}{where} the best member `{task.baseline}` "
        f"({_pct(arm.accuracy)} against {_pct(next(a.accuracy for a in task.arms if a.baseline))}"
        f"): {arm.verdict}"
    )


def held_out_markdown(meta: dict[str, Any], held_out: Sequence[TaskStats]) -> list[str]:
    calibration = meta.get("calibration") or {}
    held = calibration.get("held_out_items") or []
    lines = [
        f"## Held out: `{CALIBRATED}` ({_count(len(held), 'item')})",
        "",
        f"The profile (`{calibration.get('fit_profile')}`) was fitted on "
        f"{_count(len(calibration.get('fit_items') or []), 'item')} (split "
        f"{calibration.get('split')}, seed {calibration.get('seed')}); every arm below is judged "
        "on the other items only, against the best member on them.",
        "",
    ]
    decided = calibration.get("decisions") or {}
    pooled: Counter[str] = Counter()
    for counts in decided.values():
        pooled.update(counts)
    for task in held_out:
        counts = pooled if task.task_type == "all" else decided.get(task.task_type, {})
        chose = ", ".join(f"{what} ×{n}" for what, n in counts.items())
        lines += [
            f"### {task.task_type} ({_count(task.items, 'item')}, held out)",
            "",
            f"**Calibrated:** {calibrated_line(task)}.",
            "",
            f"Its choices: {chose or 'none recorded'} (each sample's `aggregation.calibrated` "
            "says why).",
            "",
            _md_table([arm_row(a) for a in task.arms]),
            "",
        ]
    return lines


def markdown(
    meta: dict[str, Any], tasks: Sequence[TaskStats], held_out: Sequence[TaskStats] | None = None
) -> str:
    lines = [
        f"# fusiongraph eval: {meta['name']}",
        "",
        f"{_count(meta['items'], 'item')}, {_count(len(meta['arms']), 'arm')}, "
        f"{_count(meta['samples'], 'sample')}; "
        f"preset `{meta['settings'].get('preset') or 'custom'}`; grader "
        f"`{meta.get('grader') or 'none'}`; {meta['runs_made']} graph runs made, "
        f"{meta['samples_from_cache']} samples served from the cache; wall "
        f"{meta['wall_s']:.0f} s.",
        "",
    ]
    for task in tasks:
        lines += [
            f"## {task.task_type} ({_count(task.items, 'item')})",
            "",
            f"**Verdict:** {headline(task)}.",
            "",
            _md_table([arm_row(a) for a in task.arms]),
            "",
        ]
    if held_out:
        lines += held_out_markdown(meta, held_out)
    lines += ["## Arms", ""]
    lines += [f"- `{arm['name']}`: {arm['note'] or arm['kind']}" for arm in meta["arms"]]
    lines += ["", "## How to read this", ""]
    lines += [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"


def plot_svg(task: TaskStats) -> str:
    """Accuracy (with its interval) against cost per item, one point per arm, as SVG text.
    Costs all unknown or all zero: tokens per item on the x axis instead."""
    import matplotlib

    matplotlib.use("svg", force=False)
    from matplotlib.figure import Figure

    by_cost = all(a.cost_per_item is not None for a in task.arms) and any(
        a.cost_per_item for a in task.arms
    )
    xs = [(a.cost_per_item if by_cost else a.tokens_per_item) or 0.0 for a in task.arms]
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    for stats, x in zip(task.arms, xs, strict=True):
        if not stats.n:
            continue  # nothing scored: no point to draw
        low, high = stats.ci
        # max(0, ...): at 0 % or 100 % the interval's end equals the accuracy up to rounding
        below, above = max(0.0, stats.accuracy - low), max(0.0, high - stats.accuracy)
        axes.errorbar(
            [x],
            [stats.accuracy * 100],
            yerr=[[below * 100], [above * 100]],
            fmt="o",
            capsize=3,
            color={"fusion": "#c0392b", "panelist": "#2c3e50"}.get(stats.kind, "#2874a6"),
        )
        axes.annotate(
            stats.arm,
            (x, stats.accuracy * 100),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.set_xlabel("cost per item (USD)" if by_cost else "tokens per item (costs unknown or $0)")
    axes.set_ylabel("accuracy, % (95 % CI)")
    axes.set_ylim(-5, 105)
    axes.set_title(f"{task.task_type}: accuracy against cost")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]  # without the XML prolog and doctype, to sit inside HTML


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222;padding:0 1rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr.baseline td{background:#f7f9fc} code{background:#f3f3f3;padding:0 .2rem}
.verdict{font-weight:600} .plot svg{max-width:100%;height:auto} .notes li{margin:.2rem 0}
"""


def _inline_code(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(task: TaskStats) -> str:
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in HEADERS) + "</tr>"]
    for stats in task.arms:
        cls = " class='baseline'" if stats.baseline else ""
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in arm_row(stats))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join([*rows, "</table>"])


def html_page(
    meta: dict[str, Any], tasks: Sequence[TaskStats], held_out: Sequence[TaskStats] | None = None
) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>fusiongraph eval: {html.escape(meta['name'])}</title><style>{CSS}</style>",
        f"</head><body><h1>fusiongraph eval: {html.escape(meta['name'])}</h1>",
        f"<p>{_count(meta['items'], 'item')}, {_count(len(meta['arms']), 'arm')}, "
        f"{_count(meta['samples'], 'sample')}; preset "
        f"<code>{html.escape(str(meta['settings'].get('preset') or 'custom'))}</code>; grader "
        f"<code>{html.escape(str(meta.get('grader') or 'none'))}</code>; "
        f"{meta['runs_made']} graph runs made; wall {meta['wall_s']:.0f} s.</p>",
    ]
    for task in tasks:
        parts.append(f"<h2>{html.escape(task.task_type)} ({_count(task.items, 'item')})</h2>")
        parts.append(f"<p class='verdict'>{_inline_code(headline(task))}.</p>")
        parts.append(_html_table(task))
        try:
            parts.append(f"<div class='plot'>{plot_svg(task)}</div>")
        except ImportError:
            parts.append("<p>(plots need matplotlib: pip install 'fusiongraph[eval]')</p>")
        except Exception as exc:  # a plot must never cost the report: the tables stand alone
            parts.append(f"<p>(no plot: {html.escape(f'{type(exc).__name__}: {exc}')})</p>")
    if held_out:
        held = (meta.get("calibration") or {}).get("held_out_items") or []
        parts.append(f"<h2>Held out: <code>{CALIBRATED}</code> ({_count(len(held), 'item')})</h2>")
        for task in held_out:
            parts.append(f"<h3>{html.escape(task.task_type)} (held out)</h3>")
            parts.append(f"<p class='verdict'>{_inline_code(calibrated_line(task))}.</p>")
            parts.append(_html_table(task))
    parts.append("<h2>Arms</h2><ul>")
    parts += [
        f"<li><code>{html.escape(a['name'])}</code>: {html.escape(a['note'] or a['kind'])}</li>"
        for a in meta["arms"]
    ]
    parts.append("</ul><h2>How to read this</h2><ul class='notes'>")
    parts += [f"<li>{html.escape(note)}</li>" for note in NOTES]
    parts.append("</ul><p>Every sample: <code>samples.jsonl</code>; the numbers: ")
    parts.append("<code>summary.json</code>.</p></body></html>")
    return "\n".join(parts)


SAMPLE_FIELDS = (
    "item",
    "task_type",
    "arm",
    "kind",
    "answer",
    "error",
    "score",
    "score_error",
    "vs_baseline",
    "cost_usd",
    "latency_s",
    "tokens",
    "aggregation",
    "vote",
    "from_cache",
)  # `aggregation` holds calibrated auto's decision (`calibrated`): what it chose, and why


def write_report(
    folder: Path,
    meta: dict[str, Any],
    tasks: Sequence[TaskStats],
    samples: Sequence[dict],
    *,
    held_out: Sequence[TaskStats] | None = None,
) -> str:
    """Write the four files (beside calibration.json, evals/evaluate.py); return the markdown.
    `held_out`: the statistics of the items `fusion:calibrated` was judged on."""
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, tasks, held_out)
    (folder / "report.md").write_text(text, encoding="utf-8")
    (folder / "report.html").write_text(html_page(meta, tasks, held_out), encoding="utf-8")
    with (folder / "samples.jsonl").open("w", encoding="utf-8") as handle:
        for sample in samples:
            row = {k: sample.get(k) for k in SAMPLE_FIELDS}
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    summary = {**meta, "notes": NOTES, "task_types": [t.to_dict() for t in tasks]}
    if held_out:
        summary["held_out"] = [t.to_dict() for t in held_out]
    (folder / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    return text
