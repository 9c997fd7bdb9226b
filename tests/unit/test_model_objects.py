"""Chat model objects from Python as panelists, judge and synthesizer: registered by name on the
graph (`build_graph(models=...)`) or placed straight into a FusionChatModel's context; the run's
context stays plain data, and a request to the server cannot name an object."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import typer
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.model_objects import place_models
from fusiongraph.graph.providers import OBJECT_IGNORES
from fusiongraph.serve.cli import model_spec_option
from fusiongraph.serve.server import create_app
from tests.support.fakes import Script, ScriptedChatModel, judge_json, tool_call
from tests.support.servers import running_server

QUESTION = {"messages": [HumanMessage(content="What is the capital of France?")]}


def scripted(*replies: Any) -> ScriptedChatModel:
    return ScriptedChatModel(script=Script(list(replies)))


def objects() -> dict[str, ScriptedChatModel]:
    return {
        "a": scripted("Paris, says A."),
        "b": scripted("Paris, says B."),
        "judge": scripted(judge_json(consensus=["Paris"])),
        "synth": scripted("Paris."),
    }


def object_context(**extra: Any) -> dict[str, Any]:
    return {
        "panel": ["object:a", {"provider": "object", "model": "b"}],
        "judge": "object:judge",
        "synthesizer": "object:synth",
        "tool_mode": "off",
        **extra,
    }


async def test_objects_registered_on_the_graph_answer_judge_and_write() -> None:
    models = objects()
    result = await build_graph(models=models).ainvoke(QUESTION, context=object_context())
    final = result["messages"][-1]
    fusion = final.response_metadata["fusion"]
    assert final.text == "Paris."
    assert [p["content"] for p in fusion["panel"]] == ["Paris, says A.", "Paris, says B."]
    assert [p["model"] for p in fusion["panel"]] == ["object:a", "object:b"]
    assert fusion["analysis"]["consensus"] == ["Paris"]
    assert {name: len(m.script.calls) for name, m in models.items()} == {
        "a": 1,
        "b": 1,
        "judge": 1,
        "synth": 1,
    }
    # Their usage counts as any model's; the record says what no longer applies to them.
    assert fusion["usage"]["total"]["total_tokens"] == final.usage_metadata["total_tokens"] > 0
    assert fusion["settings"]["model_objects"] == {
        "models": ["object:a", "object:b", "object:judge", "object:synth"],
        "not_applied": list(OBJECT_IGNORES),
    }


async def test_objects_and_specs_share_a_panel(openai_env: str) -> None:
    """One object beside a real ChatOpenAI spec (at the fake upstream); the object's own HTTP
    client is the caller's: the run leaves it open."""
    client = httpx.AsyncClient()
    mine = ChatOpenAI(
        model="mine-0.01s", base_url=openai_env, api_key="k", http_async_client=client
    )
    graph = build_graph(models={"mine": mine, "judge": scripted(judge_json(consensus=["x"]))})
    context = {
        "panel": ["object:mine", "openai:theirs-0.01s"],
        "judge": "object:judge",
        "synthesizer": "openai:synth-0.01s",
        "tool_mode": "off",
    }
    result = await graph.ainvoke(QUESTION, context=context)
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert [p["model"] for p in fusion["panel"]] == ["object:mine", "openai:theirs-0.01s"]
    assert all(p["content"] for p in fusion["panel"]) and fusion["failed_models"] == []
    assert all(p["usage"]["total_tokens"] > 0 for p in fusion["panel"])
    assert not client.is_closed
    await client.aclose()


async def test_the_context_stays_plain_data_in_checkpoints() -> None:
    saver = InMemorySaver()
    graph = build_graph(models=objects(), checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke(QUESTION, config=config, context=object_context())
    plan = (await graph.aget_state(config)).values["plan"]
    assert json.loads(json.dumps(plan)) == plan  # JSON types only: no object inside
    assert plan["panel"][0]["provider"] == "object" and plan["panel"][0]["model"] == "a"


async def test_an_unknown_object_is_refused_before_any_call() -> None:
    models = objects()
    context = object_context(judge="object:nobody")
    with pytest.raises(FusionConfigError, match=r"no model object object:nobody.*object:a"):
        await build_graph(models=models).ainvoke(QUESTION, context=context)
    assert all(not m.script.calls for m in models.values())


async def test_a_graph_without_objects_says_how_to_register_one() -> None:
    with pytest.raises(FusionConfigError, match=r"build_graph\(models=") as info:
        await build_graph().ainvoke(QUESTION, context=object_context())
    assert info.value.field == "models"


def test_objects_are_checked_when_registered() -> None:
    with pytest.raises(TypeError, match="not a LangChain BaseChatModel"):
        build_graph(models={"x": "openai:gpt-5.5"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="fusion run cannot contain itself"):
        build_graph(models={"x": FusionChatModel(preset="quality")})


class NamedModel(ScriptedChatModel):
    model: str = ""


def test_objects_placed_in_a_context_get_one_name_each() -> None:
    a = NamedModel(script=Script(["1"]), model="claude-opus")
    twin = NamedModel(script=Script(["3"]), model="claude-opus")
    b = scripted("2")
    context, models = place_models(
        {"panel": [a, "openai:gpt-5.5", twin], "judge": a, "synthesizer": b}
    )
    assert context["panel"] == ["object:claude-opus", "openai:gpt-5.5", "object:claude-opus-2"]
    assert context["judge"] == "object:claude-opus"
    assert models["claude-opus"] is a and models["claude-opus-2"] is twin
    assert models[context["synthesizer"].removeprefix("object:")] is b


async def test_a_fusion_chat_model_of_objects_works_inside_create_agent() -> None:
    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"Sunny in {city}."

    models = objects()
    models["synth"] = scripted(
        AIMessage(content="", tool_calls=[tool_call("get_weather", "call-1", city="Paris")]),
        "It is sunny in Paris.",
    )
    fusion = FusionChatModel(
        context={
            "panel": [models["a"], models["b"]],
            "judge": models["judge"],
            "synthesizer": models["synth"],
            "tool_mode": "off",
        }
    )
    assert fusion.context["panel"][0].startswith("object:")  # data, not the object
    agent = create_agent(fusion, tools=[get_weather])
    result = await agent.ainvoke({"messages": [HumanMessage(content="Weather in Paris?")]})
    assert result["messages"][-1].text == "It is sunny in Paris."
    assert any(m.type == "tool" and m.content == "Sunny in Paris." for m in result["messages"])
    # Two model turns of the agent: two whole fusion runs over the same objects.
    assert [len(m.script.calls) for m in models.values()] == [2, 2, 2, 2]


def test_a_fusion_chat_model_with_objects_and_a_graph_is_refused() -> None:
    with pytest.raises(ValueError, match=r"build_graph\(models="):
        FusionChatModel(context={"panel": [scripted("x")]}, graph=build_graph())


def test_the_server_refuses_an_object_spec_per_request() -> None:
    """The operator's graph may hold objects (an alias names them); a request cannot."""
    models = objects()
    alias = object_context()
    app = create_app(build_graph(models=models), api_keys=[], aliases={"fusion-objects": alias})
    with (
        running_server(app) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        user = [{"role": "user", "content": "Capital of France?"}]
        reply = client.chat.completions.create(model="fusion-objects", messages=user)
        assert reply.choices[0].message.content == "Paris."
        for fusion, param in (
            ({"panel": ["object:a"]}, "fusion.panel[0]"),
            ({"judge": {"provider": "object", "model": "judge"}}, "fusion.judge"),
        ):
            with pytest.raises(openai.BadRequestError, match="a request cannot use one") as info:
                client.chat.completions.create(
                    model="fusion-objects", messages=user, extra_body={"fusion": fusion}
                )
            assert info.value.param == param
    assert len(models["a"].script.calls) == 1  # the refused requests called nothing


def test_the_cli_cannot_name_an_object() -> None:
    for value in ("object:claude", '{"provider": "object", "model": "claude"}'):
        with pytest.raises(typer.BadParameter, match="the CLI has none"):
            model_spec_option(value)
    assert model_spec_option("ollama:llama3.2") == "ollama:llama3.2"
