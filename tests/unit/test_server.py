"""The OpenAI-compatible server, non-streaming, driven by the official `openai` SDK.

The real app runs under uvicorn on 127.0.0.1 with a graph of scripted fake models.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from fusiongraph.graph.models import FUSION_DEPTH_HEADER
from tests.support.fakes import FakeFactory, Script
from tests.support.server_app import (
    ANSWER,
    MODEL,
    USER,
    WEATHER_TOOL,
    app_for,
    scripts,
    served,
    tool_call_reply,
)
from tests.support.servers import running_server


class Sized(BaseModel):
    size: int


def fusion_of(completion: Any) -> dict[str, Any]:
    return completion.model_extra["fusion"]


# --- success ----------------------------------------------------------------------------------


def test_models_lists_presets_and_aliases(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"fusion", "fusion-local", "fusion-quality", "fusion-budget", MODEL} <= set(ids)
    assert client.models.retrieve("fusion-quality").id == "fusion-quality"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_sync_completion(client: openai.OpenAI, factory: FakeFactory) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == MODEL and completion.created > 0
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == ANSWER
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    fusion = fusion_of(completion)
    assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p2", "p3"]
    assert fusion["analysis"]["consensus"] == ["Paris is the capital"]
    assert fusion["failed_models"] == []
    assert len(factory.scripts["synth"].calls) == 1


def test_usage_totals_every_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    total = fusion_of(completion)["usage"]["total"]
    usage = completion.usage
    assert usage.prompt_tokens == total["input_tokens"] > 0
    assert usage.completion_tokens == total["output_tokens"] > 0
    assert (
        usage.total_tokens == total["total_tokens"] == usage.prompt_tokens + usage.completion_tokens
    )
    parts = fusion_of(completion)["usage"]
    assert usage.total_tokens == sum(
        parts[k]["total_tokens"] for k in ("panel", "judge", "synthesis")
    )


async def test_async_completion(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=USER)
    assert completion.choices[0].message.content == ANSWER
    assert len(fusion_of(completion)["panel"]) == 3


def test_per_request_fusion_overrides(client: openai.OpenAI, factory: FakeFactory) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=USER,
        extra_body={"fusion": {"panel": ["openai:m7", "openai:m8"], "quorum": 2}},
    )
    fusion = fusion_of(completion)
    assert sorted(p["model"] for p in fusion["panel"]) == ["openai:m7", "openai:m8"]
    assert factory.scripts["m1"].calls == [] and len(factory.scripts["m7"].calls) == 1


def test_temperature_and_max_tokens_reach_the_synthesis_step(
    client: openai.OpenAI, factory: FakeFactory
) -> None:
    client.chat.completions.create(model=MODEL, messages=USER, temperature=1.3, max_tokens=77)
    synth = [s for s in factory.built if s.model == "synth"]
    assert synth[-1].temperature == 1.3 and synth[-1].max_tokens == 77
    panel = [s for s in factory.built if s.model.startswith("m")]
    assert all(s.temperature != 1.3 for s in panel)


def test_conversation_roles_reach_the_graph(client: openai.OpenAI, factory: FakeFactory) -> None:
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Name a French city."}]},
        {"role": "assistant", "content": "Lyon."},
        {"role": "user", "content": "And the capital?"},
    ]
    client.chat.completions.create(model=MODEL, messages=messages)
    sent = factory.scripts["m1"].calls[0]
    assert "Answer briefly." in sent[0].content
    assert [m.type for m in sent[1:]] == ["human", "ai", "human"]
    assert [m.content for m in sent[1:]] == ["Name a French city.", "Lyon.", "And the capital?"]


# --- tools ------------------------------------------------------------------------------------


def tools_factory() -> FakeFactory:
    return FakeFactory(scripts(synth=[tool_call_reply(city="Paris")]))


def test_tool_calls_come_back_in_openai_format() -> None:
    factory = tools_factory()
    with (
        running_server(app_for(factory)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(
            model=MODEL, messages=USER, tools=[WEATHER_TOOL], tool_choice="auto"
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id == "call_abc123" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    tools, kwargs = factory.scripts["synth"].bound_tools[-1]
    assert tools == [WEATHER_TOOL] and kwargs["tool_choice"] == "auto"
    assert all(not s.bound_tools for name, s in factory.scripts.items() if name != "synth")


def test_tool_results_continue_the_conversation(
    client: openai.OpenAI, factory: FakeFactory
) -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    completion = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL]
    )
    assert completion.choices[0].message.content == ANSWER
    synth_sent = factory.scripts["synth"].calls[-1]
    assert synth_sent[-1].type == "tool" and synth_sent[-1].tool_call_id == "call_1"
    assert synth_sent[-2].tool_calls[0]["args"] == {"city": "Paris"}


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.status_code == 400
    assert info.value.code == "model_not_found" and info.value.param == "model"
    assert "gpt-4o" in info.value.message


def test_too_many_panelists_is_400_naming_panel(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=USER,
            extra_body={"fusion": {"panel": [f"openai:m{i}" for i in range(1, 10)]}},
        )
    assert info.value.param == "fusion.panel" and info.value.code == "limit_exceeded"
    assert "max_panel = 8" in info.value.message


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": ""}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "messages[0].content[0]"),
        ([{"role": "system", "content": "be nice"}], "messages"),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_messages_are_400(client: openai.OpenAI, messages: list[Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"fusion": {"fetch_allow_private": ["127.0.0.1"]}}, "fusion.fetch_allow_private"),
        (
            {"fusion": {"panel": [{"model": "x", "base_url": "http://127.0.0.1:1"}]}},
            "fusion.panel[0].base_url",
        ),
        ({"fusion": {"no_such_setting": 1}}, "fusion.no_such_setting"),
        ({"fusion": {"tool_mode": "sometimes"}}, "tool_mode"),
        ({"temperature": 5}, "temperature"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_parameters_are_400(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, extra_body=extra)
    assert info.value.param == param


def test_malformed_bodies_are_openai_style_400s(base_url: str) -> None:
    url = f"{base_url}/v1/chat/completions"
    for content in (
        b"{not json",
        b"[1, 2]",
        json.dumps({"model": MODEL}).encode(),
        json.dumps({"model": MODEL, "messages": "hi"}).encode(),
    ):
        response = httpx.post(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, content
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert "Traceback" not in response.text
    assert httpx.post(url, content=b"{not json").json()["error"]["code"] == "invalid_json"
    missing = httpx.post(url, json={"model": MODEL}).json()["error"]
    assert missing["param"] == "messages"
    other = httpx.get(f"{base_url}/v1/nothing-here")
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_recursion_header_is_refused(base_url: str, factory: FakeFactory) -> None:
    with (
        openai.OpenAI(
            base_url=f"{base_url}/v1",
            api_key="x",
            max_retries=0,
            default_headers={FUSION_DEPTH_HEADER: "1"},
        ) as client,
        pytest.raises(openai.BadRequestError) as info,
    ):
        client.chat.completions.create(model=MODEL, messages=USER)
    assert info.value.code == "recursion"
    assert factory.scripts["m1"].calls == []


def test_all_panelists_failing_is_502_with_reason() -> None:
    factory = FakeFactory(scripts(**{f"m{i}": Script([RuntimeError("down")]) for i in (1, 2, 3)}))
    with served(factory) as (url, client):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=USER)
        raw = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert info.value.status_code == 502 and info.value.code == "all_panelists_failed"
    body = info.value.body
    assert body["type"] == "server_error"
    assert {f["panelist"] for f in body["fusion"]["failed_models"]} == {"p1", "p2", "p3"}
    assert raw.headers["x-should-retry"] == "false" and "Traceback" not in raw.text
    assert factory.scripts["synth"].calls == []


def test_all_panelists_rate_limited_is_429() -> None:
    class RateLimited(Exception):
        status_code = 429

    factory = FakeFactory(
        scripts(**{f"m{i}": Script([RateLimited("slow down")]) for i in (1, 2, 3)})
    )
    with served(factory) as (_, client), pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=USER)
    assert info.value.status_code == 429 and info.value.code == "rate_limited"


def test_synthesis_failure_is_502_and_deadline_is_504() -> None:
    factory = FakeFactory(scripts(synth=Script([RuntimeError("synth down")])))
    with served(factory) as (_, client):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=USER)
        assert info.value.status_code == 502 and info.value.code == "synthesis_failed"
        factory.scripts["synth"] = Script([ANSWER], delay_s=5)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model=MODEL, messages=USER, extra_body={"fusion": {"deadline_s": 1.0}}
            )
        assert info.value.status_code == 504 and info.value.code == "synthesis_failed"


def test_budget_refusal_is_400() -> None:
    factory = FakeFactory(scripts())
    with served(factory) as (_, client), pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=USER,
            max_tokens=1000,
            extra_body={
                "fusion": {
                    "max_cost_usd": 0.000001,
                    "panel_max_tokens": 1000,
                    "prices": {
                        "openai:m1": {"input": 1, "output": 1},
                        "openai:m2": {"input": 1, "output": 1},
                        "openai:m3": {"input": 1, "output": 1},
                        "openai:judge": {"input": 1, "output": 1},
                        "openai:synth": {"input": 1, "output": 1},
                    },
                }
            },
        )
    assert info.value.code == "budget_exceeded"


# --- auth -------------------------------------------------------------------------------------


def test_api_keys_are_enforced() -> None:
    factory = FakeFactory(scripts())
    with running_server(app_for(factory, api_keys=["sk-right", "sk-other"])) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError) as info:
                c.chat.completions.create(model=MODEL, messages=USER)
            assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                c.models.list()
        bare = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": USER})
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
        assert factory.scripts["m1"].calls == []
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-other", max_retries=0) as c:
            assert (
                c.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
                == ANSWER
            )


def test_api_keys_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONGRAPH_API_KEYS", " sk-a , sk-b ")
    factory = FakeFactory(scripts())
    with running_server(app_for(factory, api_keys=None)) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-b"})
        assert ok.status_code == 200


def test_default_model_uses_the_configured_preset() -> None:
    with running_server(app_for(FakeFactory(scripts()), default_preset="quality")) as url:
        models = httpx.get(f"{url}/v1/models").json()["data"]
    fusion = next(m for m in models if m["id"] == "fusion")
    assert fusion["fusion"]["preset"] == "quality"
    with pytest.raises(ValueError, match="unknown preset"):
        app_for(FakeFactory(scripts()), default_preset="nope")


def test_framework_errors_are_openai_style_too(factory: FakeFactory) -> None:
    """FastAPI's own 422s become 400s, and an unexpected exception is a 500 without a trace."""
    app = app_for(factory)

    @app.post("/v1/typed")
    async def typed(body: Sized) -> dict[str, int]:
        return {"size": body.size}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with running_server(app) as url:
        invalid = httpx.post(f"{url}/v1/typed", json={"size": "big"})
        crashed = httpx.get(f"{url}/v1/boom")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "size"
    assert invalid.json()["error"]["type"] == "invalid_request_error"
    assert crashed.status_code == 500 and crashed.json()["error"]["type"] == "server_error"
    assert "secret internals" not in crashed.text and "Traceback" not in crashed.text


def test_server_start_up_freezes_the_heap_it_keeps(factory: FakeFactory) -> None:
    """The start-up heap is out of the cyclic GC's reach, so a full collection cannot stall the
    event loop for tens of milliseconds in the middle of a run."""
    import gc

    from fastapi.testclient import TestClient

    gc.unfreeze()
    with TestClient(app_for(factory)) as http:
        assert gc.get_freeze_count() > 0
        assert http.get("/v1/models").status_code == 200
