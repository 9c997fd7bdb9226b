"""The model factory's optional `prepare(specs)` hook: dispatch awaits it with the plan before
any model is built, and the default factory starts the bundled local model server through it,
so nodes/ start nothing themselves and a factory without the hook (the tests' fakes) works."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.models import default_model_factory
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.local_model import launcher
from fusiongraph.local_model.settings import LOCAL_MODEL_ALIAS
from tests.support.fakes import FakeFactory, fake_context, judge_json

LOCAL = f"local:{LOCAL_MODEL_ALIAS}"


class PreparingFactory(FakeFactory):
    """A fake factory with the hook: records each plan it was asked to prepare."""

    def __init__(self, scripts: dict[str, Any]) -> None:
        super().__init__(scripts)
        self.prepared: list[list[ModelSpec]] = []

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        assert self.built == [], "prepare must run before any model of the plan is built"
        self.prepared.append(list(specs))


def scripts(*panel: str) -> dict[str, Any]:
    return {
        **{name: [f"Answer of {name}."] for name in panel},
        "judge": [judge_json(consensus=["agreed"])],
        "synth": ["Final answer."],
    }


def ask() -> dict[str, Any]:
    return {"messages": [HumanMessage("What is the capital of France?")]}


@pytest.fixture
def no_local_server(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the launcher's start: records the calls instead of starting llama.cpp."""
    calls: list[str] = []

    async def ensure(*_: Any, **__: Any) -> str:
        calls.append("ensure")
        return "http://127.0.0.1:1/v1"

    monkeypatch.setattr(launcher, "aensure_local_server", ensure)
    return calls


async def test_dispatch_awaits_prepare_with_the_plan_before_building_models() -> None:
    factory = PreparingFactory(scripts("m1", "m2"))
    result = await build_graph(factory).ainvoke(ask(), context=fake_context(["m1", "m2"]))
    assert result["messages"][-1].content == "Final answer."
    assert len(factory.prepared) == 1
    assert [spec.model for spec in factory.prepared[0]] == ["m1", "m2", "judge", "synth"]


async def test_default_prepare_starts_the_local_server_only_for_a_local_spec(
    no_local_server: list[str],
) -> None:
    await default_model_factory.prepare([ModelSpec.model_validate("openai:a")])
    assert no_local_server == []
    await default_model_factory.prepare(
        [ModelSpec.model_validate("openai:a"), ModelSpec.model_validate(LOCAL)]
    )
    assert no_local_server == ["ensure"]


async def test_a_factory_without_prepare_runs_a_local_panel_without_a_server(
    no_local_server: list[str],
) -> None:
    factory = FakeFactory({**scripts(), LOCAL_MODEL_ALIAS: ["Answer of the local model."]})
    context = {**fake_context([]), "panel": [LOCAL]}
    result = await build_graph(factory).ainvoke(ask(), context=context)
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert [entry["model"] for entry in fusion["panel"]] == [LOCAL]
    assert no_local_server == []


def test_a_local_spec_resolves_to_the_local_server_of_the_configured_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FUSIONGRAPH_LOCAL_PORT", "9123")
    spec = ModelSpec.model_validate(LOCAL)
    assert spec.resolved_base_url() == "http://127.0.0.1:9123/v1"
    assert spec.latency_key() == f"{LOCAL}@http://127.0.0.1:9123/v1"
    pinned = spec.model_copy(update={"base_url": "http://127.0.0.1:7000/v1"})
    assert pinned.resolved_base_url() == "http://127.0.0.1:7000/v1"  # an explicit URL wins
