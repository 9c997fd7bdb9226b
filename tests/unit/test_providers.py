"""Every LangChain provider: `<provider>:<model>` specs built through init_chat_model, each with
its extra. Ollama's package is installed (dev): its specs run a whole graph against a loopback
fake speaking Ollama's wire format; a provider whose package is absent is refused at config time,
naming the extra to install."""

from __future__ import annotations

import importlib.util
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from langchain.chat_models import base as langchain_models
from langchain_core.messages import HumanMessage
from langchain_ollama import ChatOllama
from pydantic import BaseModel

from fusiongraph.graph import config as config_module
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.models import default_model_factory
from fusiongraph.graph.providers import LANGCHAIN_PROVIDERS, chat_model_kwargs
from fusiongraph.graph.specs import ModelSpec
from tests.support.fakes import judge_json
from tests.support.ollama import FakeOllama, OllamaServer

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = json.loads(judge_json(consensus=["Paris is the capital"]))


@pytest.fixture
def ollama() -> Any:
    fake = FakeOllama(
        replies={
            "panel-a": "Paris is the capital of France.",
            "panel-b": "The capital is Paris.",
            "synth": "Paris.",
        },
        tool_replies={"judge": ANALYSIS},
        delays={"slow": 3.0},
    )
    with OllamaServer(fake) as server:
        yield server


def ollama_spec(server: OllamaServer, model: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "ollama", "model": model, "base_url": server.url, **extra}


def test_an_ollama_spec_is_built_by_init_chat_model_with_the_specs_settings(
    ollama: OllamaServer,
) -> None:
    spec = ModelSpec.model_validate(
        ollama_spec(ollama, "panel-a", temperature=0.3, seed=7, max_tokens=64, timeout_s=9)
    )
    model = default_model_factory(spec)
    assert isinstance(model, ChatOllama)
    assert (model.model, model.base_url) == ("panel-a", ollama.url)
    # Ollama's own names: num_predict for max_tokens, the httpx clients' timeout.
    assert (model.temperature, model.seed, model.num_predict) == (0.3, 7, 64)
    assert model.client_kwargs == {"timeout": 9.0}
    assert ModelSpec.model_validate("ollama:llama3.2").name == "ollama:llama3.2"


async def test_a_graph_of_ollama_models_runs_and_counts_their_usage(ollama: OllamaServer) -> None:
    context = {
        "panel": [
            ollama_spec(ollama, "panel-a", max_tokens=200),
            ollama_spec(ollama, "panel-b", temperature=0.9),
        ],
        "judge": ollama_spec(ollama, "judge"),  # default: function calling (the tool reply)
        "synthesizer": ollama_spec(ollama, "synth"),
        "tool_mode": "off",
    }
    result = await build_graph().ainvoke(
        {"messages": [HumanMessage(content="What is the capital of France?")]}, context=context
    )
    final = result["messages"][-1]
    fusion = final.response_metadata["fusion"]
    assert final.text == "Paris."
    assert [p["content"] for p in fusion["panel"]] == [
        "Paris is the capital of France.",
        "The capital is Paris.",
    ]
    assert fusion["analysis"]["consensus"] == ["Paris is the capital"]
    assert fusion["judge"]["ok"] is True
    sent = {r.model: r.body for r in ollama.fake.requests}
    assert sent["panel-a"]["options"]["num_predict"] == 200
    assert sent["panel-b"]["options"]["temperature"] == 0.9
    assert sent["judge"]["tools"], "the judge asked for its structure by tool calling"
    # Usage from Ollama's prompt_eval_count / eval_count reaches every entry and the total.
    panel_out = [p["usage"]["output_tokens"] for p in fusion["panel"]]
    assert panel_out == [6, 4]
    total = fusion["usage"]["total"]
    assert total["total_tokens"] == final.usage_metadata["total_tokens"] > sum(panel_out)
    assert total["output_tokens"] >= sum(panel_out) + 1  # plus the judge's and the synthesis's


async def test_the_specs_timeout_cuts_a_slow_ollama_panelist(ollama: OllamaServer) -> None:
    context = {
        "panel": [ollama_spec(ollama, "panel-a"), ollama_spec(ollama, "slow", timeout_s=0.5)],
        "judge": ollama_spec(ollama, "judge"),
        "synthesizer": ollama_spec(ollama, "synth"),
        "tool_mode": "off",
    }
    started = time.monotonic()
    result = await build_graph().ainvoke(
        {"messages": [HumanMessage(content="Capital of France?")]}, context=context
    )
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert [f["model"] for f in fusion["failed_models"]] == ["ollama:slow"]
    assert time.monotonic() - started < 2.5  # the 3 s reply was not waited for


def _absent(provider: str) -> None:
    module = LANGCHAIN_PROVIDERS[provider].module.split(".")[0]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")


@pytest.mark.parametrize(
    ("provider", "extra"), [("groq", "groq"), ("google_genai", "google-genai"), ("bedrock", "aws")]
)
def test_a_provider_without_its_package_is_refused_naming_the_extra(
    provider: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _absent(provider)
    monkeypatch.setenv("GROQ_API_KEY", "k")
    with pytest.raises(FusionConfigError) as info:
        resolve_config({"panel": [f"{provider}:some-model", "openai:gpt-5.5"]})
    assert info.value.field == "panel[0]"
    assert f"pip install 'fusiongraph[{extra}]'" in str(info.value)


def test_anthropic_without_its_package_names_its_extra() -> None:
    _absent("anthropic")
    with pytest.raises(FusionConfigError, match=r"fusiongraph\[anthropic\]") as info:
        resolve_config({"panel": ["openai:gpt-5.5"], "judge": "anthropic:claude-opus-4.8"})
    assert info.value.field == "judge"


def test_a_providers_usual_key_is_checked_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_module, "missing_package", lambda provider: None)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(FusionConfigError, match="GROQ_API_KEY") as info:
        resolve_config({"panel": ["openai:gpt-5.5", "groq:llama-3.3-70b"]})
    assert info.value.field == "panel[1]"
    monkeypatch.setenv("GROQ_API_KEY", "k")
    assert resolve_config({"panel": ["groq:llama-3.3-70b"]}).panel[0].provider == "groq"


def test_an_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(FusionConfigError, match=r"unknown provider 'nope'.*ollama"):
        resolve_config({"panel": ["nope:model"]})


def test_the_table_is_langchains_own() -> None:
    """Every provider init_chat_model knows is a spec prefix (openai and openrouter keep the
    built-in gateway path), imported from the same module and class as LangChain does."""
    known = langchain_models._BUILTIN_PROVIDERS
    assert set(LANGCHAIN_PROVIDERS) == set(known) - {"openai", "openrouter"}
    for provider, entry in LANGCHAIN_PROVIDERS.items():
        assert (entry.module, entry.class_name) == known[provider][:2], provider


def test_every_providers_extra_installs_its_package() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    for provider, entry in LANGCHAIN_PROVIDERS.items():
        if entry.extra is None:  # langchain-openai: a core dependency
            continue
        assert any(req.startswith(f"{entry.package}>") for req in extras[entry.extra]), provider


def test_a_base_url_the_model_class_cannot_take_is_an_error() -> None:
    class NoEndpoint(BaseModel):  # a model class with a model and a timeout, no endpoint
        model: str
        request_timeout: float | None = None

    spec = ModelSpec.model_validate({"provider": "ollama", "model": "m", "base_url": "http://x"})
    no_url = spec.model_copy(update={"base_url": None, "temperature": 0.5})
    assert chat_model_kwargs(no_url, NoEndpoint, 5) == {"request_timeout": 5}
    with pytest.raises(ValueError, match="takes no base_url"):
        chat_model_kwargs(spec, NoEndpoint, 5)
