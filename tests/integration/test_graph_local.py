"""The whole graph on the real bundled model: llama.cpp serving SmolLM2-135M, corpus search.

One run (the server answers one request at a time). SmolLM2 is weak, so the assertions are about
structure: every panelist answered from the corpus, the judge's output validated against the
schema (grammar-constrained JSON), usage recorded per node, a final answer written.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import graph
from fusiongraph.nodes.analysis import Analysis

pytestmark = pytest.mark.integration


async def _run() -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    final = None
    async for mode, data in graph.astream(
        {"messages": [HumanMessage(content="How does photosynthesis store energy from light?")]},
        context={"preset": "local"},
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(data)
        else:
            final = data
    assert final is not None
    return {"events": events, "message": final["messages"][-1]}


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return asyncio.run(_run())


def test_local_run_answers_with_a_validated_analysis(run: dict[str, Any]) -> None:
    message = run["message"]
    fusion = message.response_metadata["fusion"]
    assert message.text.strip()
    assert len(fusion["panel"]) == 3, fusion["failed_models"]
    assert all(p["content"].strip() for p in fusion["panel"])
    assert {p["model"] for p in fusion["panel"]} == {"local:smollm2-135m"}
    # prefetch mode read the sample corpus: the photosynthesis notes are among the sources
    assert any("photosynthesis.md" in s["url"] for p in fusion["panel"] for s in p["sources"])
    assert fusion["judge"]["ok"], fusion["judge"]
    Analysis.model_validate(fusion["analysis"])
    assert not Analysis.model_validate(fusion["analysis"]).is_empty()


def test_local_run_records_usage_per_node_and_progress(run: dict[str, Any]) -> None:
    fusion = run["message"].response_metadata["fusion"]
    for node in ("panel", "judge", "synthesis"):
        assert fusion["usage"][node]["output_tokens"] > 0, node
    assert fusion["cost_usd"]["total"] == 0.0  # the local model is free
    kinds = [e["event"] for e in run["events"]]
    assert kinds.count("panelist_finished") == 3 and "judge_finished" in kinds
