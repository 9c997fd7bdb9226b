"""Aggregation strategies on scripted models that count their calls: synthesize, select, vote,
auto, early exit and cascade, under panelist failures and deadlines."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import STRATEGIES, resolve_config
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.nodes.analysis import (
    analysis_json_schema,
    json_schema_response_format,
    map_labels,
    parse_analysis,
)
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

PANEL = ["m1", "m2", "m3"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def factory(
    answers: list[Any], *, judge: Any = None, synth: Any = "SYNTHESIZED", **extra: Any
) -> FakeFactory:
    scripts: dict[str, Any] = {
        f"m{i}": a if isinstance(a, Script) else [a] for i, a in enumerate(answers, 1)
    }
    scripts["judge"] = judge if judge is not None else [judge_json(consensus=["c"])]
    scripts["synth"] = [synth]
    scripts.update(extra)
    return FakeFactory(scripts)


def calls(f: FakeFactory) -> dict[str, int]:
    return {name: len(script.calls) for name, script in f.scripts.items()}


def ask(text: str = "What is 6 times 7?") -> dict[str, Any]:
    return {"messages": [HumanMessage(content=text)]}


async def run(f: FakeFactory, text: str = "What is 6 times 7?", **ctx: Any) -> tuple[str, dict]:
    result = await build_graph(f).ainvoke(ask(text), context=fake_context(PANEL, **ctx))
    final = result["messages"][-1]
    return final.content, final.response_metadata["fusion"]


def selecting_judge(best_of: str, reason: str = "it is right") -> Any:
    """A judge that names the response whose text contains `best_of` (labels are shuffled)."""

    def reply(messages: list[Any]) -> str:
        prompt = messages[-1].content
        labels = re.findall(r"Response ([A-Z]):\n(.*?)(?=\n\nResponse [A-Z]:|\Z)", prompt, re.S)
        best = next(label for label, text in labels if best_of in text)
        return judge_json(consensus=["c"], best=best, best_reason=reason)

    return [reply]


# --- the strategies ---------------------------------------------------------------------------


def test_the_strategies_are_read_from_the_context_schema() -> None:
    assert STRATEGIES == ("synthesize", "select", "vote", "verify", "auto")


async def test_synthesize_is_the_default_and_unchanged() -> None:
    f = factory(["Answer: 42", "Answer: 42", "Answer: 42"])
    content, fusion = await run(f)
    assert content == "SYNTHESIZED"
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}
    agg = fusion["aggregation"]
    assert agg["requested"] == agg["applied"] == "synthesize" and agg["early_exit"] is False
    assert agg["calls"] == {"made": 5, "full_path": 5} and agg["saved"]["calls"] == 0
    assert "best" not in fusion["analysis"]
    # The judge is not asked to select when nothing needs a selection.
    assert "best_reason" not in f.scripts["judge"].calls[0][0].content


async def test_vote_majority_skips_judge_and_synthesis() -> None:
    answers = ["6 x 7 = 42, so the answer is 42.", "I get \\boxed{42}", "Answer: 41"]
    f = factory(answers)
    content, fusion = await run(f, aggregation="vote")
    assert content == answers[0]  # the first winning answer, verbatim
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 0, "synth": 0}
    vote = fusion["aggregation"]["vote"]
    assert vote["answers"] == {"p1": "42", "p2": "42", "p3": "41"}
    assert vote["counts"] == {"42": 2, "41": 1} and vote["winner"] == "42"
    agg = fusion["aggregation"]
    assert agg["final"] == "vote" and agg["selected"]["panelist"] == "p1"
    assert agg["calls"] == {"made": 3, "full_path": 5} and agg["saved"]["calls"] == 2
    assert fusion["degraded"] is False and fusion["analysis"] is None
    assert fusion["usage"]["judge"]["total_tokens"] == fusion["usage"]["synthesis"]["total_tokens"]
    assert fusion["usage"]["total"]["total_tokens"] == fusion["usage"]["panel"]["total_tokens"]


async def test_vote_tie_goes_to_the_judge_among_the_tied_answers_only() -> None:
    answers = ["Answer: 42", "Answer: 41", "Answer: 42", "Answer: 41", "Answer: 40"]
    f = factory(answers, judge=selecting_judge("41"), m4=["Answer: 41"], m5=["Answer: 40"])
    ctx = fake_context([f"m{i}" for i in range(1, 6)], aggregation="vote")
    result = await build_graph(f).ainvoke(ask(), context=ctx)
    final = result["messages"][-1]
    assert final.content == "Answer: 41"
    assert calls(f)["judge"] == 1 and calls(f)["synth"] == 0
    judge_prompt = f.scripts["judge"].calls[0]
    assert "best_reason" in judge_prompt[0].content  # asked to select, in the same call
    shown = re.findall(r"Answer: (\d+)", judge_prompt[-1].content)
    assert sorted(shown) == ["41", "41", "42", "42"]  # the tied answers only: 40 is out
    agg = final.response_metadata["fusion"]["aggregation"]
    assert agg["vote"]["tied"] == ["42", "41"] and agg["vote"]["winner"] is None
    assert agg["selected"]["panelist"] in ("p2", "p4") and agg["final"] == "select"


async def test_vote_with_nothing_to_count_lets_the_judge_select_among_all() -> None:
    answers = ["Paris is lovely.", "Rome is lovely.", "Oslo is lovely."]
    f = factory(answers, judge=selecting_judge("Rome"))
    content, fusion = await run(f, "Which city is lovely?", aggregation="vote")
    assert content == "Rome is lovely."
    assert fusion["aggregation"]["vote"]["answers"] == {"p1": None, "p2": None, "p3": None}
    assert calls(f)["synth"] == 0


async def test_vote_counts_an_option_named_by_its_text_as_its_letter() -> None:
    """Models answer "Au" or "79" where the options say "B. Au": the vote counts the option an
    answer names, so the strong member's "Au" and another's "B" outvote a lone "A"."""
    question = "What is the chemical symbol for gold?\n\nA. Ag\nB. Au\nC. Gd\nD. Go"
    answers = ["A", "Gold has atomic number 79; its symbol is Au.", "The answer is B."]
    f = factory(answers)
    content, fusion = await run(f, question, aggregation="vote")
    vote = fusion["aggregation"]["vote"]
    assert vote["answers"] == {"p1": "A", "p2": "B", "p3": "B"} and vote["winner"] == "B"
    assert content == answers[1] and calls(f)["judge"] == 0
    # without options in the question, "79" is its answer, as before
    plain = factory(answers)
    _, fusion = await run(plain, "What is the chemical symbol for gold?", aggregation="vote")
    assert fusion["aggregation"]["vote"]["answers"]["p2"] == "79"


async def test_vote_with_a_caller_regex() -> None:
    answers = ["verdict=YES because", "verdict=no", "after checking, verdict=yes"]
    f = factory(answers)
    content, fusion = await run(f, aggregation="vote", vote_answer=r"regex:verdict=(\w+)")
    assert fusion["aggregation"]["vote"]["winner"] == "yes" and content == answers[0]


async def test_select_returns_the_chosen_answer_verbatim() -> None:
    answers = ["def f(): return 1", "def f(): return 2  # correct", "def f(): return 3"]
    f = factory(answers, judge=selecting_judge("correct", "it passes the example"))
    content, fusion = await run(f, "Write a function f", aggregation="select")
    assert content == answers[1]
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 0}
    agg = fusion["aggregation"]
    assert agg["selected"] == {"panelist": "p2", "reason": "it passes the example"}
    assert agg["final"] == "select" and agg["saved"]["calls"] == 1
    assert fusion["analysis"]["consensus"] == ["c"] and fusion["analysis"]["best"] == "p2"
    assert fusion["degraded"] is False


@pytest.mark.parametrize(
    ("judge", "why"),
    [
        ([RuntimeError("judge down")], "the judge failed"),
        ([judge_json(consensus=["c"], best="Z", best_reason="?")], "'Z'"),
        ([judge_json(consensus=["c"])], "named no best response"),
    ],
)
async def test_select_falls_back_to_synthesis_and_says_why(judge: Any, why: str) -> None:
    answers = ["```py\nx = 1\n```", "```py\nx = 2\n```", "```py\nx = 3\n```"]
    f = factory(answers, judge=judge)
    content, fusion = await run(f, "Write a script", aggregation="select")
    assert content == "SYNTHESIZED" and calls(f)["synth"] == 1
    agg = fusion["aggregation"]
    assert why in agg["fallback"] and agg["selected"] is None and agg["final"] == "synthesis"
    assert agg["raw_answers"] is True  # the synthesizer saw the code itself
    synth_system = f.scripts["synth"].calls[0][0].content
    assert all(a.strip("`py\n") in synth_system for a in answers)
    assert fusion["degraded"] is (why == "the judge failed")


async def test_select_with_caller_tools_drafts_from_the_selection() -> None:
    answers = ["Oslo is cold.", "Oslo: 3 C, check the weather tool. BEST", "Oslo is far."]
    f = factory(answers, judge=selecting_judge("BEST"))
    content, fusion = await run(
        f, "Weather in Oslo?", aggregation="select", synthesis_tools=[WEATHER_TOOL]
    )
    assert content == "SYNTHESIZED" and calls(f)["synth"] == 1
    assert f.scripts["synth"].bound_tools  # the caller's tools are bound on synthesis
    synth_system = f.scripts["synth"].calls[0][0].content
    assert "as your draft" in synth_system and answers[1] in synth_system
    assert "it is right" in synth_system  # why it was chosen
    agg = fusion["aggregation"]
    assert agg["draft"] == "p2" and agg["selected"]["panelist"] == "p2"
    assert agg["final"] == "synthesis"


async def test_a_vote_winner_with_caller_tools_is_the_synthesizer_s_draft() -> None:
    """A panel answer can make no tool call: with the caller's tools bound, the winner is the
    draft of a synthesis that has them (the judge still is not called)."""
    f = factory(["Answer: 42", "Answer: 42.0", "Answer: 41"])
    content, fusion = await run(f, aggregation="vote", synthesis_tools=[WEATHER_TOOL])
    assert content == "SYNTHESIZED"
    assert calls(f)["judge"] == 0 and calls(f)["synth"] == 1
    synth_system = f.scripts["synth"].calls[0][0].content
    assert "as your draft" in synth_system and "unavailable" not in synth_system
    agg = fusion["aggregation"]
    assert agg["draft"] == "p1" and agg["final"] == "synthesis" and fusion["degraded"] is False
    assert agg["calls"] == {"made": 4, "full_path": 5}


def test_the_judge_schema_asks_for_the_best_response_only_when_selecting() -> None:
    plain, selecting = analysis_json_schema(), analysis_json_schema(select=True)
    assert "best" not in plain["properties"] and "best" not in plain["required"]
    assert {"best", "best_reason"} <= set(selecting["required"])
    strict = json_schema_response_format(True)["json_schema"]["schema"]
    assert strict["properties"]["best"]["type"] == "string" and "best" in strict["required"]
    analysis = parse_analysis('{"consensus": ["x"], "best": "Response B", "best_reason": "ok"}')
    assert map_labels(analysis, {"A": "p1", "B": "p2"})["best"] == "p2"


# --- early exit ------------------------------------------------------------------------------


async def test_early_exit_skips_judge_and_synthesis_when_every_answer_agrees() -> None:
    answers = ["So the answer is 42.", "Answer: 42", "The final answer is \\boxed{42}"]
    f = factory(answers)
    content, fusion = await run(f, early_exit=True)
    assert content == answers[0]
    assert calls(f)["judge"] == 0 and calls(f)["synth"] == 0
    agg = fusion["aggregation"]
    assert agg["early_exit"] is True and agg["final"] == "early_exit"
    assert "judge and synthesis skipped" in agg["note"]
    assert agg["calls"]["made"] == 3 and agg["saved"]["calls"] == 2


async def test_early_exit_is_off_by_default_for_synthesize_and_on_for_vote() -> None:
    same = ["Answer: 42"] * 3
    f = factory(same)
    await run(f)
    assert calls(f)["judge"] == 1 and calls(f)["synth"] == 1
    f = factory(same)
    _, fusion = await run(f, aggregation="vote")
    assert calls(f)["judge"] == 0 and fusion["aggregation"]["early_exit"] is True


async def test_early_exit_outside_vote_needs_a_marked_answer_not_just_a_shared_number() -> None:
    # Three essays that happen to end on the same year do not "agree".
    essays = ["It began in 1914.", "Historians date it to 1914.", "Its start: 1914"]
    f = factory(essays)
    await run(f, "Explain why the war began", early_exit=True)
    assert calls(f)["judge"] == 1 and calls(f)["synth"] == 1


# --- cascade ---------------------------------------------------------------------------------


async def test_cascade_agreement_never_calls_the_rest() -> None:
    f = factory(["Answer: 42", "Answer: 42.0", "Answer: 7"])
    content, fusion = await run(f, aggregation="vote", cascade=2)
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 0, "judge": 0, "synth": 0}
    assert content == "Answer: 42"
    cascade = fusion["aggregation"]["cascade"]
    assert cascade["first"] == ["p1", "p2"] and cascade["rest"] == ["p3"]
    assert cascade["agreed"] is True and cascade["rest_called"] is False
    assert cascade["chosen_by"] == "order"  # no prices known for these models
    assert fusion["aggregation"]["calls"] == {"made": 2, "full_path": 5}
    assert [p["panelist"] for p in fusion["panel"]] == ["p1", "p2"]


async def test_cascade_disagreement_calls_the_rest_and_continues() -> None:
    f = factory(["Answer: 41", "Answer: 42", "Answer: 42"])
    content, fusion = await run(f, aggregation="vote", cascade=2)
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 0, "synth": 0}
    assert content == "Answer: 42"  # 42 wins 2 to 1 once the rest answered
    cascade = fusion["aggregation"]["cascade"]
    assert cascade["agreed"] is False and cascade["rest_called"] is True
    assert fusion["aggregation"]["vote"]["counts"] == {"42": 2, "41": 1}


async def test_cascade_with_synthesize_saves_the_panel_calls_only() -> None:
    f = factory(["Answer: 42", "Answer: 42", "Answer: 7"])
    content, fusion = await run(f, cascade=2)
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 0, "judge": 1, "synth": 1}
    assert content == "SYNTHESIZED" and fusion["aggregation"]["saved"]["calls"] == 1


async def test_cascade_asks_the_cheapest_first_and_reports_the_cost_saved() -> None:
    prices = {
        "m1": {"input": 10.0, "output": 10.0},
        "m2": {"input": 1.0, "output": 1.0},
        "m3": {"input": 2.0, "output": 2.0},
        "judge": {"input": 1.0, "output": 1.0},
        "synth": {"input": 1.0, "output": 1.0},
    }
    f = factory(["Answer: 9", "Answer: 42", "Answer: 42"])
    content, fusion = await run(f, aggregation="vote", cascade=2, prices=prices)
    assert calls(f) == {"m1": 0, "m2": 1, "m3": 1, "judge": 0, "synth": 0}
    assert content == "Answer: 42"
    cascade = fusion["aggregation"]["cascade"]
    assert cascade["first"] == ["p2", "p3"] and cascade["chosen_by"] == "price"
    saved = fusion["aggregation"]["saved"]
    assert saved["calls"] == 3 and saved["cost_usd"] > 0  # m1, the judge and the synthesizer
    assert fusion["cost_usd"]["total"] > 0


async def test_cascade_keeps_the_cost_cap_of_the_full_panel() -> None:
    f = factory(["Answer: 42"] * 3)
    prices = {m: {"input": 100.0, "output": 100.0} for m in ["m1", "m2", "m3", "judge", "synth"]}
    with pytest.raises(FusionError) as err:
        await run(f, cascade=2, prices=prices, max_cost_usd=0.01)
    assert err.value.reason == "budget_exceeded"
    assert sum(calls(f).values()) == 0


async def test_cascade_first_wave_failing_calls_the_rest() -> None:
    f = factory([RuntimeError("down"), "Answer: 42", "Answer: 42"])
    content, fusion = await run(f, aggregation="vote", cascade=2)
    assert calls(f)["m3"] == 1 and content == "Answer: 42"
    assert [m["panelist"] for m in fusion["failed_models"]] == ["p1"]


# --- auto ------------------------------------------------------------------------------------


async def test_auto_routes_by_rule_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = []
    f = factory(["Answer: 42", "Answer: 42", "Answer: 41"])
    ctx = fake_context(PANEL, aggregation="auto")
    async for mode, data in build_graph(f).astream(
        ask("How many legs do 7 spiders have?"), context=ctx, stream_mode=["custom", "updates"]
    ):
        if mode == "custom":
            events.append(data)
    chosen = [e for e in events if e["event"] == "aggregation_chosen"]
    assert chosen and chosen[0]["applied"] == "verify" and chosen[0]["task"] == "math"
    # verify's math path: one judge call (a program; this judge writes none), then the vote
    assert calls(f)["judge"] == 1 and calls(f)["synth"] == 0


async def test_auto_code_verifies_and_the_synthesizer_is_not_called() -> None:
    answers = ["def add(a, b): return a - b", "def add(a, b): return a + b  # ok", "pass"]
    f = factory(answers, judge=selecting_judge("# ok"))
    content, fusion = await run(f, "Write a Python function add(a, b).", aggregation="auto")
    assert content == answers[1]
    agg = fusion["aggregation"]
    assert agg["applied"] == "verify" and agg["task"] == "code" and agg["reason"].startswith("rule")
    # This judge writes no tests: verify falls back to the judge's selection, and says so.
    assert agg["final"] == "select" and agg["fallback"].startswith("verify: the judge wrote no")


async def test_auto_open_question_synthesizes_with_no_classifier() -> None:
    f = factory(["Because of X.", "Because of Y.", "Because of Z."])
    content, fusion = await run(f, "Tell me about lighthouses", aggregation="auto")
    assert content == "SYNTHESIZED"
    assert fusion["aggregation"]["applied"] == "synthesize"
    assert "no classifier" in fusion["aggregation"]["reason"]


async def test_auto_asks_the_classifier_beside_the_panel_when_no_rule_matches() -> None:
    f = factory(["Answer: Paris", "Answer: paris.", "Answer: Rome"], clf=["short_answer"])
    content, fusion = await run(f, "Capital of France", aggregation="auto", classifier="openai:clf")
    assert calls(f)["clf"] == 1 and calls(f)["judge"] == 0 and calls(f)["synth"] == 0
    assert content == "Answer: Paris"
    agg = fusion["aggregation"]
    assert agg["applied"] == "vote" and agg["task"] == "short_answer"
    assert agg["classifier"]["ok"] is True and "classifier" in agg["reason"]
    assert fusion["usage"]["classifier"]["total_tokens"] > 0
    assert fusion["usage"]["total"]["total_tokens"] == (
        fusion["usage"]["panel"]["total_tokens"] + fusion["usage"]["classifier"]["total_tokens"]
    )
    assert agg["calls"]["made"] == 4


async def test_auto_classifier_failure_falls_back_to_synthesize() -> None:
    f = factory(["a", "b", "c"], clf=[RuntimeError("classifier down")])
    content, fusion = await run(f, "Lighthouses", aggregation="auto", classifier="openai:clf")
    assert content == "SYNTHESIZED"
    agg = fusion["aggregation"]
    assert agg["applied"] == "synthesize" and "classifier failed" in agg["reason"]


async def test_a_classifier_is_not_called_when_a_rule_decides() -> None:
    f = factory(["Answer: 4"] * 3, clf=["code"])
    await run(f, "What is 2 + 2?", aggregation="auto", classifier="openai:clf")
    assert calls(f)["clf"] == 0


# --- failures and deadlines --------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_strategy_reports_a_failing_panelist_and_still_answers(strategy: str) -> None:
    f = factory(["Answer: 42", RuntimeError("boom"), "Answer: 42"], judge=selecting_judge("42"))
    content, fusion = await run(f, aggregation=strategy)
    assert content in ("Answer: 42", "SYNTHESIZED")
    assert [(m["panelist"], m["reason"]) for m in fusion["failed_models"]] == [("p2", "error")]
    assert [p["panelist"] for p in fusion["panel"]] == ["p1", "p3"]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_strategy_under_a_deadline(strategy: str) -> None:
    slow = Script(["Answer: 40"], delay_s=30.0)
    f = factory(["Answer: 42", slow, "Answer: 42"], judge=selecting_judge("42"))
    started = asyncio.get_running_loop().time()
    content, fusion = await run(f, aggregation=strategy, deadline_s=1.0)
    assert asyncio.get_running_loop().time() - started < 5
    assert [(m["panelist"], m["reason"]) for m in fusion["failed_models"]] == [("p2", "deadline")]
    assert slow.cancelled == 1
    assert content in ("Answer: 42", "SYNTHESIZED")


async def test_all_panelists_failing_still_fails_the_run_for_vote() -> None:
    f = factory([RuntimeError("a"), RuntimeError("b"), RuntimeError("c")])
    with pytest.raises(FusionError) as err:
        await run(f, aggregation="vote")
    assert err.value.reason == "all_panelists_failed"


async def test_select_judge_cut_by_the_deadline_falls_back_to_synthesis() -> None:
    judge = Script([judge_json(consensus=["c"], best="A", best_reason="r")], delay_s=30.0)
    f = factory(["x = 1", "x = 2", "x = 3"], judge=judge)
    content, fusion = await run(f, "Write a script", aggregation="select", deadline_s=1.0)
    assert content == "SYNTHESIZED"
    assert "deadline" in fusion["aggregation"]["fallback"] and fusion["degraded"] is True


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"cascade": 3}, "cascade"),
        ({"cascade": 1}, "cascade"),
        ({"vote_answer": "regex:("}, "vote_answer"),
        ({"vote_answer": "sometimes"}, "vote_answer"),
        ({"aggregation": "rewrite"}, "aggregation"),
        ({"early_exit": "perhaps"}, "early_exit"),
        ({"classifier": "openrouter:acme/fusion-1"}, "classifier"),
    ],
)
def test_bad_aggregation_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(FusionConfigError) as err:
        resolve_config(fake_context(PANEL, **settings))
    assert err.value.field == field


def test_sync_invoke_finishes_a_vote_without_a_model_call() -> None:
    f = factory(["Answer: 42", "Answer: 42", "Answer: 41"])
    result = build_graph(f).invoke(ask(), context=fake_context(PANEL, aggregation="vote"))
    assert result["messages"][-1].content == "Answer: 42"
    assert calls(f)["judge"] == calls(f)["synth"] == 0


async def test_a_cascade_s_second_wave_keeps_the_run_deadline() -> None:
    slow = Script(["Answer: 42"], delay_s=30.0)
    f = factory(["Answer: 41", "Answer: 42", slow], judge=selecting_judge("42"))
    content, fusion = await run(f, aggregation="vote", cascade=2, deadline_s=1.0)
    assert [(m["panelist"], m["reason"]) for m in fusion["failed_models"]] == [("p3", "deadline")]
    assert slow.cancelled == 1 and content == "Answer: 42"  # a 1-1 tie, then the judge
    assert fusion["aggregation"]["cascade"]["rest_called"] is True
    assert fusion["aggregation"]["vote"]["tied"] == ["41", "42"]


async def test_a_cascade_s_second_wave_counts_toward_the_quorum() -> None:
    slow = Script(["Answer: 40"], delay_s=30.0)
    f = factory(["Answer: 41", "Answer: 42", "Answer: 42", slow], judge=selecting_judge("42"))
    ctx = fake_context(
        ["m1", "m2", "m3", "m4"], aggregation="vote", cascade=2, quorum=3, straggler_grace_s=0.1
    )
    started = asyncio.get_running_loop().time()
    result = await build_graph(f).ainvoke(ask(), context=ctx)
    assert asyncio.get_running_loop().time() - started < 5
    fusion = result["messages"][-1].response_metadata["fusion"]
    # two answers in, quorum 3: one more from the rest, then the grace cuts the straggler
    assert [(m["panelist"], m["reason"]) for m in fusion["failed_models"]] == [("p4", "straggler")]
    assert result["messages"][-1].content == "Answer: 42"
