"""Calibrated auto and weighted vote on scripted models that count their calls: a profile that
routes to one member asks only that member; one strong member outvotes two weak ones; a profile
measured on another panel, or on too few items, is not used and the record says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.evals.stats import wilson
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.calibration import (
    ArmResult,
    CalibrationProfile,
    MemberAccuracy,
    TaskCalibration,
    load_profile,
    stamp_of,
    vote_weight,
)
from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.tools.sandbox import bwrap_problem
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

PANEL = ["m1", "m2", "m3"]
FACT = "What is the capital of Australia?"  # auto's rules: a short fact -> vote


def member(model: str, correct: int, n: int, tokens: float = 100.0) -> MemberAccuracy:
    return MemberAccuracy(
        model=f"openai:{model}",
        correct=correct,
        n=n,
        accuracy=correct / n,
        ci=wilson(correct, n),
        tokens_per_item=tokens,
    )


def profile_file(
    tmp_path: Path,
    *,
    correct: tuple[int, int, int] = (3, 4, 9),
    n: int = 10,
    winner: str = "panelist:p3",
    panel: list[str] = PANEL,
    name: str = "calibration.json",
    task: str = "short_answer",
) -> str:
    """A profile of `panel` on `task` items: members right `correct` of `n`."""
    members = {
        f"p{i + 1}": member(m, c, n) for i, (m, c) in enumerate(zip(PANEL, correct, strict=True))
    }
    vote = ArmResult(
        arm="fusion:vote",
        n=n,
        accuracy=0.5,
        ci=wilson(n // 2, n),
        diff=-0.4,
        diff_ci=(-0.7, -0.1),
        significant=False,
        verdict="lost -40 pts",
        tokens_per_item=700.0,
    )
    task_type, task = (
        task,
        TaskCalibration(
            items=n,
            members=members,
            best_member="p3",
            arms={"fusion:vote": vote},
            winner=winner,
            verdict="no fusion arm beat p3 significantly",
            significant=winner.startswith("fusion:"),
        ),
    )
    profile = CalibrationProfile(
        fusiongraph_version="test",
        created="2026-01-01T00:00:00Z",
        eval="test: 10 items",
        stamp=stamp_of(resolve_config(fake_context(panel))),
        task_types={task_type: task},
    )
    path = tmp_path / name
    path.write_text(profile.model_dump_json(), encoding="utf-8")
    return str(path)


def factory(answers: list[str]) -> FakeFactory:
    scripts: dict[str, Any] = {f"m{i}": [a] for i, a in enumerate(answers, 1)}
    scripts["judge"] = Script([judge_json(consensus=["c"])])
    scripts["synth"] = ["SYNTHESIZED"]
    return FakeFactory(scripts)


def calls(f: FakeFactory) -> dict[str, int]:
    return {name: len(script.calls) for name, script in f.scripts.items()}


async def run(f: FakeFactory, text: str = FACT, **ctx: Any) -> tuple[str, dict[str, Any]]:
    state = {"messages": [HumanMessage(content=text)]}
    result = await build_graph(f).ainvoke(state, context=fake_context(PANEL, **ctx))
    final = result["messages"][-1]
    return final.content, final.response_metadata["fusion"]


async def test_a_profile_that_routes_to_p3_asks_only_p3(tmp_path: Path) -> None:
    f = factory(["Answer: Sydney", "Answer: Sydney", "Answer: Canberra"])
    answer, fusion = await run(f, aggregation="auto", calibration=profile_file(tmp_path))
    assert calls(f) == {"m1": 0, "m2": 0, "m3": 1, "judge": 0, "synth": 0}
    assert answer == "Answer: Canberra"
    record = fusion["aggregation"]
    assert record["applied"] == "member" and record["final"] == "calibrated"
    calibrated = record["calibrated"]
    assert calibrated["task_type"] == "short_answer"
    assert calibrated["chosen"] == "panelist:p3" and calibrated["member"] == "p3"
    assert "no fusion arm beat p3" in calibrated["reason"]
    # the full path: three panelists, judge, synthesizer; one call made
    assert calibrated["saved"]["calls"] == 4 == record["saved"]["calls"]
    assert calibrated["saved"]["against"] == "fusion:vote"  # today's rule for a short fact
    assert calibrated["saved"]["tokens"] == 600  # 700 per item against p3's 100
    assert record["selected"]["panelist"] == "p3"


async def test_a_failed_member_falls_back_to_the_rule_over_the_rest(tmp_path: Path) -> None:
    f = factory(["Answer: Canberra", "Answer: Canberra", "x"])
    f.scripts["m3"] = Script([RuntimeError("upstream down")])
    answer, fusion = await run(f, aggregation="auto", calibration=profile_file(tmp_path))
    assert "Canberra" in answer
    assert calls(f)["m1"] == calls(f)["m2"] == 1
    record = fusion["aggregation"]
    assert record["applied"] == "vote"  # today's rule for a short fact
    assert "p3 gave no answer" in record["calibrated"]["failed"]


async def test_a_fusion_arm_that_won_is_applied(tmp_path: Path) -> None:
    f = factory(["Answer: Canberra", "Answer: Canberra", "Answer: Sydney"])
    path = profile_file(tmp_path, winner="fusion:synthesize")
    answer, fusion = await run(f, aggregation="auto", calibration=path, early_exit=False)
    assert answer == "SYNTHESIZED"
    assert calls(f)["m1"] == calls(f)["m2"] == calls(f)["m3"] == 1
    assert fusion["aggregation"]["applied"] == "synthesize"
    assert fusion["aggregation"]["calibrated"]["chosen"] == "fusion:synthesize"


async def test_one_strong_member_outvotes_two_weak_ones(tmp_path: Path) -> None:
    answers = ["Answer: 1969", "Answer: 1968", "Answer: 1968"]
    question = "What year did Apollo 11 land on the Moon?"  # a short fact, by auto's rules
    path = profile_file(tmp_path, correct=(9, 6, 6))  # p1 strong; p2, p3 better than a coin

    plain = factory(answers)
    answer, _ = await run(plain, question, aggregation="vote")
    assert answer == "Answer: 1968"  # the plurality: the weak majority wins

    f = factory(answers)
    answer, fusion = await run(f, question, calibration=path, aggregation="vote")
    vote = fusion["aggregation"]["vote"]
    assert answer == "Answer: 1969"
    weights = vote["weights"]
    assert (
        weights["p1"] == vote_weight(member("m1", 9, 10)) == pytest.approx(1.6094, abs=1e-4)
    )  # log((10/12) / (2/12))
    assert weights["p2"] == weights["p3"] == pytest.approx(0.3365, abs=1e-4)
    assert vote["tally"] == {"1969": weights["p1"], "1968": pytest.approx(2 * weights["p2"])}
    assert vote["counts"] == {"1968": 2, "1969": 1} and vote["decided_by"] == "weighted_votes"
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 0, "synth": 0}
    assert "calibrated votes" in fusion["aggregation"]["selected"]["reason"]


@pytest.mark.skipif(bwrap_problem() is not None, reason="verify needs bubblewrap")
async def test_calibrated_verify_weighs_the_vote_when_the_program_decides_nothing(
    tmp_path: Path,
) -> None:
    """The profile chose verify for math; its program fails, so the vote decides: weighted, the
    strong member outvotes two weak ones that agree."""
    question = "A box holds 12 eggs. How many eggs are in 7 boxes?"
    f = factory(["Answer: 84", "Answer: 74", "Answer: 74"])
    f.scripts["judge"] = Script([json.dumps({"program": "raise SystemExit(1)", "reasoning": "r"})])
    path = profile_file(tmp_path, correct=(9, 6, 6), winner="fusion:verify", task="math")
    answer, fusion = await run(f, question, aggregation="auto", calibration=path)
    record = fusion["aggregation"]
    assert record["applied"] == "verify" and record["calibrated"]["chosen"] == "fusion:verify"
    checked = record["verify"]
    assert checked["computed"] is None and checked["weights"] == record["calibrated"]["weights"]
    assert answer == "Answer: 84" and checked["winner"] == "p1"
    assert "vote's 84 stands" in checked["why"]


async def test_a_profile_of_another_panel_is_not_used_and_says_so(tmp_path: Path) -> None:
    path = profile_file(tmp_path, panel=["x1", "x2", "x3"])
    f = factory(["Answer: Canberra"] * 3)
    _, fusion = await run(f, aggregation="auto", calibration=path)
    record = fusion["aggregation"]
    assert calls(f)["m1"] == calls(f)["m2"] == calls(f)["m3"] == 1  # the whole panel: the rules
    assert record["applied"] == "vote" and record["calibrated"]["chosen"] is None
    assert "measured on another panel" in record["calibrated"]["reason"]
    assert "auto's rules apply" in record["calibrated"]["reason"]


async def test_a_profile_with_too_few_items_is_not_used_and_says_so(tmp_path: Path) -> None:
    path = profile_file(tmp_path, correct=(1, 1, 4), n=5)
    f = factory(["Answer: Canberra"] * 3)
    _, fusion = await run(f, aggregation="auto", calibration=path)
    record = fusion["aggregation"]
    assert calls(f)["m1"] == calls(f)["m2"] == calls(f)["m3"] == 1
    assert record["calibrated"]["reason"].startswith(
        "profile not used: the profile has 5 short_answer items, fewer than 8"
    )


async def test_a_profile_of_other_settings_is_not_used(tmp_path: Path) -> None:
    f = factory(["Answer: Canberra"] * 3)
    path = profile_file(tmp_path)
    _, fusion = await run(f, aggregation="auto", calibration=path, panel_max_tokens=64)
    assert "other settings (panel_max_tokens)" in fusion["aggregation"]["calibrated"]["reason"]


def test_a_missing_or_broken_profile_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FusionConfigError) as missing:
        resolve_config(fake_context(PANEL, calibration=str(tmp_path / "none.json")))
    assert missing.value.field == "calibration"
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": "fusiongraph.calibration"}', encoding="utf-8")
    with pytest.raises(FusionConfigError, match="not a calibration profile"):
        resolve_config(fake_context(PANEL, calibration=str(broken)))


def test_the_profile_loads_back_as_written(tmp_path: Path) -> None:
    profile = load_profile(profile_file(tmp_path))
    assert profile.task_types["short_answer"].members["p3"].correct == 9
    assert profile.stamp.panel == ["openai:m1", "openai:m2", "openai:m3"]


# --- a server alias names a profile; the real HTTP path, counted at the upstream ----------------


def test_a_server_alias_with_a_profile_asks_the_upstream_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    from fusiongraph.serve.server import create_app
    from tests.support.servers import running_server
    from tests.support.upstream import FakeUpstream, UpstreamServer

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    upstream = FakeUpstream(chunks=2, chunk_delay_s=0.0)
    with UpstreamServer(upstream) as server:
        panel = ["c1-ansSydney-0.000s", "c2-ansSydney-0.000s", "c3-ansCanberra-0.000s"]
        alias = fake_context(panel, base_url=server.base_url, aggregation="auto")
        config = resolve_config(alias)
        members = {
            f"p{i}": member(spec.name, c, 10)
            for i, (spec, c) in enumerate(zip(config.panel, (3, 4, 9), strict=True), 1)
        }
        task = TaskCalibration(
            items=10,
            members=members,
            best_member="p3",
            winner="panelist:p3",
            verdict="no fusion arm beat p3 significantly",
            significant=False,
        )
        profile = CalibrationProfile(
            fusiongraph_version="test",
            created="2026-01-01T00:00:00Z",
            eval="test: 10 items",
            stamp=stamp_of(config),
            task_types={"short_answer": task},
        )
        path = tmp_path / "calibration.json"
        path.write_text(profile.model_dump_json(), encoding="utf-8")
        aliases = {"fusion-calibrated": {**alias, "calibration": str(path)}}
        app = create_app(build_graph(), api_keys=[], aliases=aliases)
        with (
            running_server(app) as url,
            openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        ):
            reply = client.chat.completions.create(
                model="fusion-calibrated", messages=[{"role": "user", "content": FACT}]
            )
            # a request may not name a file of the server's: the profile is the operator's
            with pytest.raises(openai.BadRequestError, match="calibration"):
                client.chat.completions.create(
                    model="fusion-calibrated",
                    messages=[{"role": "user", "content": FACT}],
                    extra_body={"fusion": {"calibration": str(path)}},
                )
    assert [r.model for r in upstream.records] == ["c3-ansCanberra-0.000s"]
    assert "Canberra" in (reply.choices[0].message.content or "")


async def test_after_the_classifier_the_members_answer_is_final(tmp_path: Path) -> None:
    f = factory(["Answer: Sydney", "Answer: Sydney", "Answer: Canberra"])
    f.scripts["cls"] = Script(["short_answer"])
    answer, fusion = await run(
        f,
        "Australia's capital city?",  # no rule decides: the classifier, beside the panel
        aggregation="auto",
        classifier="openai:cls",
        calibration=profile_file(tmp_path),
    )
    assert answer == "Answer: Canberra"
    assert calls(f) == {"m1": 1, "m2": 1, "m3": 1, "judge": 0, "synth": 0, "cls": 1}
    calibrated = fusion["aggregation"]["calibrated"]
    assert calibrated["member"] == "p3" and "beside the classifier" in calibrated["reason"]
    assert calibrated["saved"]["calls"] == 2  # the judge and the synthesizer only
