"""The judge that checks (judge_tools): a bounded tool loop, contradictions that say whether they
were checked and on which sources, failures that never fail the judge, the deadline, the cost."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.pricing import worst_case_cost
from fusiongraph.nodes import judge_tools, prompts
from fusiongraph.tools.untrusted import OPEN_MARKER
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json, judge_spec, tool_call

ASK = {"messages": [HumanMessage(content="How tall is Mount Etna?")]}
PRICE = {"input": 1.0, "output": 2.0}  # USD per million tokens, so costs are known
INVENTED = "https://invented.example/etna"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "etna.md").write_text(
        "# Mount Etna\n\nMount Etna on Sicily is about 3,357 m tall. ETNA-FACT-42.\n"
    )
    (tmp_path / "tides.md").write_text("# Tides\n\nTides are caused by the Moon's gravity.\n")
    return tmp_path


def ctx(corpus: Path, **extra: Any) -> dict[str, Any]:
    settings = {
        "judge": judge_spec(price=PRICE),
        "search_provider": "corpus",
        "corpus_dir": str(corpus),
        "judge_tools": True,
        **extra,
    }
    return fake_context(["a", "b"], **settings)


def is_check_step(messages: list[BaseMessage]) -> bool:
    """A call of the judge's tool loop (its system prompt), not its analysis call."""
    system = messages[0]
    return isinstance(system, SystemMessage) and "check the facts" in str(system.content)


def urls_in(messages: list[BaseMessage]) -> list[str]:
    text = " ".join(str(m.content) for m in messages)
    return list(dict.fromkeys(re.findall(r"URL: (\S+)", text)))


def checked_analysis(messages: list[BaseMessage], *, extra_sources: list[str]) -> str:
    """The analysis a judge writes after its checks: one contradiction, claimed checked on the
    URLs the evidence showed (plus whatever `extra_sources` it makes up)."""
    return judge_json(
        consensus=["Etna is a volcano on Sicily"],
        contradictions=[
            {
                "topic": "Etna's height",
                "stances": [
                    {"panelist": "A", "stance": "about 3,357 m (supported by the corpus)"},
                    {"panelist": "B", "stance": "about 5,000 m"},
                ],
                "checked": True,
                "sources": [*urls_in(messages)[:1], *extra_sources],
            }
        ],
    )


def checking_judge(max_searches: int = 1) -> Script:
    """A judge that searches `max_searches` times in its loop, then writes notes, then the
    analysis (claiming a source it never saw, too)."""

    def reply(messages: list[BaseMessage]) -> AIMessage | str:
        if not is_check_step(messages):
            return checked_analysis(messages, extra_sources=[INVENTED])
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < max_searches and not _budget_spent(messages):
            return AIMessage(
                content="", tool_calls=[tool_call("web_search", f"s{done}", query="Etna height")]
            )
        return f"Etna's height: the corpus says about 3,357 m, so A is right. {urls_in(messages)}"

    return Script([reply])


def _budget_spent(messages: list[BaseMessage]) -> bool:
    last = messages[-1]
    return isinstance(last, HumanMessage) and "budget is spent" in str(last.content)


def factory(judge: Script) -> FakeFactory:
    return FakeFactory(
        {
            "a": ["Etna is about 3,357 m tall."],
            "b": ["Etna is about 5,000 m tall."],
            "judge": judge,
            "synth": ["Etna is about 3,357 m tall."],
        }
    )


def fusion_of(result: dict[str, Any]) -> dict[str, Any]:
    return result["messages"][-1].response_metadata["fusion"]


async def test_the_judge_checks_a_contradiction_and_names_its_sources(corpus: Path) -> None:
    judge = checking_judge()
    result = await build_graph(factory(judge)).ainvoke(ASK, context=ctx(corpus))
    fusion = fusion_of(result)
    (item,) = fusion["analysis"]["contradictions"]
    assert item["checked"] is True
    assert len(item["sources"]) == 1 and item["sources"][0].startswith("corpus://etna.md")
    assert INVENTED not in item["sources"]  # a source its tools never returned is dropped
    assert {s["panelist"] for s in item["stances"]} == {"p1", "p2"}  # labels still mapped
    tools = fusion["judge"]["tools"]
    assert tools["mode"] == "agentic" and tools["tool_calls"] == 1
    assert tools["calls"] == [{"name": "web_search", "args": {"query": "Etna height"}, "ok": True}]
    assert tools["sources"][0]["url"] == item["sources"][0] and tools["checked"] == 1
    assert {t.name for t in judge.bound_tools[0][0]} == {"web_search", "web_fetch"}
    # The analysis call saw the evidence, fenced as untrusted data, and the checking rules.
    analysis_call = judge.calls[-1]
    assert not is_check_step(analysis_call)
    assert prompts.JUDGE_CHECKED in str(analysis_call[0].content)
    evidence = str(analysis_call[-1].content)
    assert "ETNA-FACT-42" in evidence and OPEN_MARKER in evidence
    assert "your notes from the checks" in evidence
    assert fusion["judge"]["ok"] is True and fusion["degraded"] is False


async def test_the_judges_tool_steps_are_counted_in_its_usage_and_cost(corpus: Path) -> None:
    judge = checking_judge()
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=ctx(corpus)))
    tools, usage = fusion["judge"]["tools"], fusion["usage"]["judge"]
    assert len(judge.calls) == 3  # search, notes, analysis
    assert 0 < tools["usage"]["total_tokens"] < usage["total_tokens"]  # the loop is part of it
    words_in = sum(len(str(m.content).split()) for call in judge.calls for m in call)
    assert usage["input_tokens"] == words_in  # every judge call counted, the loop's too
    expected = usage["input_tokens"] * PRICE["input"] + usage["output_tokens"] * PRICE["output"]
    assert fusion["cost_usd"]["judge"] == pytest.approx(expected / 1e6)
    assert 0 < tools["cost_usd"] < fusion["cost_usd"]["judge"]


async def test_the_loop_stops_at_judge_max_tool_calls(corpus: Path) -> None:
    def always_two_searches(messages: list[BaseMessage]) -> AIMessage | str:
        if not is_check_step(messages):
            return checked_analysis(messages, extra_sources=[])
        if _budget_spent(messages):
            return "notes after the budget"
        n = sum(isinstance(m, ToolMessage) for m in messages)
        calls = [tool_call("web_search", f"c{n}-{i}", query=f"Etna {n} {i}") for i in range(2)]
        return AIMessage(content="", tool_calls=calls)

    judge = Script([always_two_searches])
    result = await build_graph(factory(judge)).ainvoke(
        ASK, context=ctx(corpus, judge_max_tool_calls=3)
    )
    tools = fusion_of(result)["judge"]["tools"]
    assert tools["tool_calls"] == 3 and len(tools["calls"]) == 3 and tools["max_tool_calls"] == 3
    loop_calls = [c for c in judge.calls if is_check_step(c)]
    assert len(loop_calls) == 3  # two steps of two calls (the 4th not run), then the notes
    not_run = [m for m in loop_calls[-1] if isinstance(m, ToolMessage) and "Not run" in m.content]
    assert len(not_run) == 1
    assert judge.bound_tools[-1][1].get("tool_choice") == "none"  # the last step has no tools


async def test_off_by_default_the_judge_binds_no_tool_and_checks_nothing(corpus: Path) -> None:
    # A judge that claims checks it cannot have made: the record says unchecked.
    judge = Script([lambda m: checked_analysis(m, extra_sources=[INVENTED])])
    context = {**ctx(corpus), "judge_tools": None}
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=context))
    assert judge.bound_tools == [] and len(judge.calls) == 1
    assert fusion["judge"]["tools"] is None
    assert fusion["settings"]["judge_tools"] is False
    (item,) = fusion["analysis"]["contradictions"]
    assert item["checked"] is False and item["sources"] == []


async def test_a_check_claimed_without_a_gathered_source_is_not_checked(corpus: Path) -> None:
    def claims_only_an_invented_source(messages: list[BaseMessage]) -> AIMessage | str:
        if is_check_step(messages):
            return checking_judge().replies[0](messages)  # type: ignore[operator]
        return judge_json(
            contradictions=[
                {
                    "topic": "Etna's height",
                    "stances": [{"panelist": "A", "stance": "3,357 m"}],
                    "checked": True,
                    "sources": [INVENTED],
                }
            ]
        )

    judge = Script([claims_only_an_invented_source])
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=ctx(corpus)))
    (item,) = fusion["analysis"]["contradictions"]
    assert item == {**item, "checked": False, "sources": []}
    assert fusion["judge"]["tools"]["checked"] == 0


async def test_a_failing_tool_does_not_fail_the_judge(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_search(query: str) -> str:
        raise RuntimeError("search backend exploded")

    def tools(search: Any, fetch: Any) -> list[Any]:
        return [
            StructuredTool.from_function(func=broken_search, name="web_search", description="s")
        ]

    monkeypatch.setattr(judge_tools, "make_web_tools", tools)
    judge = checking_judge()
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=ctx(corpus)))
    assert fusion["judge"]["ok"] is True and fusion["analysis"]["consensus"]
    record = fusion["judge"]["tools"]
    assert record["tool_calls"] == 1 and record["calls"][0]["ok"] is False
    assert record["error"] is None and record["sources"] == []
    failure = next(m for m in judge.calls[1] if isinstance(m, ToolMessage))
    assert "search backend exploded" in failure.content  # the judge read the failure as text
    (item,) = fusion["analysis"]["contradictions"]
    assert item["checked"] is False and item["sources"] == []  # nothing could vouch for it


async def test_a_refused_fetch_is_a_failed_call_not_a_failed_judge(corpus: Path) -> None:
    def fetch_private(messages: list[BaseMessage]) -> AIMessage | str:
        if not is_check_step(messages):
            return checked_analysis(messages, extra_sources=[])
        if any(isinstance(m, ToolMessage) for m in messages):
            return "could not check"
        return AIMessage(
            content="", tool_calls=[tool_call("web_fetch", "f", url="http://10.0.0.1/")]
        )

    fusion = fusion_of(
        await build_graph(factory(Script([fetch_private]))).ainvoke(ASK, context=ctx(corpus))
    )
    assert fusion["judge"]["ok"] is True
    assert fusion["judge"]["tools"]["calls"] == [
        {"name": "web_fetch", "args": {"url": "http://10.0.0.1/"}, "ok": False}
    ]


async def test_an_endpoint_without_tool_calling_still_judges(corpus: Path) -> None:
    def no_tools(messages: list[BaseMessage]) -> AIMessage | str:
        if is_check_step(messages):
            raise ValueError("this endpoint does not support tools")
        return checked_analysis(messages, extra_sources=[INVENTED])

    judge = Script([no_tools])
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=ctx(corpus)))
    assert fusion["judge"]["ok"] is True and fusion["degraded"] is False
    error = fusion["judge"]["tools"]["error"]
    assert error is not None and "does not support tools" in error["message"]
    (item,) = fusion["analysis"]["contradictions"]
    assert item["checked"] is False and item["sources"] == []
    analysis_call = judge.calls[-1]
    assert prompts.JUDGE_CHECKED not in str(analysis_call[0].content)  # no evidence, no claim


async def test_the_deadline_still_cuts_a_judge_that_keeps_checking(corpus: Path) -> None:
    def search_forever(messages: list[BaseMessage]) -> AIMessage:
        n = sum(isinstance(m, ToolMessage) for m in messages)
        return AIMessage(content="", tool_calls=[tool_call("web_search", f"c{n}", query="Etna")])

    judge = Script([search_forever], delay_s=0.25)  # 16 calls would take 4 s
    result = await build_graph(factory(judge)).ainvoke(
        ASK, context=ctx(corpus, judge_max_tool_calls=16, deadline_s=2.0)
    )
    fusion = fusion_of(result)
    assert fusion["judge"]["error"]["reason"] == "deadline" and fusion["degraded"] is True
    assert result["messages"][-1].content == "Etna is about 3,357 m tall."  # synthesis ran
    assert judge.cancelled == 1
    tools = fusion["judge"]["tools"]
    assert 1 <= tools["tool_calls"] < 16  # cut mid-loop; what it did is still reported
    assert fusion["usage"]["judge"]["total_tokens"] > 0  # and what it paid for


async def test_prefetch_judge_searches_each_contradiction_once(corpus: Path) -> None:
    def analyse(messages: list[BaseMessage]) -> str:
        assert not is_check_step(messages)
        return checked_analysis(messages, extra_sources=[])

    judge = Script([analyse])
    context = ctx(corpus, judge=judge_spec(price=PRICE, tool_mode="prefetch"))
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=context))
    assert judge.bound_tools == [] and len(judge.calls) == 2  # analysis, then with evidence
    assert "ETNA-FACT-42" in str(judge.calls[1][-1].content)
    tools = fusion["judge"]["tools"]
    assert tools["mode"] == "prefetch"
    assert tools["calls"] == [
        {"name": "web_search", "args": {"query": "Etna's height"}, "ok": True}
    ]
    (item,) = fusion["analysis"]["contradictions"]
    assert item["checked"] is True and item["sources"][0].startswith("corpus://etna.md")
    assert tools["usage"]["total_tokens"] > 0  # the second analysis call


async def test_prefetch_without_contradictions_makes_no_search(corpus: Path) -> None:
    judge = Script([judge_json(consensus=["Etna is on Sicily"])])
    context = ctx(corpus, judge=judge_spec(tool_mode="prefetch"))
    fusion = fusion_of(await build_graph(factory(judge)).ainvoke(ASK, context=context))
    assert len(judge.calls) == 1 and fusion["judge"]["tools"]["tool_calls"] == 0


def test_the_settings_are_bounded_and_a_tool_less_judge_is_refused(corpus: Path) -> None:
    for bad in (0, 17):
        with pytest.raises(FusionConfigError) as err:
            resolve_config(ctx(corpus, judge_max_tool_calls=bad))
        assert err.value.field == "judge_max_tool_calls"
    with pytest.raises(FusionConfigError) as err:
        resolve_config(ctx(corpus, judge=judge_spec(tool_mode="off")))
    assert err.value.field == "judge_tools"
    assert resolve_config(ctx(corpus)).judge_max_tool_calls == 4
    local = resolve_config({"preset": "local", "judge_tools": True})
    assert local.judge_tool_mode() == "prefetch"  # the bundled model has no tool calling


def test_the_worst_case_cost_includes_the_judges_tool_steps(corpus: Path) -> None:
    def worst(**extra: Any) -> float:
        context = {**ctx(corpus, **extra), "prices": {"a": PRICE, "b": PRICE, "synth": PRICE}}
        return worst_case_cost(resolve_config(context), 100)[0]

    off = worst(judge_tools=False)
    two, four = worst(judge_max_tool_calls=2), worst(judge_max_tool_calls=4)
    prefetch = worst(judge=judge_spec(price=PRICE, tool_mode="prefetch"))
    assert off < two < four and off < prefetch < four


async def test_the_check_is_reported_as_a_progress_event(corpus: Path) -> None:
    events = [
        data
        async for data in build_graph(factory(checking_judge())).astream(
            ASK, context=ctx(corpus), stream_mode="custom"
        )
    ]
    kinds = [e["event"] for e in events]
    checked = next(e for e in events if e["event"] == "judge_checked")
    assert (
        kinds.index("judge_started") < kinds.index("judge_checked") < kinds.index("judge_finished")
    )
    assert checked["mode"] == "agentic" and checked["tool_calls"] == 1
    assert checked["sources"] == 1 and checked["checked"] == 1 and checked["error"] is None
