"""OpenRouter Fusion's API on fusiongraph, driven by OpenRouter's own Python SDK (`openrouter`) and
by the openai SDK with extra fields: the `fusion` plugin, the `openrouter/fusion` alias and the
`openrouter:fusion` server tool on /v1/chat/completions and /v1/responses, plain and streamed.

The real app runs under uvicorn on 127.0.0.1 with a graph of scripted fake models; the SDK parses
every response and event into its own Fusion types (FusionAnalysisResult,
OutputFusionServerToolItem, ReasoningDetailServerToolCall, FusionCall*Event) or the test fails.
The last test runs `fusiongraph serve` as a process on the fake upstream with a request copied
from OpenRouter's server-tool guide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from openrouter import OpenRouter, components, errors

from fusiongraph.serve.openrouter_fusion import TOOL_FUNCTION
from fusiongraph.serve.openrouter_plan import OpenRouterSettings
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json, judge_spec
from tests.support.server_app import ANSWER, MODEL, USER, app_for
from tests.support.server_process import ServeProcess
from tests.support.servers import running_server
from tests.support.upstream import UpstreamServer

OPUS, GPT, GEMINI = "anthropic/claude-opus-4.8", "~openai/gpt-latest", "google/gemini-3.1-pro"
ANALYST = "~anthropic/claude-opus-latest"
PANEL = [OPUS, GPT, GEMINI]
# The operator's table: OpenRouter slugs -> the scripted models.
SLUGS: dict[str, Any] = {
    OPUS: "openai:m1",
    GPT: "openai:m2",
    GEMINI: "openai:m3",
    ANALYST: judge_spec(model="analyst"),
}
BUDGET = "fusion-budget-test"
QUESTION = "What is the capital of France?"
# An analysis naming the judge's anonymous labels: the edge turns them into the callers' slugs.
ANALYSIS = judge_json(
    consensus=["Paris is the capital"],
    contradictions=[
        {
            "topic": "history",
            "stances": [
                {"panelist": "A", "stance": "since 508"},
                {"panelist": "B", "stance": "since 987"},
            ],
        }
    ],
    partial_coverage=[{"point": "population", "panelists": ["A"]}],
    unique_insights=[{"panelist": "B", "insight": "the Seine"}],
    blind_spots=["tourism"],
)
PANEL_TEXT = {f"m{i}": f"Panelist {i} says Paris. ANSWER-p{i}" for i in range(1, 6)}


def decides_to_deliberate() -> AIMessage:
    """The calling model's reply that invokes the fusion tool."""
    call = {"name": TOOL_FUNCTION, "args": {}, "id": "call_fusion", "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call])


def scripts(**overrides: Any) -> dict[str, Any]:
    """Panelists m1..m5, the alias's judge and synthesizer, and `analyst` (the ANALYST slug,
    which as the plugin's `model` both judges and writes): first the judge's analysis, then the
    answer. `overrides` replaces any of them."""
    base: dict[str, Any] = {name: [text] for name, text in PANEL_TEXT.items()}
    base["judge"] = [ANALYSIS]
    base["synth"] = [ANSWER]
    base["analyst"] = [ANALYSIS, ANSWER]
    base.update(overrides)
    return base


@contextmanager
def serving(factory: FakeFactory, **settings: Any) -> Iterator[str]:
    """The app on `factory`'s graph: OpenRouter Fusion's default is the alias MODEL (panel
    m1..m3, judge `judge`, synthesizer `synth`), `general-budget` the alias BUDGET (m4, m5)."""
    defaults: dict[str, Any] = {
        "models": SLUGS,
        "presets": {"general-high": MODEL, "general-budget": BUDGET},
        "default": MODEL,
        "passthrough": False,
        "model_factory": factory,
    }
    aliases = {MODEL: fake_context(["m1", "m2", "m3"]), BUDGET: fake_context(["m4", "m5"])}
    app = app_for(factory, aliases=aliases, openrouter=OpenRouterSettings(**defaults | settings))
    with running_server(app) as url:
        yield url


def sdk(url: str) -> OpenRouter:
    return OpenRouter(api_key="x", server_url=f"{url}/v1", retry_config=None)


def calls(factory: FakeFactory, name: str) -> int:
    return len(factory.scripts[name].calls)


def check_analysis(analysis: components.FusionAnalysisResult, slugs: list[str]) -> None:
    """The analysis as OpenRouter's type, its models named by the slugs the caller sent."""
    assert analysis.consensus == ["Paris is the capital"]
    assert analysis.blind_spots == ["tourism"]
    stances = analysis.contradictions[0].stances
    assert {s.stance for s in stances} == {"since 508", "since 987"}
    named = [s.model for s in stances] + analysis.partial_coverage[0].models
    named.append(analysis.unique_insights[0].model)
    assert set(named) <= set(slugs), named


# --- the plugin and the alias on chat completions ---------------------------------------------


def test_the_plugin_on_the_alias_deliberates_when_the_calling_model_asks() -> None:
    factory = FakeFactory(scripts(analyst=[decides_to_deliberate(), ANALYSIS, ANSWER]))
    plugin = {"id": "fusion", "analysis_models": PANEL, "model": ANALYST}
    with serving(factory) as url, sdk(url) as client:
        result = client.chat.send(model="openrouter/fusion", messages=USER, plugins=[plugin])
    assert isinstance(result, components.ChatResult)
    message = result.choices[0].message
    assert message.content == ANSWER
    (detail,) = message.reasoning_details or []
    assert isinstance(detail, components.ReasoningDetailServerToolCall)
    assert detail.tool_name == "openrouter:fusion"
    tool = json.loads(detail.result)
    assert tool["status"] == "ok"
    check_analysis(components.FusionAnalysisResult.model_validate(tool["analysis"]), PANEL)
    responses = [
        components.OutputFusionServerToolItemResponse.model_validate(r) for r in tool["responses"]
    ]
    assert {(r.model, r.content) for r in responses} == {
        (slug, PANEL_TEXT[f"m{i + 1}"]) for i, slug in enumerate(PANEL)
    }
    # The calling model was asked first, with the fusion tool and no web tools; it then wrote
    # the answer (judge and writer are the plugin's `model`).
    assert [calls(factory, m) for m in ("m1", "m2", "m3", "analyst")] == [1, 1, 1, 3]
    offered, _ = factory.scripts["analyst"].bound_tools[0]
    assert [t["function"]["name"] for t in offered] == [TOOL_FUNCTION]


def test_the_calling_model_may_answer_without_deliberating() -> None:
    factory = FakeFactory(scripts(synth=["Paris, plainly."]))
    with serving(factory) as url, sdk(url) as client:
        result = client.chat.send(model="openrouter/fusion", messages=USER)
    message = result.choices[0].message
    assert message.content == "Paris, plainly."
    assert not message.reasoning_details
    assert calls(factory, "m1") == 0 and calls(factory, "judge") == 0


def test_enabled_false_turns_fusion_off() -> None:
    factory = FakeFactory(scripts(synth=["Paris, alone."]))
    plugin = {"id": "fusion", "enabled": False}
    with serving(factory) as url, sdk(url) as client:
        result = client.chat.send(model="openrouter/fusion", messages=USER, plugins=[plugin])
    assert result.choices[0].message.content == "Paris, alone."
    assert calls(factory, "m1") == 0
    assert factory.scripts["synth"].bound_tools == []  # the tool was not even offered


def test_a_named_preset_runs_the_model_the_operator_mapped_it_to() -> None:
    factory = FakeFactory(scripts())  # tool_choice "required": no question to the model first
    plugin = {"id": "fusion", "preset": "general-budget"}
    with serving(factory) as url, sdk(url) as client:
        result = client.chat.send(
            model="openrouter/fusion", messages=USER, plugins=[plugin], tool_choice="required"
        )
    assert result.choices[0].message.content == ANSWER
    assert [calls(factory, m) for m in ("m1", "m4", "m5")] == [0, 1, 1]


def test_a_streamed_chat_carries_the_fusion_call_in_reasoning_details() -> None:
    factory = FakeFactory(scripts())
    plugin = {"id": "fusion", "analysis_models": PANEL[:2], "model": ANALYST}
    with serving(factory) as url, sdk(url) as client:
        stream = client.chat.send(
            model="openrouter/fusion",
            messages=USER,
            plugins=[plugin],
            tool_choice="required",
            stream=True,
        )
        chunks = list(stream)
    assert all(isinstance(c, components.ChatStreamChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    details = [d for c in chunks if c.choices for d in c.choices[0].delta.reasoning_details or []]
    (detail,) = details
    assert isinstance(detail, components.ReasoningDetailServerToolCall)
    check_analysis(
        components.FusionAnalysisResult.model_validate(json.loads(detail.result)["analysis"]),
        PANEL[:2],
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


# --- the server tool on the Responses API -----------------------------------------------------


def responses_request(**extra: Any) -> dict[str, Any]:
    """The server tool on the calling model OPUS: a panel of two, the ANALYST judging."""
    parameters = {"analysis_models": [GPT, GEMINI], "model": ANALYST, "max_tool_calls": 4}
    return {
        "model": OPUS,
        "input": QUESTION,
        "tools": [{"type": "openrouter:fusion", "parameters": parameters}],
        "tool_choice": "required",
        **extra,
    }


def test_the_server_tool_on_responses_returns_the_fusion_output_item() -> None:
    # OPUS is m1: here the calling model, so it only writes (tool_choice forced the tool).
    factory = FakeFactory(scripts(m1=[ANSWER], analyst=[ANALYSIS]))
    with serving(factory) as url, sdk(url) as client:
        result = client.beta.responses.send(**responses_request())
    assert isinstance(result, components.OpenResponsesResult)
    item, message = result.output
    assert isinstance(item, components.OutputFusionServerToolItem)
    assert item.type == "openrouter:fusion" and item.status == "completed"
    assert item.analysis is not None
    check_analysis(item.analysis, [GPT, GEMINI])
    assert [(r.model, r.content) for r in item.responses or []] == [
        (GPT, PANEL_TEXT["m2"]),
        (GEMINI, PANEL_TEXT["m3"]),
    ]
    assert not item.failed_models and item.failure_reason is None
    assert isinstance(message, components.OutputMessageItem)
    assert message.content[0].text == ANSWER
    assert [calls(factory, m) for m in ("m1", "m2", "m3", "analyst")] == [1, 1, 1, 1]


def test_streamed_responses_emit_the_fusion_call_events() -> None:
    factory = FakeFactory(scripts(m1=[ANSWER], analyst=[ANALYSIS]))
    with serving(factory) as url, sdk(url) as client:
        events = list(client.beta.responses.send(**responses_request(stream=True)))
    kinds = [e.type for e in events]
    fusion = [k for k in kinds if k.startswith("response.fusion_call.")]
    assert fusion[0] == "response.fusion_call.in_progress"
    assert fusion.count("response.fusion_call.panel.added") == 2
    assert fusion.count("response.fusion_call.panel.completed") == 2
    assert "response.fusion_call.analysis.in_progress" in fusion
    assert fusion[-2:] == [
        "response.fusion_call.analysis.completed",
        "response.fusion_call.completed",
    ]
    assert kinds[-1] == "response.completed"
    typed = {
        "response.fusion_call.in_progress": components.FusionCallInProgressEvent,
        "response.fusion_call.panel.added": components.FusionCallPanelAddedEvent,
        "response.fusion_call.panel.completed": components.FusionCallPanelCompletedEvent,
        "response.fusion_call.analysis.in_progress": components.FusionCallAnalysisInProgressEvent,
        "response.fusion_call.analysis.completed": components.FusionCallAnalysisCompletedEvent,
        "response.fusion_call.completed": components.FusionCallCompletedEvent,
    }
    for event in events:
        if event.type in typed:
            assert isinstance(event, typed[event.type]), event
    panel = {e.model: e.content for e in events if e.type.endswith("panel.completed")}
    assert panel == {GPT: PANEL_TEXT["m2"], GEMINI: PANEL_TEXT["m3"]}
    (analysis,) = [e for e in events if e.type.endswith("analysis.completed")]
    check_analysis(analysis.analysis, [GPT, GEMINI])
    (started,) = [e for e in events if e.type.endswith("analysis.in_progress")]
    assert started.analyst_model == ANALYST
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER
    completed = events[-1].response
    assert isinstance(completed.output[0], components.OutputFusionServerToolItem)
    assert completed.output[0].status == "completed"
    # Each event carries the fusion item's id and its place in the output.
    item_ids = {e.item_id for e in events if e.type.startswith("response.fusion_call.")}
    assert item_ids == {completed.output[0].id}


def test_when_every_panelist_fails_the_calling_model_answers_alone() -> None:
    down = {f"m{i}": Script([RuntimeError("upstream down")]) for i in (2, 3)}
    factory = FakeFactory(scripts(m1=["Paris, without the panel."], **down))
    with serving(factory) as url, sdk(url) as client:
        result = client.beta.responses.send(**responses_request())
    item, message = result.output
    assert isinstance(item, components.OutputFusionServerToolItem)
    assert item.status == "incomplete"
    assert item.failure_reason == "all_panels_failed"
    assert item.analysis is None and item.error
    assert sorted(f.model for f in item.failed_models or []) == sorted([GPT, GEMINI])
    assert message.content[0].text == "Paris, without the panel."


# --- the openai SDK with extra fields ---------------------------------------------------------


def test_the_openai_sdk_sends_the_same_requests_with_extra_body() -> None:
    factory = FakeFactory(scripts(synth=[decides_to_deliberate(), ANSWER], m1=[ANSWER, ANSWER]))
    plugin = {"id": "fusion", "analysis_models": [GPT, GEMINI]}
    with (
        serving(factory) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(
            model="openrouter/fusion", messages=USER, extra_body={"plugins": [plugin]}
        )
        request = responses_request()
        response = client.responses.create(
            model=request["model"],
            input=request["input"],
            tool_choice="required",
            extra_body={"tools": request["tools"]},
        )
    assert completion.choices[0].message.content == ANSWER
    (detail,) = (completion.choices[0].message.model_extra or {})["reasoning_details"]
    components.ReasoningDetailServerToolCall.model_validate(detail)
    assert response.output_text == ANSWER
    item = response.output[0].model_dump()
    components.OutputFusionServerToolItem.model_validate(item)
    assert item["type"] == "openrouter:fusion"


# --- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"plugins": [{"id": "fusion", "analysis_model": [GPT]}]}, "plugins[0].analysis_model"),
        ({"plugins": [{"id": "web"}]}, "plugins[0].id"),
        (
            {"plugins": [{"id": "fusion", "analysis_models": [GPT] * 9}]},
            "plugins[0].analysis_models",
        ),
        ({"plugins": [{"id": "fusion", "max_tool_calls": 17}]}, "plugins[0].max_tool_calls"),
        (
            {"plugins": [{"id": "fusion", "analysis_models": ["x/unknown"]}]},
            "plugins[0].analysis_models[0]",
        ),
        ({"plugins": [{"id": "fusion", "preset": "general-nope"}]}, "plugins[0].preset"),
        (
            {"tools": [{"type": "openrouter:fusion", "parameters": {"bogus": 1}}]},
            "tools[0].parameters.bogus",
        ),
        (
            {
                "tools": [
                    {"type": "openrouter:fusion", "parameters": {"reasoning": {"max_tokens": 9}}}
                ]
            },
            "tools[0].parameters.reasoning.max_tokens",
        ),
        (
            {
                "tools": [
                    {
                        "type": "openrouter:fusion",
                        "parameters": {"tools": [{"type": "openrouter:datetime"}]},
                    }
                ]
            },
            "tools[0].parameters.tools[0].type",
        ),
        ({"tools": [{"type": "openrouter:web_search"}]}, "tools[0].type"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_an_unknown_or_unsupported_field_is_a_400_naming_it(
    body: dict[str, Any], param: str, path: str
) -> None:
    factory = FakeFactory(scripts())
    conversation = {"messages": USER} if "chat" in path else {"input": QUESTION}
    with serving(factory) as url:
        reply = httpx.post(
            f"{url}{path}", json={"model": "openrouter/fusion", **conversation, **body}
        )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == 400  # OpenRouter's shape: the status
    assert error["metadata"]["param"] == param, error
    assert param.split(".")[-1].split("[")[0] in error["message"]
    assert calls(factory, "synth") == 0


def test_an_unmapped_slug_says_how_to_map_it() -> None:
    factory = FakeFactory(scripts())
    plugin = {"id": "fusion", "analysis_models": ["meta/llama-9"]}
    with (
        serving(factory) as url,
        sdk(url) as client,
        pytest.raises(errors.BadRequestResponseError) as caught,
    ):
        client.chat.send(model="openrouter/fusion", messages=USER, plugins=[plugin])
    message = caught.value.data.error.message
    assert "'meta/llama-9'" in message and "--openrouter-models" in message
    assert "OPENROUTER_API_KEY" in message


def test_with_an_openrouter_key_an_unmapped_slug_runs_on_openrouter() -> None:
    settings = OpenRouterSettings(passthrough=True)
    assert settings.spec("meta/llama-9", "model") == "openrouter:meta/llama-9"


def test_fusion_from_inside_a_fusion_run_is_refused() -> None:
    factory = FakeFactory(scripts())
    with serving(factory) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "openrouter/fusion", "messages": USER},
            headers={"x-openrouter-fusion-depth": "1"},
        )
    assert reply.status_code == 400
    assert reply.json()["error"]["metadata"]["reason"] == "recursion"
    assert calls(factory, "synth") == 0


def test_plain_fusiongraph_requests_are_untouched() -> None:
    factory = FakeFactory(scripts())
    with serving(factory) as url:
        reply = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": USER})
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == ANSWER
    assert "reasoning_details" not in body["choices"][0]["message"]
    assert body["fusion"]["panel"]


def test_a_bad_openrouter_models_file_stops_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "models.json"
    bad.write_text(json.dumps({"models": {OPUS: {"model": ""}}}))
    with pytest.raises(ValueError, match=OPUS):
        OpenRouterSettings.load(bad).check({"fusion": {}})
    bad.write_text(json.dumps({"slugs": {}}))
    with pytest.raises(ValueError, match="models"):
        OpenRouterSettings.load(bad)


# --- `fusiongraph serve` on the fake upstream, with a request copied from OpenRouter's docs ----

# The server-tool guide's parameters example (openrouter.ai/docs/guides/features/server-tools/
# fusion), in its quick start's request, with `tool_choice: "required"` as its section "Forcing
# fusion on every request" says; `{{MODEL}}` filled with a slug.
DOCS_REQUEST = """
{
  "model": "~anthropic/claude-opus-latest",
  "messages": [
    {
      "role": "user",
      "content": "Survey the strongest arguments for and against a carbon tax. Where do experts disagree?"
    }
  ],
  "tools": [
    {
      "type": "openrouter:fusion",
      "parameters": {
        "analysis_models": [
          "~google/gemini-flash-latest",
          "deepseek/deepseek-v3.2-20251201",
          "~moonshotai/kimi-latest"
        ],
        "model": "~anthropic/claude-opus-latest"
      }
    }
  ],
  "tool_choice": "required"
}
"""  # noqa: E501 (the docs' text as it is)


@pytest.fixture
def upstream_server() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def test_a_request_copied_from_openrouters_docs_runs_on_fusiongraph_serve(
    upstream_server: UpstreamServer, tmp_path: Path
) -> None:
    table = tmp_path / "openrouter-models.json"
    table.write_text(
        json.dumps(
            {
                "models": {
                    "~google/gemini-flash-latest": "openai:gemini-0.01s",
                    "deepseek/deepseek-v3.2-20251201": "openai:deepseek-0.01s",
                    "~moonshotai/kimi-latest": "openai:kimi-0.01s",
                    "~anthropic/claude-opus-latest": "openai:opus-0.01s",
                }
            }
        )
    )
    with ServeProcess(
        upstream_server.base_url,
        {},
        tmp_path,
        "--openrouter-models",
        str(table),
        "--workers",
        "1",
    ) as server:
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            content=DOCS_REQUEST,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        result = components.ChatResult.model_validate(reply.json())
        message = result.choices[0].message
        assert message.content
        (detail,) = message.reasoning_details or []
        tool = json.loads(detail.result)
        assert tool["status"] == "ok"
        components.FusionAnalysisResult.model_validate(tool["analysis"])
        assert [r["model"] for r in tool["responses"]] == [
            "~google/gemini-flash-latest",
            "deepseek/deepseek-v3.2-20251201",
            "~moonshotai/kimi-latest",
        ]
        with OpenRouter(api_key="x", server_url=f"{server.url}/v1") as client:
            events = list(
                client.beta.responses.send(
                    model="~anthropic/claude-opus-latest",
                    input="Survey the strongest arguments for and against a carbon tax.",
                    tools=[
                        {
                            "type": "openrouter:fusion",
                            "parameters": {"analysis_models": ["~moonshotai/kimi-latest"]},
                        }
                    ],
                    tool_choice="required",
                    stream=True,
                )
            )
        assert events[-1].type == "response.completed"
        assert any(isinstance(e, components.FusionCallCompletedEvent) for e in events)
    # Every call fusiongraph made carries OpenRouter's depth header (and its own): OpenRouter, or
    # another fusiongraph, behind a panelist will not fuse again.
    inner = upstream_server.app.records
    assert inner and all(r.headers.get("x-openrouter-fusion-depth") == "1" for r in inner)
    assert all(r.headers.get("x-fusion-depth") == "1" for r in inner)


def test_fusiongraphs_own_record_rides_beside_openrouters_result() -> None:
    factory = FakeFactory(scripts())
    body = {"model": "openrouter/fusion", "messages": USER, "tool_choice": "required"}
    with serving(factory) as url:
        reply = httpx.post(f"{url}/v1/chat/completions", json=body).json()
    components.ChatResult.model_validate(reply)
    assert set(reply["fusion"]["cost_usd"]) >= {"panel", "judge", "synthesis", "total"}
    assert reply["fusion"]["usage"]["total"]["total_tokens"] > 0


def test_a_failing_calling_model_is_a_502_in_openrouters_shape() -> None:
    factory = FakeFactory(scripts(synth=[RuntimeError("provider down")]))
    with serving(factory) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "openrouter/fusion", "messages": USER}
        )
    assert reply.status_code == 502
    error = reply.json()["error"]
    assert error["code"] == 502 and "provider down" in error["message"]


def test_the_callers_function_tools_sit_beside_the_fusion_tool() -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    asks_weather = AIMessage(
        content="",
        tool_calls=[
            {"name": "get_weather", "args": {"city": "Paris"}, "id": "c1", "type": "tool_call"}
        ],
    )
    factory = FakeFactory(scripts(m1=[asks_weather]))
    tools = [{"type": "openrouter:fusion"}, weather]
    with serving(factory) as url, sdk(url) as client:
        result = client.chat.send(model=OPUS, messages=USER, tools=tools)
    (call,) = result.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert result.choices[0].finish_reason == "tool_calls"
    offered, _ = factory.scripts["m1"].bound_tools[0]
    assert [t["function"]["name"] for t in offered] == [TOOL_FUNCTION, "get_weather"]
    assert calls(factory, "m2") == 0


def test_a_streamed_run_whose_panel_fails_ends_with_the_calling_models_answer() -> None:
    down = {f"m{i}": Script([RuntimeError("upstream down")]) for i in (2, 3)}
    factory = FakeFactory(scripts(m1=["Paris, without the panel."], **down))
    with serving(factory) as url, sdk(url) as client:
        events = list(client.beta.responses.send(**responses_request(stream=True)))
    kinds = [e.type for e in events]
    assert kinds.count("response.fusion_call.panel.failed") == 2
    assert all(
        isinstance(e, components.FusionCallPanelFailedEvent)
        for e in events
        if e.type.endswith("panel.failed")
    )
    assert "response.fusion_call.completed" in kinds and kinds[-1] == "response.completed"
    item = events[-1].response.output[0]
    assert item.status == "incomplete" and item.failure_reason == "all_panels_failed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Paris, without the panel."


def test_a_streamed_chat_without_deliberation_is_the_calling_models_answer() -> None:
    factory = FakeFactory(scripts(synth=["Paris, plainly."]))
    with serving(factory) as url, sdk(url) as client:
        chunks = list(client.chat.send(model="openrouter/fusion", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris, plainly."
    assert not any(c.choices[0].delta.reasoning_details for c in chunks if c.choices)
    assert calls(factory, "m1") == 0


def test_the_server_tools_inner_call_settings_reach_the_panel_and_the_judge() -> None:
    factory = FakeFactory(scripts(m1=[ANSWER], analyst=[ANALYSIS]))
    request = responses_request()
    request["tools"][0]["parameters"].update(
        temperature=0, max_completion_tokens=512, reasoning={"effort": "low"}
    )
    with serving(factory) as url, sdk(url) as client:
        client.beta.responses.send(**request)
    built = {spec.model: spec for spec in factory.built}
    assert built["m2"].temperature == 0 and built["m2"].max_tokens == 512
    assert built["analyst"].max_tokens == 512
    assert built["m1"].max_tokens is None  # the calling model's own answer is not an inner call


def test_an_empty_plugins_list_asks_nothing_of_fusion() -> None:
    factory = FakeFactory(scripts())
    with serving(factory) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions", json={"model": MODEL, "messages": USER, "plugins": []}
        )
    assert reply.status_code == 200
    assert "reasoning_details" not in reply.json()["choices"][0]["message"]


def test_on_a_durable_server_a_fused_response_can_be_continued() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from fusiongraph.graph.builder import build_graph
    from fusiongraph.serve.server import create_app

    factory = FakeFactory(scripts(m1=[ANSWER, "Lyon is second."], analyst=[ANALYSIS]))
    settings = OpenRouterSettings(
        models=SLUGS, default=MODEL, passthrough=False, model_factory=factory
    )
    app = create_app(
        build_graph(factory, checkpointer=InMemorySaver()),
        api_keys=[],
        aliases={MODEL: fake_context(["m1", "m2", "m3"])},
        openrouter=settings,
    )
    with running_server(app) as url, sdk(url) as client:
        first = client.beta.responses.send(**responses_request())
        assert first.store is True
        follow = client.beta.responses.send(
            **responses_request(input="And the second city?", previous_response_id=first.id)
        )
    assert follow.output[-1].content[0].text == "Lyon is second."
    # The follow-up's panel saw the first turn: its conversation continued.
    asked = factory.scripts["m2"].calls[-1]
    assert any(QUESTION in str(m.content) for m in asked)


def test_the_openai_sdk_streams_both_surfaces_with_extra_body() -> None:
    # The analyst judges the Responses run, then judges and writes the chat one.
    factory = FakeFactory(scripts(m1=[ANSWER], analyst=[ANALYSIS, ANALYSIS, ANSWER]))
    request = responses_request()
    plugin = {"id": "fusion", "analysis_models": [GPT], "model": ANALYST}
    with (
        serving(factory) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        events = list(
            client.responses.create(
                model=request["model"],
                input=request["input"],
                tool_choice="required",
                extra_body={"tools": request["tools"]},
                stream=True,
            )
        )
        chunks = list(
            client.chat.completions.create(
                model="openrouter/fusion",
                messages=USER,
                tool_choice="required",
                extra_body={"plugins": [plugin]},
                stream=True,
            )
        )
    assert "response.fusion_call.completed" in [e.type for e in events]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER
    details = [
        d
        for c in chunks
        if c.choices
        for d in (c.choices[0].delta.model_extra or {}).get("reasoning_details") or []
    ]
    (detail,) = details
    components.ReasoningDetailServerToolCall.model_validate(detail)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER


def test_fusion_on_its_own_panel_is_refused_in_the_callers_terms() -> None:
    factory = FakeFactory(scripts())
    plugin = {"id": "fusion", "analysis_models": [GPT, "openrouter/fusion"]}
    with serving(factory, passthrough=True) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "openrouter/fusion", "messages": USER, "plugins": [plugin]},
        )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["metadata"]["param"] == "plugins[0].analysis_models[1]"
    assert "cannot contain itself" in error["message"]


def test_when_the_answer_fails_after_the_analysis_the_item_ends_then_the_response_fails() -> None:
    factory = FakeFactory(scripts(m1=Script([RuntimeError("writer down")]), analyst=[ANALYSIS]))
    with serving(factory) as url, sdk(url) as client:
        events = list(client.beta.responses.send(**responses_request(stream=True)))
    kinds = [e.type for e in events]
    assert kinds[-3:] == [
        "response.fusion_call.completed",
        "response.output_item.done",
        "response.failed",
    ]
    failed = events[-1].response
    assert failed.status == "failed" and "writer down" in failed.error.message
    item = failed.output[0]
    assert isinstance(item, components.OutputFusionServerToolItem)
    assert item.analysis is not None and len(item.responses or []) == 2
