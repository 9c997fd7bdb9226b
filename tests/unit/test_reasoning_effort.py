"""Reasoning effort reaches the panelists' and the judge's request bodies in each provider's form,
and the reasoning tokens they report are counted in the run's usage.

Real ChatOpenAI clients of the default factory against the fake upstream, which records each
request's `reasoning_effort` / `reasoning` and, with `reasoning_tokens=N`, reports N reasoning
tokens (completion_tokens_details) for every request that asked for an effort.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.reasoning import chat_openai_kwargs, effort_is_mapped
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes.panel import panel_identity
from fusiongraph.serve.server import create_app
from tests.support.servers import running_server
from tests.support.upstream import FakeUpstream, RequestRecord, UpstreamServer

REASONING_TOKENS = 7
CONTEXT: dict[str, Any] = {
    "panel": [
        "openai:p1-0.01s",  # the run's effort
        {"provider": "openai", "model": "p2-0.01s", "reasoning_effort": "low"},  # its own
        "openrouter:p3-0.01s",  # OpenRouter's form
    ],
    "judge": "openrouter:judge-0.01s",
    "synthesizer": "openai:synth-0.01s",
    "tool_mode": "off",
}


@pytest.fixture(scope="module")
def reasoning_upstream() -> Iterator[UpstreamServer]:
    app = FakeUpstream(chunks=2, chunk_delay_s=0.0, reasoning_tokens=REASONING_TOKENS)
    with UpstreamServer(app) as server:
        yield server


@pytest.fixture
def upstream_env(
    reasoning_upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> FakeUpstream:
    for provider in ("OPENAI", "OPENROUTER"):
        monkeypatch.setenv(f"{provider}_BASE_URL", reasoning_upstream.base_url)
        monkeypatch.setenv(f"{provider}_API_KEY", "test-key")
    return reasoning_upstream.app  # type: ignore[return-value]


def by_model(app: FakeUpstream, tag: str) -> dict[str, RequestRecord]:
    return {r.model: r for r in app.records if r.tag == tag}


def sent_effort(record: RequestRecord) -> tuple[Any, Any]:
    return record.options.get("reasoning_effort"), record.options.get("reasoning")


def assert_effort_reached(app: FakeUpstream, tag: str, effort: str) -> None:
    records = by_model(app, tag)
    assert sent_effort(records["p1-0.01s"]) == (effort, None)
    assert sent_effort(records["p2-0.01s"]) == ("low", None)  # its spec's own level wins
    assert sent_effort(records["p3-0.01s"]) == (None, {"effort": effort})
    judge = records["judge-0.01s"]
    assert judge.role == "judge" and sent_effort(judge) == (None, {"effort": effort})
    assert judge.options["response_format"]["type"] == "json_schema"  # both in one body
    assert judge.options["usage"] == {"include": True}  # OpenRouter's cost report kept
    assert sent_effort(records["synth-0.01s"]) == (None, None)  # only when its spec says so


async def test_effort_reaches_panel_and_judge_and_reasoning_tokens_are_counted(
    upstream_env: FakeUpstream,
) -> None:
    message = HumanMessage("[bench:effort-graph] Is 2^61 - 1 prime?")
    context = {**CONTEXT, "reasoning_effort": "high"}
    out = await build_graph().ainvoke({"messages": [message]}, context=context)
    final = out["messages"][-1]
    fusion = final.response_metadata["fusion"]
    assert_effort_reached(upstream_env, "effort-graph", "high")

    assert [p["usage"]["reasoning_tokens"] for p in fusion["panel"]] == [REASONING_TOKENS] * 3
    usage = fusion["usage"]
    assert usage["panel"]["reasoning_tokens"] == 3 * REASONING_TOKENS
    assert usage["judge"]["reasoning_tokens"] == REASONING_TOKENS
    assert usage["synthesis"]["reasoning_tokens"] == 0
    assert usage["total"]["reasoning_tokens"] == 4 * REASONING_TOKENS
    records = by_model(upstream_env, "effort-graph")
    assert usage["total"]["output_tokens"] == sum(r.completion_tokens for r in records.values())
    assert final.usage_metadata["output_token_details"]["reasoning"] == 4 * REASONING_TOKENS
    assert fusion["settings"]["reasoning_effort"] == "high"


async def test_no_effort_asked_none_sent_none_counted(upstream_env: FakeUpstream) -> None:
    message = HumanMessage("[bench:effort-none] Is 2^61 - 1 prime?")
    context = {**CONTEXT, "panel": ["openai:p1-0.01s", "openrouter:p3-0.01s"]}
    out = await build_graph().ainvoke({"messages": [message]}, context=context)
    usage = out["messages"][-1].response_metadata["fusion"]["usage"]
    assert all(
        sent_effort(r) == (None, None) for r in by_model(upstream_env, "effort-none").values()
    )
    assert usage["total"]["reasoning_tokens"] == 0
    assert "output_token_details" not in out["messages"][-1].usage_metadata


def test_each_provider_is_asked_in_its_own_form() -> None:
    def spec(provider: str, **extra: Any) -> ModelSpec:
        base = {"base_url": "http://127.0.0.1:9/v1"} if provider == "openai_compatible" else {}
        return ModelSpec.model_validate({"provider": provider, "model": "m", **base, **extra})

    assert chat_openai_kwargs(spec("openai", reasoning_effort="minimal")) == {
        "reasoning_effort": "minimal"
    }
    assert chat_openai_kwargs(spec("openai_compatible", reasoning_effort="none")) == {
        "reasoning_effort": "none"
    }
    assert chat_openai_kwargs(spec("openrouter", reasoning_effort="xhigh")) == {
        "extra_body": {"reasoning": {"effort": "xhigh"}}
    }
    # llama.cpp has no such parameter; ChatAnthropic's thinking is a token budget: not mapped.
    for provider in ("local", "anthropic"):
        assert not effort_is_mapped(spec(provider, reasoning_effort="high"))
        assert chat_openai_kwargs(spec(provider, reasoning_effort="high")) == {}
    assert chat_openai_kwargs(spec("openai")) == {}


def test_a_bad_level_names_the_setting() -> None:
    with pytest.raises(FusionConfigError) as err:
        FusionContext(reasoning_effort="extreme")  # type: ignore[arg-type]
    assert err.value.field == "reasoning_effort"
    with pytest.raises(FusionConfigError) as err:
        resolve_config(
            {"panel": [{"provider": "openai", "model": "m", "reasoning_effort": "max!"}]}
        )
    assert err.value.field.startswith("panel[0]") and "reasoning_effort" in err.value.field


def test_the_panel_cache_key_holds_the_effort_in_force() -> None:
    def key(**extra: Any) -> dict[str, Any]:
        config = resolve_config({"panel": ["openai:m1", "openai:m2"], **extra})
        return panel_identity(config, 0)

    assert key()["spec"]["reasoning_effort"] is None
    assert key(reasoning_effort="high")["spec"]["reasoning_effort"] == "high"
    assert key(reasoning_effort="high") != key(reasoning_effort="low")


# ------------------------------------------------------------------------------ the server

SERVER_MODEL = "fusion-reasoning"


@pytest.fixture
def server(upstream_env: FakeUpstream) -> Iterator[str]:
    app = create_app(build_graph(), api_keys=[], aliases={SERVER_MODEL: CONTEXT})
    with running_server(app) as url:
        yield url


def test_chat_completions_reasoning_effort_maps_onto_the_run(
    server: str, upstream_env: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=SERVER_MODEL,
            reasoning_effort="medium",
            messages=[{"role": "user", "content": "[bench:effort-chat] Why is the sky blue?"}],
        )
    assert_effort_reached(upstream_env, "effort-chat", "medium")
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 4 * REASONING_TOKENS
    fusion = reply.model_extra["fusion"]  # type: ignore[index]
    assert fusion["usage"]["total"]["reasoning_tokens"] == 4 * REASONING_TOKENS


def test_responses_reasoning_effort_maps_onto_the_run(
    server: str, upstream_env: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as client:
        response = client.responses.create(
            model=SERVER_MODEL,
            input="[bench:effort-responses] Why is the sky blue?",
            reasoning={"effort": "low"},
        )
    records = by_model(upstream_env, "effort-responses")
    assert sent_effort(records["p1-0.01s"]) == ("low", None)
    assert sent_effort(records["judge-0.01s"]) == (None, {"effort": "low"})
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 4 * REASONING_TOKENS


def test_the_fusion_object_sets_it_too_and_a_disagreement_is_a_400(
    server: str, upstream_env: FakeUpstream
) -> None:
    def post(**body: Any) -> httpx.Response:
        messages = [{"role": "user", "content": "[bench:effort-fusion] Why is the sky blue?"}]
        payload = {"model": SERVER_MODEL, "messages": messages, **body}
        return httpx.post(f"{server}/v1/chat/completions", json=payload, timeout=60)

    response = post(fusion={"reasoning_effort": "minimal"})
    assert response.status_code == 200, response.text[:300]
    assert sent_effort(by_model(upstream_env, "effort-fusion")["p1-0.01s"]) == ("minimal", None)

    before = len(upstream_env.records)
    for body, param in (
        ({"reasoning_effort": "high", "fusion": {"reasoning_effort": "low"}}, "reasoning_effort"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"fusion": {"reasoning_effort": "extreme"}}, "reasoning_effort"),  # as settings are
    ):
        response = post(**body)
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error"]["param"] == param
    assert len(upstream_env.records) == before
