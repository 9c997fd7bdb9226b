"""Configuration: presets expand, overrides apply, bad settings fail early, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import ValidationError

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import FusionContext, config_of, plan_of, resolve_config
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.presets import PRESETS
from tests.support.fakes import FakeFactory


def test_local_preset_is_the_default_and_needs_no_key() -> None:
    config = resolve_config(None)
    assert config.preset == "local"
    assert len(config.panel) == 3 and {s.provider for s in config.all_specs()} == {"local"}
    assert len({(s.temperature, s.seed) for s in config.panel}) == 3
    assert config.tool_mode == "prefetch" and config.search.provider == "corpus"


def test_every_preset_expands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    for name in PRESETS:
        config = resolve_config({"preset": name})
        assert 1 <= len(config.panel) <= 8


def test_quality_preset_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    config = resolve_config(FusionContext(preset="quality"))
    assert [s.name for s in config.panel] == [
        "openrouter:anthropic/claude-opus-4.8",
        "openrouter:google/gemini-3.1-pro",
        "openrouter:openai/gpt-5.5",
    ]
    assert config.judge.name == config.synthesizer.name == "openrouter:anthropic/claude-opus-4.8"
    assert config.judge.resolved_base_url() == "https://openrouter.ai/api/v1"


def test_overrides_apply_on_top_of_the_preset() -> None:
    config = resolve_config(
        {
            "preset": "local",
            "panel": ["openai:gpt-5.5", {"model": "x", "base_url": "http://h/v1"}],
            "max_tool_calls": 3,
            "tool_mode": "agentic",
            "corpus_dir": "/tmp/c",
            "quorum": 1,
        }
    )
    assert [s.name for s in config.panel] == ["openai:gpt-5.5", "x"]
    assert config.max_tool_calls == 3 and config.tool_mode == "agentic"
    assert config.search.provider == "corpus" and config.search.corpus_dir == "/tmp/c"
    assert config.judge.provider == "local"


@pytest.mark.parametrize(
    ("ctx", "field"),
    [
        ({"preset": "nope"}, "preset"),
        ({"panel": []}, "panel"),
        ({"panel": ["openai:a"] * 9}, "panel"),
        ({"panel": ["foo:bar"]}, "panel[0]"),
        ({"panel": ["openai:a", "no-prefix"]}, "panel[1]"),
        ({"judge": "openai:fusion-local"}, "judge"),
        ({"panel": ["openrouter:openrouter/fusion"]}, "panel[0]"),
        ({"max_tool_calls": 17}, "max_tool_calls"),
        ({"max_tool_calls": 0}, "max_tool_calls"),
        ({"tool_mode": "sometimes"}, "tool_mode"),
        ({"quorum": 4}, "quorum"),
        ({"temperature": "warm"}, "temperature"),
        ({"max_cost_usd": float("inf")}, "max_cost_usd"),
        ({"panel": "openai:a"}, "panel"),
        ({"panel": ["openai:a", object()]}, "panel[1]"),
        ({"search_provider": "bing"}, "search.provider"),
        ({"colour": "blue"}, "colour"),
        ({"panel": [{"model": "x"}]}, "panel[0]"),
    ],
)
def test_bad_configuration_names_the_field(ctx: dict[str, Any], field: str) -> None:
    with pytest.raises(FusionConfigError) as info:
        resolve_config(ctx)
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_key_is_refused_naming_the_model() -> None:
    with pytest.raises(FusionConfigError) as info:
        resolve_config({"preset": "quality"})
    assert info.value.field == "panel[0]" and "OPENROUTER_API_KEY" in str(info.value)


def test_a_resolved_plan_is_shared_but_keys_and_environment_are_read_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    ctx = {"preset": "quality", "quorum": 2}
    first = resolve_config(ctx)
    plan = plan_of(first)
    assert config_of(plan) == first  # a resumed run reads back the plan dispatch resolved
    with pytest.raises(ValidationError):
        first.quorum = 3  # type: ignore[misc]  # shared, so frozen

    monkeypatch.setenv("FUSIONGRAPH_SEARCH_PROVIDER", "duckduckgo")
    assert resolve_config(ctx).search.provider == "duckduckgo"
    assert config_of(plan).search == first.search  # a run keeps the plan it started with
    monkeypatch.delenv("OPENROUTER_API_KEY")
    with pytest.raises(FusionConfigError, match="OPENROUTER_API_KEY"):
        resolve_config(ctx)
    with pytest.raises(FusionConfigError, match="OPENROUTER_API_KEY"):
        config_of(plan)


async def test_bad_configuration_fails_before_any_model_call() -> None:
    factory = FakeFactory({})
    with pytest.raises(FusionConfigError):
        await build_graph(factory).ainvoke(
            {"messages": [HumanMessage(content="hi")]}, context={"panel": ["foo:bar"]}
        )
    assert factory.built == []


async def test_bad_input_fails_before_any_model_call() -> None:
    factory = FakeFactory({})
    with pytest.raises(FusionError) as info:
        await build_graph(factory).ainvoke({"messages": []}, context={"panel": ["openai:a"]})
    assert info.value.reason == "invalid_input" and factory.built == []


def test_a_custom_panel_brings_no_preset_and_none_of_the_local_models_tuning() -> None:
    config = resolve_config(
        {"panel": [{"provider": "openai", "model": "a", "temperature": 1.2, "seed": 3}, "openai:b"]}
    )
    assert config.preset is None and config.local_tuning == ()
    # Judge and synthesizer default to the first panelist, without its sampling settings.
    assert config.judge.name == config.synthesizer.name == "openai:a"
    assert config.judge.temperature is None and config.synthesizer.seed is None
    # The run's defaults, not the toy model's: tools, real search, 120 s, the judge reads 8000.
    assert config.tool_mode == "agentic" and config.search.provider == "auto"
    assert config.panel_timeout_s == 120 and config.judge_input_chars == 8000
    assert config.panel_max_tokens is None and config.max_tokens is None
    assert config.settings_used()["preset"] is None


def test_the_local_models_tuning_applies_only_where_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_panel = resolve_config({"preset": "local", "panel": ["openai:a"]})
    assert real_panel.local_tuning == ("judge", "synthesizer")
    assert real_panel.tool_mode == "agentic" and real_panel.search.provider == "auto"
    assert real_panel.panel_timeout_s == 120 and real_panel.judge_input_chars == 1200
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    local_panel = resolve_config({"preset": "quality", "panel": ["local:smollm2-135m"]})
    assert local_panel.local_tuning == ("panel",)
    assert local_panel.tool_mode == "prefetch" and local_panel.panel_timeout_s == 300
    assert local_panel.judge_input_chars == 8000
    # What the caller sets always wins over the tuning.
    assert resolve_config({"panel_timeout_s": 30}).panel_timeout_s == 30


def test_a_named_preset_keeps_its_judge_for_a_custom_panel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    config = resolve_config({"preset": "quality", "panel": ["openai:a"]})
    assert config.preset == "quality" and config.judge.name.startswith("openrouter:")
    monkeypatch.setenv("FUSIONGRAPH_PRESET", "budget")
    assert resolve_config({"panel": ["openai:a"]}).preset == "budget"


async def test_an_unknown_setting_in_context_is_a_config_error_not_a_type_error() -> None:
    factory = FakeFactory({})
    with pytest.raises(FusionConfigError) as info:
        await build_graph(factory).ainvoke(
            {"messages": [HumanMessage(content="hi")]}, context={"colour": "blue"}
        )
    assert info.value.field == "colour" and "known:" in info.value.message
    assert factory.built == []


async def test_a_model_object_as_panelist_is_a_config_error_naming_it() -> None:
    from langchain_openai import ChatOpenAI

    factory = FakeFactory({})
    model = ChatOpenAI(model="gpt-5.5", api_key="k")
    with pytest.raises(FusionConfigError) as info:
        await build_graph(factory).ainvoke(
            {"messages": [HumanMessage(content="hi")]}, context={"panel": [model]}
        )
    assert info.value.field == "panel[0]" and "ChatOpenAI" in info.value.message
    assert factory.built == []


@pytest.mark.parametrize("sync", [False, True])
async def test_settings_in_configurable_are_refused_pointing_at_context(sync: bool) -> None:
    factory = FakeFactory({})
    graph = build_graph(factory)
    inputs = {"messages": [HumanMessage(content="hi")]}
    config = {"configurable": {"preset": "quality", "quorum": 2}}
    with pytest.raises(FusionConfigError) as info:
        if sync:
            graph.invoke(inputs, config=config)
        else:
            await graph.ainvoke(inputs, config=config)
    assert info.value.field == "configurable.preset" and "context" in info.value.message
    assert factory.built == []


async def test_the_run_records_the_preset_and_settings_it_used() -> None:
    from tests.support.server_app import scripts

    graph = build_graph(FakeFactory(scripts()))
    result = await graph.ainvoke(
        {"messages": [HumanMessage(content="Capital of France?")]},
        context={"panel": ["openai:m1", "openai:m2"], "tool_mode": "off", "quorum": 2},
    )
    fusion = result["messages"][-1].response_metadata["fusion"]
    settings = fusion["settings"]
    assert fusion["preset"] is None and settings["preset"] is None
    assert settings["local_tuning"] == [] and settings["search_provider"] == "auto"
    assert settings["tool_mode"] == "off" and settings["quorum"] == 2
    assert settings["panel_timeout_s"] == 120 and settings["judge_input_chars"] == 8000
    assert fusion["judge"]["model"] == fusion["synthesizer"]["model"] == "openai:m1"
