"""One name per setting: every field of the context schema (FusionContext) reaches a run under
that same name on every surface - the CLI (`--deadline-s` on ask, serve, playground, mcp and
eval), FusionChatModel's keywords, the HTTP request's `fusion` object, the MCP tool's arguments
and inspect's `-M` model args - and the old names fail saying so.

The test walks the schema: a new field without a sample below fails here first, and once it has
one, every surface is checked for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.config import (
    CONTEXT_FIELDS,
    OPENAI_PARAMS,
    OPERATOR_ONLY,
    FusionConfig,
    FusionContext,
)
from fusiongraph.graph.limits import MAX_PANEL, MAX_TOOL_CALLS
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.cli import app
from fusiongraph.serve.openai_request import RequestLimits
from tests.support.fakes import FakeFactory, fake_context
from tests.support.server_app import USER, WEATHER_TOOL, scripts, served

# A valid value of every setting, as a caller writes it (JSON-shaped).
SAMPLES: dict[str, Any] = {
    "preset": "budget",
    "panel": ["openai:m1", {"provider": "openai", "model": "m2"}],
    "judge": "openai:judge",
    "synthesizer": "openai:synth",
    "tool_mode": "prefetch",
    "max_tool_calls": 3,
    "temperature": 0.5,
    "max_tokens": 300,
    "panel_max_tokens": 200,
    "panel_timeout_s": 30.0,
    "quorum": 2,
    "straggler_grace_s": 1.5,
    "deadline_s": 60.0,
    "judge_input_chars": 500,
    "judge_tools": True,
    "judge_max_tool_calls": 2,
    "include_raw_answers": False,
    "reasoning_effort": "low",
    "aggregation": "vote",
    "early_exit": True,
    "vote_answer": "number",
    "cascade": 2,
    "classifier": "openai:classifier",
    "calibration": str(Path(__file__).parent / "data" / "calibration.json"),
    "search_provider": "duckduckgo",
    "corpus_dir": str(Path(__file__).parent),
    "searxng_url": "http://127.0.0.1:8888",
    "fetch_allow_private": ["127.0.0.1", "10.0.0.0/8"],
    "mcp_servers": {"files": {"command": "mcp-files", "args": ["--root", "."]}},
    "max_cost_usd": 0.5,
    "prices": {"m1": {"input": 1.0, "output": 2.0}},
    "synthesis_tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "verify_tests": "assert median([3, 1, 2]) == 2\n",
}
OLD_OPTIONS = {"--deadline", "--corpus", "--search", "--set"}  # now --deadline-s, ... and one each
COMMANDS = ("ask", "serve", "playground", "mcp", "eval")


def as_data(context: FusionContext, field: str) -> Any:
    """A setting as the run holds it, in the JSON shape the samples are written in."""
    return context.model_dump(mode="json", exclude_none=True)[field]


def test_every_setting_has_a_sample() -> None:
    assert set(SAMPLES) == CONTEXT_FIELDS, "add a sample for the new context field"
    FusionContext(**SAMPLES)


# --------------------------------------------------------------------------- the CLI


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def cli_args(settings: dict[str, Any]) -> list[str]:
    """Settings as a user types them: one option per setting, repeated for a list."""
    args: list[str] = []
    for field, value in settings.items():
        if isinstance(value, bool):
            args.append(option(field) if value else f"--no-{option(field)[2:]}")
            continue
        for item in value if isinstance(value, list) else [value]:
            args += [option(field), item if isinstance(item, str) else json.dumps(item)]
    return args


def options_of(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_runs_the_graph_has_every_setting_by_its_name(command: str) -> None:
    options = options_of(command)
    assert {option(field) for field in CONTEXT_FIELDS} <= options
    assert not options & OLD_OPTIONS
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output
    assert all(option(field) in shown for field in CONTEXT_FIELDS)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What each command hands on, caught where it would start the real thing."""
    seen: dict[str, Any] = {}

    async def ask(_question: str, ctx: dict[str, Any], *_: Any) -> int:
        seen["ask"] = ctx
        return 0

    def run_server(settings: Any, **_: Any) -> None:
        seen["serve"] = {"preset": settings.default_preset, **settings.context}

    def create_app(**kwargs: Any) -> Any:
        seen["playground"] = {"preset": kwargs["default_preset"], **kwargs["context"]}
        raise OSError("caught")

    def create_mcp_server(*, context: dict[str, Any], **_: Any) -> Any:
        seen["mcp"] = context
        raise typer.Exit(0)

    def run_eval(_tasks: str, *, context: dict[str, Any], **_: Any) -> Any:
        seen["eval"] = context
        raise ValueError("caught")

    monkeypatch.setattr("fusiongraph.serve.cli._ask", ask)
    monkeypatch.setattr("fusiongraph.serve.workers.run_server", run_server)
    monkeypatch.setattr("fusiongraph.serve.server.create_app", create_app)
    monkeypatch.setattr("fusiongraph.serve.mcp_server.create_mcp_server", create_mcp_server)
    monkeypatch.setattr("fusiongraph.evals.run_eval", run_eval)
    return seen


@pytest.mark.parametrize("command", COMMANDS)
def test_every_setting_typed_on_the_command_line_reaches_the_context(
    command: str, captured: dict[str, Any]
) -> None:
    extra = {"ask": ["a question"], "eval": ["tasks.jsonl"]}.get(command, [])
    CliRunner().invoke(app, [command, *extra, *cli_args(SAMPLES)])
    assert json.loads(json.dumps(captured[command])) == SAMPLES


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--deadline", "5"], "--deadline-s"),  # "No such option ... (Possible options: ...)"
        (["--corpus", "."], "--corpus-dir"),
        (["--search", "none"], "--search-provider"),
        (["--corpus-dir", "/no/such/folder"], "--corpus-dir"),
        (["--set", "quorum=2"], "No such option: --set"),
        (["--max-tool-calls", str(MAX_TOOL_CALLS + 1)], "max_tool_calls"),
        (["--panel", "openai:m1"] * (MAX_PANEL + 1), "panel"),
        (["--deadline-s", "0"], "deadline_s"),
        (["--aggregation", "best"], "--aggregation"),
    ],
)
@pytest.mark.parametrize("command", ["ask", "serve", "mcp"])
def test_an_old_name_or_a_bad_value_is_a_usage_error(
    command: str, args: list[str], named: str, captured: dict[str, Any]
) -> None:
    extra = ["a question"] if command == "ask" else []
    result = CliRunner().invoke(app, [command, *extra, *args], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and named in result.output
    assert command not in captured  # refused before anything started


# --------------------------------------------------------------------------- FusionChatModel


@pytest.mark.parametrize("field", sorted(CONTEXT_FIELDS))
def test_the_chat_model_takes_every_setting_as_a_keyword(field: str) -> None:
    model = FusionChatModel(**{field: SAMPLES[field]})
    expected = as_data(FusionContext(**{field: SAMPLES[field]}), field)
    assert as_data(model._run_context({}), field) == expected


def test_the_chat_model_names_deadline_s_where_others_say_timeout() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        FusionChatModel(timeout=5)
    model = FusionChatModel(deadline_s=30)
    assert model._run_context({"deadline_s": 5}).deadline_s == 5  # per call wins
    with pytest.raises(ValueError, match="deadline_s"):
        model._run_context({"timeout": 5})
    with pytest.raises(ValueError, match="once"):
        FusionChatModel(deadline_s=30, context={"deadline_s": 20})


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def server() -> Any:
    with served(FakeFactory(scripts())) as (url, client):
        yield url, client


def test_the_fusion_object_takes_every_per_request_setting_by_its_name(server: Any) -> None:
    url, _ = server
    schema = httpx.get(f"{url}/openapi.json").json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    fusion = body["application/json"]["schema"]["properties"]["fusion"]["anyOf"][0]
    per_request = CONTEXT_FIELDS - OPERATOR_ONLY - OPENAI_PARAMS  # the rest: OpenAI's parameters
    assert set(fusion["properties"]) - {"progress"} == per_request
    assert fusion["properties"]["max_tool_calls"]["anyOf"][0]["maximum"] == MAX_TOOL_CALLS


@pytest.mark.parametrize("field", sorted(OPERATOR_ONLY | {"timeout", "deadline"}))
def test_the_fusion_object_refuses_the_operators_settings_and_old_names(
    server: Any, field: str
) -> None:
    url, _ = server
    body = {"model": "fusion-test", "messages": USER, "fusion": {field: SAMPLES.get(field, 5)}}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == f"fusion.{field}"


def test_serve_applies_its_settings_under_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    base = {k: v for k, v in fake_context(["m1", "m2"]).items() if k != "preset"}
    settings = {**base, "judge_input_chars": 300, "deadline_s": 60.0}
    with served(FakeFactory(scripts()), default_preset="quality", context=settings) as (_, client):
        reply = client.chat.completions.create(model="fusion", messages=USER)
        used = reply.model_extra["fusion"]["settings"]
        assert used["judge_input_chars"] == 300 and used["deadline_s"] == 60.0
        assert used["preset"] == "quality"
        assert {m.id for m in client.models.list()} >= {"fusion", "fusion-quality"}


def test_serve_with_a_panel_and_no_preset_runs_it_as_ask_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("FUSIONGRAPH_PRESET", raising=False)
    settings = {"panel": ["openai:m1", "openai:m2"], "tool_mode": "off"}
    with served(FakeFactory(scripts()), context=settings) as (url, client):
        reply = client.chat.completions.create(model="fusion", messages=USER)
        fusion = reply.model_extra["fusion"]
        assert fusion["settings"]["preset"] is None  # no preset: the first panelist judges
        assert fusion["judge"]["model"] == "openai:m1"
        card = httpx.get(f"{url}/v1/models/fusion").json()
        assert card["fusion"] == {"preset": "", "description": "the operator's panel"}


# --------------------------------------------------------------------------- MCP and inspect


def test_the_mcp_tool_takes_every_per_call_setting_by_its_name() -> None:
    from fusiongraph.serve.mcp_deliberate import NOT_PER_CALL, input_schema, parse_arguments

    per_call = CONTEXT_FIELDS - NOT_PER_CALL
    properties = input_schema()["properties"]
    assert set(properties) - {"question", "context", "messages"} == per_call
    assert properties["max_tool_calls"]["anyOf"][0]["maximum"] == MAX_TOOL_CALLS
    arguments = {field: SAMPLES[field] for field in per_call}
    _, context = parse_arguments({"question": "q", **arguments})
    assert json.loads(json.dumps(context)) == arguments


def test_inspect_model_args_are_the_settings_names(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("inspect_ai")
    from inspect_ai.model import GenerateConfig

    from fusiongraph.evals.inspect_provider import FusionModelAPI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    # -M preset is refused (the model name, fusion/<preset>, names it); a cascade of 2 needs a
    # larger panel than the sample's.
    args = {k: v for k, v in SAMPLES.items() if k not in ("preset", "cascade")}
    settings = FusionModelAPI("custom", **args).run_settings([], "auto", GenerateConfig(timeout=7))
    assert settings == args
    # inspect's own --timeout is the run's deadline when -M deadline_s is not given.
    lone = FusionModelAPI("custom", panel="openai:m1")
    assert lone.run_settings([], "auto", GenerateConfig(timeout=7))["deadline_s"] == 7.0


# --------------------------------------------------------------------------- the bounds


def test_the_bounds_have_one_source() -> None:
    assert FusionConfig.model_fields["panel"].metadata[-1].max_length == MAX_PANEL
    assert RequestLimits().max_panel == MAX_PANEL
    assert RequestLimits().max_tool_calls == MAX_TOOL_CALLS
    with pytest.raises(ValueError, match=str(MAX_TOOL_CALLS)):
        RequestLimits(max_tool_calls=MAX_TOOL_CALLS + 1)
    with pytest.raises(ValueError):
        ModelSpec(provider="openai", model="m", max_tool_calls=MAX_TOOL_CALLS + 1)
    FusionContext(max_tool_calls=MAX_TOOL_CALLS, judge_max_tool_calls=MAX_TOOL_CALLS)
    with pytest.raises(ValueError, match="judge_max_tool_calls"):
        FusionContext(judge_max_tool_calls=MAX_TOOL_CALLS + 1)
