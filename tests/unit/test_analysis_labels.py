"""The judge's analysis names only panelists that exist: an item naming a label the judge was never
shown (an "E" on a three-answer panel) is dropped, or kept without that name where it still makes
sense, and the record lists what was dropped and why (`analysis.dropped`)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.nodes.analysis import map_labels, parse_analysis
from tests.support.fakes import FakeFactory, fake_context, judge_json
from tests.support.server_app import MODEL, USER, scripts, served

PANEL = ["m1", "m2", "m3"]
UNKNOWN = ("E", "Z", "Response E", "panelist Z")


def labels_shown(messages: list[Any]) -> dict[str, str]:
    """The judge's view: label -> the panelist whose answer it is (answers say ANSWER-p<i>)."""
    return dict(re.findall(r"Response ([A-Z]):.*?ANSWER-(p\d)", messages[-1].content, re.S))


def hostile_judge(*, select: bool = False) -> Any:
    """A judge that names unknown panelists (E, Z) in every section, beside real ones."""

    def reply(messages: list[Any]) -> str:
        a, b, c = sorted(labels_shown(messages))
        extra = {"best": "E", "best_reason": "E is best"} if select else {}
        return judge_json(
            consensus=["all say Paris"],
            contradictions=[
                {  # one known stance left: no contradiction
                    "topic": "only-one-left",
                    "stances": [
                        {"panelist": a, "stance": "yes"},
                        {"panelist": "E", "stance": "no"},
                    ],
                },
                {  # two known stances left: kept without Z's
                    "topic": "two-left",
                    "stances": [
                        {"panelist": a, "stance": "yes"},
                        {"panelist": f"Response {b}", "stance": "no"},
                        {"panelist": "Z", "stance": "maybe"},
                    ],
                },
            ],
            partial_coverage=[
                {"point": "trimmed-point", "panelists": [c, "E"]},
                {"point": "nobody-known", "panelists": ["Z", "panelist E"]},
            ],
            unique_insights=[
                {"panelist": "E", "insight": "ghost insight"},
                {"panelist": b, "insight": "real insight"},
            ],
            blind_spots=["no sources"],
            **extra,
        )

    return [reply]


def factory(judge: Any, synth: str = "SYNTHESIZED") -> FakeFactory:
    return FakeFactory(scripts(judge=judge, synth=[synth]))


async def run(f: FakeFactory, **ctx: Any) -> dict[str, Any]:
    graph = build_graph(f)
    result = await graph.ainvoke(
        {"messages": [HumanMessage("Capital of France?")]}, context=fake_context(PANEL, **ctx)
    )
    return result["messages"][-1].response_metadata["fusion"]


def named_panelists(analysis: dict[str, Any]) -> set[str]:
    """Every panelist the analysis attributes anything to."""
    names = {u["panelist"] for u in analysis["unique_insights"]}
    names |= {s["panelist"] for c in analysis["contradictions"] for s in c["stances"]}
    names |= {p for item in analysis["partial_coverage"] for p in item["panelists"]}
    if analysis.get("best"):
        names.add(analysis["best"])
    return names


def outside_dropped(analysis: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in analysis.items() if k != "dropped"})


async def test_items_naming_unknown_panelists_are_dropped_or_trimmed_in_the_record() -> None:
    fusion = await run(factory(hostile_judge()))
    analysis = fusion["analysis"]
    assert named_panelists(analysis) <= {"p1", "p2", "p3"}
    assert "ghost insight" not in outside_dropped(analysis)
    assert [u["insight"] for u in analysis["unique_insights"]] == ["real insight"]
    assert [c["topic"] for c in analysis["contradictions"]] == ["two-left"]
    assert len(analysis["contradictions"][0]["stances"]) == 2
    assert [p["point"] for p in analysis["partial_coverage"]] == ["trimmed-point"]
    assert len(analysis["partial_coverage"][0]["panelists"]) == 1
    assert analysis["consensus"] == ["all say Paris"] and analysis["blind_spots"] == ["no sources"]
    dropped = {(d["section"], d["item"]): d for d in analysis["dropped"]}
    assert set(dropped) == {
        ("contradictions", "only-one-left"),
        ("contradictions", "two-left"),
        ("partial_coverage", "trimmed-point"),
        ("partial_coverage", "nobody-known"),
        ("unique_insights", "ghost insight"),
    }
    assert dropped[("contradictions", "only-one-left")]["removed"] == "item"
    assert dropped[("contradictions", "two-left")] == {
        "section": "contradictions",
        "item": "two-left",
        "labels": ["Z"],
        "removed": "names",
        "reason": "the stances of unknown panelists were removed",
    }
    assert dropped[("partial_coverage", "nobody-known")]["labels"] == ["Z", "panelist E"]
    assert dropped[("partial_coverage", "nobody-known")]["removed"] == "item"
    assert dropped[("partial_coverage", "trimmed-point")]["removed"] == "names"
    assert dropped[("unique_insights", "ghost insight")]["reason"] == "names an unknown panelist"
    assert all(d["reason"] for d in analysis["dropped"])
    json.dumps(fusion)  # the record stays plain data


async def test_the_synthesizer_never_sees_what_was_dropped() -> None:
    f = factory(hostile_judge())
    await run(f)
    synth_system = f.scripts["synth"].calls[0][0].content
    assert "real insight" in synth_system
    assert "ghost insight" not in synth_system and "only-one-left" not in synth_system


async def test_a_selection_naming_an_unknown_label_is_no_selection() -> None:
    f = factory(hostile_judge(select=True))
    fusion = await run(f, aggregation="select")
    agg = fusion["aggregation"]
    assert agg["selected"] is None and agg["final"] == "synthesis"
    assert "'E'" in agg["fallback"]
    assert len(f.scripts["synth"].calls) == 1
    analysis = fusion["analysis"]
    assert "best" not in analysis and "best_reason" not in analysis
    assert {
        "section": "best",
        "item": None,
        "labels": ["E"],
        "removed": "item",
        "reason": "names a response the judge was not shown: no selection",
    } in analysis["dropped"]


async def test_a_clean_analysis_drops_nothing() -> None:
    def judge(messages: list[Any]) -> str:
        a, *_ = sorted(labels_shown(messages))
        return judge_json(consensus=["c"], unique_insights=[{"panelist": a, "insight": "i"}])

    analysis = (await run(factory([judge])))["analysis"]
    assert analysis["dropped"] == [] and len(analysis["unique_insights"]) == 1


def test_map_labels_keeps_no_unknown_label_in_any_section() -> None:
    analysis = parse_analysis(
        json.dumps(
            {
                "contradictions": [
                    {"topic": "t", "stances": [{"panelist": x, "stance": "s"} for x in UNKNOWN]}
                ],
                "partial_coverage": [{"point": "p", "panelists": list(UNKNOWN)}],
                "unique_insights": [{"panelist": x, "insight": "i"} for x in UNKNOWN[:4]],
                "best": "Z",
                "best_reason": "why",
            }
        )
    )
    mapped = map_labels(analysis, {"A": "p1", "B": "p2", "C": "p3"})
    assert mapped["contradictions"] == mapped["partial_coverage"] == []
    assert mapped["unique_insights"] == [] and "best" not in mapped
    assert [d["section"] for d in mapped["dropped"]] == [
        "best",
        "contradictions",
        "partial_coverage",
        *["unique_insights"] * 4,
    ]


def test_a_long_unknown_label_is_clipped_in_dropped() -> None:
    analysis = parse_analysis(
        judge_json(unique_insights=[{"panelist": "X" * 5000, "insight": "i"}])
    )
    (entry,) = map_labels(analysis, {"A": "p1"})["dropped"]
    assert len(entry["labels"][0]) <= 40


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": USER}),
        ("/v1/messages", {"model": MODEL, "messages": USER, "max_tokens": 256}),
        ("/v1/responses", {"model": MODEL, "input": USER[0]["content"]}),
    ],
)
def test_dropped_reaches_every_http_api(path: str, body: dict[str, Any]) -> None:
    with served(factory(hostile_judge())) as (url, _client):
        response = httpx.post(f"{url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    analysis = response.json()["fusion"]["analysis"]
    assert {d["item"] for d in analysis["dropped"]} >= {"ghost insight", "nobody-known"}
    assert named_panelists(analysis) <= {"p1", "p2", "p3"}
