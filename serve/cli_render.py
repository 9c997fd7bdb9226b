"""How `fusiongraph ask` shows a run to a person: the panel answers, the judge's analysis (who
said what, as trees and tables), the aggregation and the final answer.

Every string that came from a model, a web page or an upstream is shown as a rich `Text`, never
parsed as console markup, with terminal control characters removed: an answer holding
"[bold red]" or "[/]" prints as written, and one holding an escape sequence cannot move the
cursor, retitle the terminal or write to the clipboard. The final answer is Markdown with links
shown as text and address, so a link cannot hide where it goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

# Whole escape sequences first (CSI: cursor, colours, clearing; OSC: title, clipboard, links),
# so no remnant shows; then any other C0 control but tab and newline, DEL, and C1 controls.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC, with its terminator
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """Untrusted text without the control characters a terminal would act on."""
    return _CONTROL.sub("", _SEQUENCE.sub("", str(value)))


def plain(value: Any, style: str = "") -> Text:
    """Untrusted text for the terminal: shown literally (no markup), without control characters."""
    return Text(clean(value), style=style)


def _joined(parts: Iterable[Text | str], sep: str = "") -> Text:
    return Text(sep).join(p if isinstance(p, Text) else Text(p) for p in parts)


def _bullets(items: list[Any]) -> RenderableType:
    if not items:
        return Text("(none)", style="dim")
    return Group(*(_joined(["• ", plain(item)]) for item in items))


def _contradictions(items: list[dict[str, Any]]) -> RenderableType:
    """Each contradiction as a tree: the topic, then each panelist's stance on its own line."""
    if not items:
        return Text("(none)", style="dim")
    trees = []
    for item in items:
        label = _joined(["• ", plain(item.get("topic", ""), "bold")])
        if item.get("checked"):
            sources = item.get("sources") or []
            label.append(f"  (checked; {len(sources)} source{'s' * (len(sources) != 1)})", "dim")
        tree = Tree(label, guide_style="dim")
        for stance in item.get("stances") or []:
            tree.add(
                _joined(
                    [
                        plain(stance.get("panelist", ""), "cyan"),
                        ": ",
                        plain(stance.get("stance", "")),
                    ]
                )
            )
        for url in item.get("sources") or []:
            tree.add(plain(f"source: {url}", "dim"))
        trees.append(tree)
    return Group(*trees)


def _who_table(rows: list[tuple[Any, Any]], what: str, who: str) -> RenderableType:
    if not rows:
        return Text("(none)", style="dim")
    table = Table(expand=False, show_edge=False, pad_edge=False)
    table.add_column(what, ratio=3)
    table.add_column(who, style="cyan", ratio=1)
    for text, names in rows:
        table.add_row(plain(text), plain(names))
    return table


def dropped_summary(dropped: list[dict[str, Any]]) -> Text | None:
    """One line on what the analysis lost for naming panelists the judge was never shown, e.g.
    "2 items dropped, 1 item trimmed: named unknown panelists E, Z"."""
    if not dropped:
        return None
    counts = []
    for removed, verb in (("item", "dropped"), ("names", "trimmed")):
        n = sum(1 for d in dropped if d.get("removed") == removed)
        if n:
            counts.append(f"{n} item{'s' * (n != 1)} {verb}")
    labels = list(dict.fromkeys(label for d in dropped for label in d.get("labels") or []))
    noun = "panelist" if len(labels) == 1 else "panelists"
    line = Text(f"{', '.join(counts)}: named unknown {noun} ", style="yellow")
    line.append_text(_joined((plain(label) for label in labels), ", "))
    return line


def analysis_panels(analysis: dict[str, Any]) -> list[RenderableType]:
    """The judge's analysis as a person reads it: one titled box per section."""
    coverage = [
        (p.get("point", ""), ", ".join(map(str, p.get("panelists") or [])))
        for p in analysis.get("partial_coverage") or []
    ]
    insights = [
        (u.get("insight", ""), u.get("panelist", "")) for u in analysis.get("unique_insights") or []
    ]
    sections: list[tuple[str, RenderableType]] = [
        ("consensus", _bullets(analysis.get("consensus") or [])),
        ("contradictions", _contradictions(analysis.get("contradictions") or [])),
        ("partial coverage", _who_table(coverage, "point", "covered by")),
        ("unique insights", _who_table(insights, "insight", "from")),
        ("blind spots", _bullets(analysis.get("blind_spots") or [])),
    ]
    panels: list[RenderableType] = [Panel(body, title=title) for title, body in sections]
    summary = dropped_summary(analysis.get("dropped") or [])
    if summary is not None:
        panels.append(summary)
    return panels


def _judge_unavailable(judge: dict[str, Any]) -> RenderableType:
    error = judge.get("error") or {}
    text = Text("judge unavailable")
    if error.get("reason"):
        text.append_text(_joined([" (", plain(error["reason"]), ")"]))
    if error.get("message"):
        text.append_text(_joined([": ", plain(error["message"])]))
    text.append("; the answer was written from the raw panel answers")
    return Panel(text, title="analysis", style="yellow")


def aggregation_panel(record: dict[str, Any]) -> RenderableType:
    """How the answers became one: the strategy and why, the vote table, the selection, the
    cascade, and the calls saved against the full path."""
    lines = [
        _joined(
            [
                f"strategy: {record['applied']} (requested {record['requested']}): ",
                plain(record["reason"]),
            ]
        )
    ]
    if record.get("note"):
        lines.append(plain(record["note"]))
    cascade = record.get("cascade")
    if cascade:
        rest = "called" if cascade.get("rest_called") else "never called"
        lines.append(
            plain(
                f"cascade: asked {', '.join(cascade['first'])} first ({cascade['chosen_by']}); "
                f"agreed: {cascade.get('agreed')}; the rest ({', '.join(cascade['rest'])}) {rest}"
            )
        )
    selected = record.get("selected")
    if selected:
        lines.append(plain(f"answer from {selected['panelist']}: {selected['reason']}"))
    if record.get("fallback"):
        lines.append(plain(f"fallback: {record['fallback']}"))
    calls, saved = record["calls"], record["saved"]
    cost = saved.get("cost_usd")
    profiled = ((record.get("calibrated") or {}).get("saved") or {}).get("tokens")
    lines.append(
        Text(
            f"calls: {calls['made']} of {calls['full_path']} on the full path; saved "
            f"{saved['calls']} calls"
            + (f", about ${cost:.6f}" if cost else "")
            + (f", about {profiled:,.0f} tokens as the profile measured" if profiled else "")
        )
    )
    parts: list[RenderableType] = [_joined(lines, "\n")]
    vote = record.get("vote")
    if vote:
        table = Table(title=f"vote ({vote['how']})", expand=False)
        for column in ("panelist", "answer", "votes"):
            table.add_column(column)
        for panelist, answer in vote["answers"].items():
            votes = vote["counts"].get(answer, 0) if answer is not None else 0
            winner = answer is not None and answer == vote.get("winner")
            shown = "(none found)" if answer is None else answer
            table.add_row(plain(panelist), plain(shown, "bold" if winner else ""), str(votes))
        parts.append(table)
    if record.get("verify"):
        parts += verify_renderables(record["verify"])
    return Panel(Group(*parts), title="aggregation")


def verify_renderables(checked: dict[str, Any]) -> list[RenderableType]:
    """verify's record: for code the matrix of candidates by tests (each cell passed or not and
    what the candidate returned), the tests' source, the groups; for math each answer's final
    value against the program's; then why the winner won and the sandbox's time."""
    out: list[RenderableType] = []
    if checked.get("error"):
        out.append(plain(checked["error"], "yellow"))
    if checked.get("kind") == "code" and checked.get("candidates"):
        tests = checked["tests"]
        cases = tests.get("cases") or []
        title = f"verify: {len(cases)} tests from the {tests['source']}"
        table = Table(title=title, expand=False)
        table.add_column("candidate")
        for i, case in enumerate(cases, 1):
            header = _joined([f"{i}. ", plain(case.get("call", ""))])
            if case.get("expected"):
                header.append_text(_joined([" → ", plain(case["expected"])]))
            table.add_column(header)
        table.add_column("passed")
        for label, candidate in checked["candidates"].items():
            cells: list[RenderableType] = []
            outputs = candidate.get("outputs") or []
            for i, passed in enumerate(candidate["passed"]):
                got = outputs[i] if i < len(outputs) else ""
                cells.append(_joined([Text("✓ " if passed else "✗ ", _mark(passed)), plain(got)]))
            style = "bold" if label == checked.get("winner") else ""
            score = f"{sum(candidate['passed'])}/{len(candidate['passed'])}"
            if candidate.get("ran") not in ("completed", "passed", "failed"):
                score += f" ({candidate.get('ran')})"
            table.add_row(plain(label, style), *cells, plain(score))
        out.append(table)
        for i, case in enumerate(cases, 1):
            if case.get("reasoning"):
                out.append(_joined([Text(f"test {i}: ", "dim"), plain(case["reasoning"])]))
        groups = checked.get("groups") or []
        if groups:
            shown_groups = " | ".join(", ".join(map(str, g)) for g in groups)
            out.append(plain(f"behaviour groups: {shown_groups}"))
    elif checked.get("kind") == "math" and checked.get("finals") is not None:
        table = Table(title="verify: the judge's program", expand=False)
        for column in ("panelist", "final answer", "confirmed"):
            table.add_column(column)
        for label, value in checked["finals"].items():
            confirmed = label in (checked.get("confirmed") or [])
            table.add_row(
                plain(label, "bold" if label == checked.get("winner") else ""),
                plain("(none found)" if value is None else value),
                Text("✓" if confirmed else "✗", _mark(confirmed)),
            )
        out.append(table)
        output = checked.get("program_output") or {}
        out.append(_joined([Text("program:\n", "dim"), plain(checked.get("program") or "")]))
        out.append(
            _joined(
                [
                    Text(f"program output ({output.get('ran')}): ", "dim"),
                    plain((output.get("stdout") or output.get("stderr") or "").strip()),
                ]
            )
        )
        if checked.get("disagreement"):
            out.append(Text("the program and the vote disagree", "yellow"))
    out.append(_joined([Text("verify: ", "bold"), plain(checked.get("why", ""))]))
    out.append(Text(f"sandbox: {checked.get('sandbox_s', 0.0):.2f}s", style="dim"))
    return out


def _mark(passed: bool) -> str:
    return "green" if passed else "red"


def _panel_answer(entry: dict[str, Any]) -> RenderableType:
    body = plain(entry["content"])
    if entry["sources"]:
        body.append("\n\nsources:")
        for source in entry["sources"]:
            body.append_text(plain(f"\n  - {source['title'] or source['url']} <{source['url']}>"))
    title = plain(f"{entry['panelist']} · {entry['model']} · {entry['latency_s']}s")
    return Panel(body, title=title)


def result_renderables(fusion: dict[str, Any], answer: str) -> list[RenderableType]:
    """Everything `ask` shows after a run, in order."""
    out = [_panel_answer(entry) for entry in fusion["panel"]]
    out += [
        plain(f"failed {f['panelist']} ({f['model']}): {f['reason']} — {f['message']}", style="red")
        for f in fusion["failed_models"]
    ]
    analysis = fusion.get("analysis")
    if analysis is None and not fusion["judge"].get("model"):
        pass  # no judge was needed (early exit, a vote's winner): the aggregation says why
    elif analysis is None:
        out.append(_judge_unavailable(fusion["judge"]))
    else:
        out += analysis_panels(analysis)
    if fusion.get("aggregation"):
        out.append(aggregation_panel(fusion["aggregation"]))
    final = Markdown(clean(answer) or "(no text)", hyperlinks=False)
    out.append(Panel(final, title="final answer", style="bold"))
    total = fusion["usage"]["total"]
    out.append(Text(f"tokens: {total['input_tokens']} in, {total['output_tokens']} out"))
    return out


def show_result(fusion: dict[str, Any], answer: str, console: Console | None = None) -> None:
    """Print a finished run: the panel answers, the analysis, the aggregation, the final answer."""
    console = console or Console()
    for renderable in result_renderables(fusion, answer):
        console.print(renderable)


def shown(value: Any) -> str:
    """Untrusted text inside a console-markup string: escaped, without control characters."""
    return escape(clean(value))
