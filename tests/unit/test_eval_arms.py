"""The arms of an eval: one per strategy the graph offers, each panelist read from the fusion
run, self-consistency and self-fusion as k samples of one model, equal plans sharing a run."""

from __future__ import annotations

import typing

import pytest

from fusiongraph.evals.arms import SAMPLE_TEMPERATURE, build_arms, samples_of, strategies
from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError
from tests.support.fakes import fake_context


def test_one_fusion_arm_per_strategy_of_the_context_schema() -> None:
    annotation = FusionContext.model_fields["aggregation"].annotation
    offered = [a for a in typing.get_args(annotation) if isinstance(a, str)]
    assert strategies() == offered and "synthesize" in offered
    arms = {a.name: a for a in build_arms(fake_context(["m1", "m2"]))}
    for strategy in offered:
        assert arms[f"fusion:{strategy}"].run.context["aggregation"] == strategy


def test_panelist_arms_read_the_fusion_run_and_pay_nothing_more() -> None:
    arms = {a.name: a for a in build_arms(fake_context(["m1", "m2", "m3"]))}
    fusion = arms["fusion:synthesize"]
    for slot in ("p1", "p2", "p3"):
        arm = arms[f"panelist:{slot}"]
        assert arm.read == "panelist" and arm.panelist == slot
        assert arm.run == fusion.run  # the same run: its panel answers, not new calls
    assert "reused" in arms["panelist:p2"].note and "openai:m2" in arms["panelist:p2"].note


def test_the_local_presets_self_fusion_is_its_fusion_run() -> None:
    # Its panel already is three samples of one model (distinct seeds and temperatures).
    arms = {a.name: a for a in build_arms({"preset": "local"})}
    model = "local:smollm2-135m"
    assert set(arms) >= {f"self-fusion:{model}", f"self-consistency:{model}"}
    assert arms[f"self-fusion:{model}"].run.key == arms["fusion:synthesize"].run.key
    assert arms[f"self-consistency:{model}"].run.key == arms["fusion:vote"].run.key


def test_self_samples_of_a_panel_model_have_distinct_seeds_and_a_temperature() -> None:
    config = resolve_config(fake_context(["m1", "m2"]))
    specs = samples_of(config, "openai:m2", 4)
    assert [s.model for s in specs] == ["m2"] * 4
    assert len({s.seed for s in specs}) == 4
    assert all(s.temperature == SAMPLE_TEMPERATURE for s in specs)
    arm = next(
        a for a in build_arms(fake_context(["m1", "m2"]), ["self-fusion:openai:m2"], samples=4)
    )
    ctx = arm.run.context
    assert [p["seed"] for p in ctx["panel"]] == [s.seed for s in specs]
    # judged and synthesized by the user's judge and synthesizer, as the fusion arm is
    assert ctx["judge"]["model"] == "judge" and ctx["synthesizer"]["model"] == "synth"
    assert ctx["aggregation"] == "synthesize"


def test_self_consistency_uses_the_graphs_vote() -> None:
    (arm,) = build_arms(fake_context(["m1"]), ["self-consistency:openai:m1"], samples=3)
    assert arm.run.context["aggregation"] == "vote" and len(arm.run.context["panel"]) == 3


def test_a_kind_alone_names_all_of_its_arms() -> None:
    names = [a.name for a in build_arms(fake_context(["m1", "m2"]), ["panelist", "fusion"])]
    assert names == ["panelist:p1", "panelist:p2", *(f"fusion:{s}" for s in strategies())]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bogus", "unknown arm 'bogus'"),
        ("panelist:p9", "the panel has ['p1', 'p2']"),
        ("fusion:debate", "unknown strategy"),
        ("self-fusion:nonsense", "self-fusion:nonsense"),
    ],
)
def test_an_unknown_arm_is_refused_naming_it(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_arms(fake_context(["m1", "m2"]), [name])


def test_a_bad_setting_fails_before_anything_runs() -> None:
    with pytest.raises(FusionConfigError, match="quorum"):
        build_arms(fake_context(["m1"], quorum=3))
