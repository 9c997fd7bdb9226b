"""What `fusiongraph ask` prints: the analysis as a person reads it (a contradiction's topic, then
each panelist's stance on its own line; a point and who covered it; what was dropped), and model
text printed as written: console markup in an answer is shown, never applied, and terminal
control sequences never reach the terminal."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from langgraph.graph.state import CompiledStateGraph
from rich.console import Console
from typer.testing import CliRunner

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.cli import app
from fusiongraph.serve.cli_render import dropped_summary, show_result
from tests.support.fakes import FakeFactory, judge_json, judge_spec
from tests.support.server_app import scripts

MARKUP = "[bold red]LOUD[/] and [/] and [link=http://evil.example]x[/link]"
CONTROL = "\x1b]52;c;aGVsbG8=\x07\x1b[2J\x1b]0;pwned\x07\x9b31m"


def record(**analysis: Any) -> dict[str, Any]:
    """A finished run's record, as the graph writes it, with the given analysis sections."""
    base = {
        "consensus": [],
        "contradictions": [],
        "partial_coverage": [],
        "unique_insights": [],
        "blind_spots": [],
        "dropped": [],
    }
    return {
        "panel": [
            {
                "panelist": "p1",
                "model": "m1",
                "content": f"panel says {MARKUP}",
                "latency_s": 1.0,
                "sources": [{"title": "[/] title", "url": "https://example.org/[x]"}],
            }
        ],
        "failed_models": [
            {"panelist": "p2", "model": "m2", "reason": "upstream", "message": "bad [/] reply"}
        ],
        "analysis": {**base, **analysis},
        "judge": {"model": "judge", "ok": True},
        "aggregation": None,
        "usage": {"total": {"input_tokens": 3, "output_tokens": 4}},
    }


def printed(fusion: dict[str, Any], answer: str = "final") -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    show_result(fusion, answer, console)
    return console.export_text()


def test_contradictions_show_the_topic_then_one_stance_per_line() -> None:
    out = printed(
        record(
            contradictions=[
                {
                    "topic": "Is the sky blue?",
                    "stances": [
                        {"panelist": "p1", "stance": "yes, Rayleigh scattering"},
                        {"panelist": "p3", "stance": "no, it is violet"},
                    ],
                    "checked": True,
                    "sources": ["https://example.org/sky"],
                }
            ]
        )
    )
    lines = out.splitlines()
    topic = next(i for i, line in enumerate(lines) if "Is the sky blue?" in line)
    stance_lines = [line for line in lines[topic + 1 :] if re.search(r"p[13]: ", line)]
    assert "p1: yes, Rayleigh scattering" in stance_lines[0]
    assert "p3: no, it is violet" in stance_lines[1]
    assert "checked; 1 source" in lines[topic] and "source: https://example.org/sky" in out
    assert '"stances"' not in out and "{" not in out


def test_partial_coverage_and_unique_insights_show_the_point_and_who() -> None:
    out = printed(
        record(
            partial_coverage=[{"point": "the ozone layer", "panelists": ["p1", "p3"]}],
            unique_insights=[{"panelist": "p2", "insight": "sunsets are red"}],
        )
    )
    coverage = next(line for line in out.splitlines() if "the ozone layer" in line)
    assert "p1, p3" in coverage
    insight = next(line for line in out.splitlines() if "sunsets are red" in line)
    assert "p2" in insight
    assert '"point"' not in out and '"panelist"' not in out and "{" not in out
    for title in ("consensus", "contradictions", "partial coverage", "unique insights"):
        assert title in out


def test_dropped_items_are_summed_up_in_one_line() -> None:
    dropped = [
        {"section": "unique_insights", "item": "i", "labels": ["E"], "removed": "item"},
        {"section": "contradictions", "item": "t", "labels": ["Z"], "removed": "item"},
        {"section": "partial_coverage", "item": "p", "labels": ["E"], "removed": "names"},
    ]
    for entry in dropped:
        entry["reason"] = "names an unknown panelist"
    summary = dropped_summary(dropped)
    assert summary is not None
    assert summary.plain == "2 items dropped, 1 item trimmed: named unknown panelists E, Z"
    assert summary.plain in " ".join(printed(record(dropped=dropped)).split())
    assert dropped_summary([]) is None


def test_model_text_with_console_markup_prints_as_written() -> None:
    fusion = record(
        consensus=[MARKUP],
        contradictions=[
            {
                "topic": MARKUP,
                "stances": [
                    {"panelist": "p1", "stance": "[/]"},
                    {"panelist": "p3", "stance": "[red]"},
                ],
            }
        ],
        partial_coverage=[{"point": "[/]", "panelists": ["p1"]}],
        unique_insights=[{"panelist": "p1", "insight": "[bold]x[/bold] [/]"}],
        blind_spots=["[/]"],
        dropped=[
            {"section": "best", "item": None, "labels": ["[/]"], "removed": "item", "reason": "r"}
        ],
    )
    fusion["aggregation"] = {
        "applied": "select",
        "requested": "select",
        "reason": "[/] requested",
        "note": "[bold]note[/]",
        "selected": {"panelist": "p1", "reason": "[/] it is best"},
        "fallback": None,
        "calls": {"made": 4, "full_path": 5},
        "saved": {"calls": 1, "cost_usd": None},
        "vote": {
            "how": "auto",
            "answers": {"p1": "[/]", "p2": "[red]x"},
            "counts": {"[/]": 1, "[red]x": 1},
            "winner": "[/]",
        },
    }
    out = " ".join(printed(fusion, answer=f"answer {MARKUP}").split())
    assert "[bold red]LOUD[/] and [/]" in out
    assert "bad [/] reply" in out and "[/] title" in out
    assert "[bold]x[/bold] [/]" in out and "[/] it is best" in out and "[red]x" in out


def test_calibrated_runs_say_what_they_saved_in_tokens_when_calls_are_free() -> None:
    fusion = record()
    fusion["aggregation"] = {
        "applied": "member",
        "requested": "auto",
        "reason": "calibrated: p3",
        "selected": {"panelist": "p3", "reason": "no fusion arm beat p3 significantly"},
        "calibrated": {"saved": {"calls": 4, "tokens": 2900.4, "cost_usd": None}},
        "calls": {"made": 1, "full_path": 5},
        "saved": {"calls": 4, "cost_usd": 0.0},
    }
    out = " ".join(printed(fusion).split())
    assert "saved 4 calls, about 2,900 tokens as the profile measured" in out
    assert "$0.000000" not in out  # free models: no cost to speak of


def test_terminal_control_sequences_never_reach_the_terminal() -> None:
    fusion = record(consensus=[f"agree{CONTROL}"])
    fusion["panel"][0]["content"] = f"hi{CONTROL}there"
    terminal = io.StringIO()
    show_result(fusion, f"final{CONTROL}", Console(file=terminal, force_terminal=True, width=120))
    raw = terminal.getvalue()
    for sequence in ("\x1b]52", "\x1b[2J", "\x1b]0;", "\x07", "\x9b"):
        assert sequence not in raw
    assert "hithere" in raw


def test_a_markdown_link_shows_where_it_goes() -> None:
    out = printed(record(), answer="see [the docs](http://evil.example/steal)")
    assert "http://evil.example/steal" in out


def test_judge_failure_reads_as_a_sentence_not_a_dict() -> None:
    fusion = record()
    fusion["analysis"] = None
    fusion["judge"] = {
        "model": "judge",
        "ok": False,
        "error": {"reason": "timeout", "message": "[/] slow"},
    }
    out = " ".join(printed(fusion).split())
    assert "judge unavailable (timeout): [/] slow" in out and "{" not in out


# --- `fusiongraph ask`, end to end on fake models -----------------------------------------------

MODELS = (
    *("--panel", "openai:m1", "--panel", "openai:m2", "--panel", "openai:m3"),
    *("--judge", json.dumps(judge_spec()), "--synthesizer", "openai:synth", "--tool-mode", "off"),
)


def use_graph(monkeypatch: pytest.MonkeyPatch, compiled: CompiledStateGraph) -> None:
    """`ask` runs on `compiled` (fake models), wherever the CLI opens its graph from."""

    @asynccontextmanager
    async def open_graph(*_: Any, **__: Any) -> AsyncIterator[CompiledStateGraph]:
        yield compiled

    for where in ("fusiongraph.graph.builder", "fusiongraph.graph.persistence"):
        monkeypatch.setattr(f"{where}.open_graph", open_graph, raising=False)


def hostile_judge(messages: list[Any]) -> str:
    labels = sorted(set(re.findall(r"Response ([A-Z]):", messages[-1].content)))
    return judge_json(
        consensus=[MARKUP],
        contradictions=[
            {
                "topic": "the colour",
                "stances": [
                    {"panelist": labels[0], "stance": "blue [/]"},
                    {"panelist": labels[1], "stance": "violet"},
                ],
            }
        ],
        unique_insights=[{"panelist": "E", "insight": "ghost insight"}],
    )


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[CompiledStateGraph]:
    factory = FakeFactory(
        scripts(
            m1=[f"Panelist 1 says {MARKUP}. ANSWER-p1"],
            judge=[hostile_judge],
            synth=[f"final {MARKUP}"],
        )
    )
    compiled = build_graph(factory)
    use_graph(monkeypatch, compiled)
    yield compiled


def test_ask_prints_hostile_answers_literally_and_the_analysis_readably(
    graph: CompiledStateGraph,
) -> None:
    result = CliRunner().invoke(app, ["ask", "Why is the sky blue?", *MODELS])
    assert result.exit_code == 0, result.output
    out = result.stdout
    flat = " ".join(out.split())
    assert "[bold red]LOUD[/] and [/]" in flat
    lines = out.splitlines()
    topic = next(i for i, line in enumerate(lines) if "the colour" in line)
    stances = [line for line in lines[topic + 1 : topic + 3]]
    assert any(": blue [/]" in line for line in stances)
    assert any(": violet" in line for line in stances)
    assert "ghost insight" not in out
    assert "1 item dropped: named unknown panelist E" in flat
    assert '"stances"' not in out


def test_a_failed_run_prints_upstream_messages_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = {f"m{i}": [RuntimeError(f"upstream said [/] and [bold]{i}")] for i in (1, 2, 3)}
    use_graph(monkeypatch, build_graph(FakeFactory(scripts(**failing))))
    result = CliRunner().invoke(app, ["ask", "Why is the sky blue?", *MODELS])
    assert result.exit_code == 1, result.output
    assert "fusion failed (all_panelists_failed)" in result.stderr
    assert "upstream said [/] and [bold]1" in " ".join(result.stderr.split())
