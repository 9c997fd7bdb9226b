"""The fusion graph end to end on scripted models: fan-out, join, judge, synthesis, failures."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.errors import FusionError
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json


def context(n: int, **extra: Any) -> dict[str, Any]:
    return fake_context([f"m{i}" for i in range(1, n + 1)], **extra)


def factory_for(n: int, judge: Any = None, synth: Any = "Final answer.") -> FakeFactory:
    scripts: dict[str, Any] = {
        f"m{i}": [f"Answer from panelist {i}. ANSWER-p{i}"] for i in range(1, n + 1)
    }
    scripts["judge"] = judge if judge is not None else [judge_json(consensus=["all agree"])]
    scripts["synth"] = synth if isinstance(synth, Script) else [synth]
    return FakeFactory(scripts)


def ask(text: str = "What is the capital of France?") -> dict[str, Any]:
    return {"messages": [HumanMessage(content=text)]}


@pytest.mark.parametrize("n", [1, 3, 8])
async def test_fan_out_reaches_every_panelist_and_joins_once(n: int) -> None:
    factory = factory_for(n)
    result = await build_graph(factory).ainvoke(ask(), context=context(n))
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and final.content == "Final answer."
    fusion = final.response_metadata["fusion"]
    assert sorted(p["panelist"] for p in fusion["panel"]) == sorted(
        f"p{i}" for i in range(1, n + 1)
    )
    assert all(len(factory.scripts[f"m{i}"].calls) == 1 for i in range(1, n + 1))
    assert len(factory.scripts["judge"].calls) == 1
    assert fusion["analysis"]["consensus"] == ["all agree"]
    assert fusion["failed_models"] == [] and fusion["degraded"] is False
    assert fusion["usage"]["total"]["total_tokens"] == final.usage_metadata["total_tokens"] > 0


def test_sync_invoke_works() -> None:
    result = build_graph(factory_for(3)).invoke(ask(), context=context(3))
    assert result["messages"][-1].content == "Final answer."


async def test_multi_turn_conversation_reaches_every_panelist_intact() -> None:
    conversation = [
        SystemMessage(content="Answer in French."),
        HumanMessage(content="Name a large city in France."),
        AIMessage(content="Lyon."),
        HumanMessage(content="And its population?"),
    ]
    factory = factory_for(3)
    await build_graph(factory).ainvoke({"messages": conversation}, context=context(3))
    for i in range(1, 4):
        sent = factory.scripts[f"m{i}"].calls[0]
        assert isinstance(sent[0], SystemMessage) and "Answer in French." in sent[0].content
        assert [m.content for m in sent[1:]] == [m.content for m in conversation[1:]]
        assert [type(m) for m in sent[1:]] == [HumanMessage, AIMessage, HumanMessage]
    synth_sent = factory.scripts["synth"].calls[0]
    assert [m.content for m in synth_sent[1:]] == [m.content for m in conversation[1:]]


async def test_anonymised_shuffled_labels_map_back_to_panelists() -> None:
    seen_orders = set()

    def judge(messages: list[Any]) -> str:
        prompt = messages[-1].content
        assert "m1" not in prompt and "p1" not in prompt.replace("ANSWER-p1", "")
        labels = dict(re.findall(r"Response ([A-Z]):.*?ANSWER-(p\d)", prompt, re.DOTALL))
        seen_orders.add(tuple(labels[k] for k in sorted(labels)))
        by_panelist = {v: k for k, v in labels.items()}
        return judge_json(
            unique_insights=[{"panelist": by_panelist["p2"], "insight": "only p2 said this"}],
            partial_coverage=[{"point": "x", "panelists": [f"Response {by_panelist['p3']}"]}],
            contradictions=[
                {
                    "topic": "t",
                    "stances": [
                        {"panelist": by_panelist["p1"], "stance": "yes"},
                        {"panelist": by_panelist["p3"], "stance": "no"},
                    ],
                }
            ],
        )

    graph = build_graph(factory_for(3, judge=[judge]))
    for _ in range(8):
        result = await graph.ainvoke(ask(), context=context(3))
        analysis = result["messages"][-1].response_metadata["fusion"]["analysis"]
        assert analysis["unique_insights"] == [{"panelist": "p2", "insight": "only p2 said this"}]
        assert analysis["partial_coverage"][0]["panelists"] == ["p3"]
        assert [s["panelist"] for s in analysis["contradictions"][0]["stances"]] == ["p1", "p3"]
    assert len(seen_orders) > 1, "the judge should see the answers in shuffled order"


async def test_judge_runs_at_temperature_zero() -> None:
    factory = factory_for(2)
    await build_graph(factory).ainvoke(ask(), context=context(2))
    judge_spec = next(s for s in factory.built if s.model == "judge")
    assert judge_spec.temperature == 0.0


@pytest.mark.parametrize("garbage", ["I think they are all fine.", "{not json", judge_json()])
async def test_judge_garbage_degrades_to_synthesis_from_raw_answers(garbage: str) -> None:
    factory = factory_for(3, judge=[garbage])
    result = await build_graph(factory).ainvoke(ask(), context=context(3))
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert fusion["degraded"] is True and fusion["analysis"] is None
    assert fusion["judge"]["ok"] is False and fusion["judge"]["error"]["message"]
    assert fusion["usage"]["judge"]["output_tokens"] > 0  # failed judge replies were still paid
    system = factory.scripts["synth"].calls[0][0].content
    assert all(f"ANSWER-p{i}" in system for i in range(1, 4))
    assert result["messages"][-1].content == "Final answer."


async def test_judge_structured_method_failure_falls_back_to_tolerant_parse() -> None:
    def judge(messages: list[Any]) -> str:
        return (
            "Here you go:\n```json\n" + judge_json(blind_spots=["nobody cited a source"]) + "\n```"
        )

    factory = factory_for(2, judge=[judge])
    ctx = context(
        2, judge={"provider": "openai", "model": "judge", "structured_output": "json_object_schema"}
    )
    result = await build_graph(factory).ainvoke(ask(), context=ctx)
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert fusion["analysis"]["blind_spots"] == ["nobody cited a source"]
    sent_format = factory.scripts["judge"].kwargs[0]["extra_body"]["response_format"]
    assert sent_format["type"] == "json_object"
    assert sent_format["schema"]["properties"]["consensus"]["maxItems"] == 4


async def test_judge_output_with_raw_control_characters_in_strings_is_kept() -> None:
    """Small local models write raw tabs and newlines inside JSON strings, even under a grammar."""
    raw = judge_json(blind_spots=["nobody\tcited\na source"]).replace("\\t", "\t")
    raw = raw.replace("\\n", "\n")
    assert "\t" in raw and "\n" in raw  # really raw, as the model wrote it
    factory = factory_for(2, judge=[raw])
    result = await build_graph(factory).ainvoke(ask(), context=context(2))
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert fusion["judge"]["ok"] and fusion["analysis"]["blind_spots"] == [
        "nobody\tcited\na source"
    ]


async def test_failing_panelist_is_listed_and_run_succeeds() -> None:
    factory = factory_for(3)
    factory.scripts["m2"] = Script([RuntimeError("upstream exploded")])
    result = await build_graph(factory).ainvoke(ask(), context=context(3))
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert [f["panelist"] for f in fusion["failed_models"]] == ["p2"]
    assert fusion["failed_models"][0]["model"] == "openai:m2"
    assert "upstream exploded" in fusion["failed_models"][0]["message"]
    assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p3"]
    assert "ANSWER-p2" not in factory.scripts["judge"].calls[0][-1].content


async def test_all_panelists_failing_raises_typed_error() -> None:
    factory = factory_for(2)
    for name in ("m1", "m2"):
        factory.scripts[name] = Script([RuntimeError("down")])
    with pytest.raises(FusionError) as info:
        await build_graph(factory).ainvoke(ask(), context=context(2))
    assert info.value.reason == "all_panelists_failed"
    assert {f["panelist"] for f in info.value.details["failed_models"]} == {"p1", "p2"}
    assert factory.scripts["judge"].calls == []


async def test_all_rate_limited_reports_rate_limited() -> None:
    class RateLimited(Exception):
        status_code = 429

    factory = factory_for(2)
    for name in ("m1", "m2"):
        factory.scripts[name] = Script([RateLimited("slow down")])
    with pytest.raises(FusionError) as info:
        await build_graph(factory).ainvoke(ask(), context=context(2))
    assert info.value.reason == "rate_limited"


async def test_judge_and_synthesis_failing_raises_typed_error_keeping_answers() -> None:
    factory = factory_for(2, judge=["garbage"], synth=Script([RuntimeError("synth down")]))
    with pytest.raises(FusionError) as info:
        await build_graph(factory).ainvoke(ask(), context=context(2))
    assert info.value.reason == "judge_and_synthesis_failed"
    assert len(info.value.details["panel"]) == 2


async def test_empty_panel_answer_counts_as_failure() -> None:
    factory = factory_for(2)
    factory.scripts["m1"] = Script(["   "])
    result = await build_graph(factory).ainvoke(ask(), context=context(2))
    failed = result["messages"][-1].response_metadata["fusion"]["failed_models"]
    assert failed[0]["panelist"] == "p1" and failed[0]["reason"] == "empty"


async def test_messages_stream_carries_only_synthesis_tokens() -> None:
    factory = factory_for(3, synth="the final streamed answer")
    tokens = []
    async for chunk, meta in build_graph(factory).astream(
        ask(), context=context(3), stream_mode="messages"
    ):
        if chunk.content:
            tokens.append((meta["langgraph_node"], chunk.content))
    assert {node for node, _ in tokens} == {"synthesis"}
    assert "".join(t for _, t in tokens) == "the final streamed answer"
