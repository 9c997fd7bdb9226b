"""`fusiongraph mcp`: the deliberate tool, driven by the `mcp` SDK's own client.

Over stdio the server is a real process (the console script, or `python -m`) whose panel is the
fake OpenAI-compatible upstream on 127.0.0.1; over streamable HTTP it runs under uvicorn in a
thread, on a graph of scripted fake models. Both: the tool listed with its input schema, called,
structured content returned, progress received, a call cancelled (the run stops: its model call
is cut and nothing is called after it), and bad arguments as tool errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp.types as types
import pytest
from langchain_core.messages import AIMessage
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from typer.testing import CliRunner

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import OPERATOR_ONLY, FusionContext
from fusiongraph.serve.cli import app as cli_app
from fusiongraph.serve.mcp_deliberate import ProgressCounter, arguments_model, input_schema
from fusiongraph.serve.mcp_server import create_mcp_server, streamable_http_app
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json
from tests.support.servers import running_server, wait_for, wait_for_async
from tests.support.upstream import SYNTHESIS_TEXT, UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Why does water boil at a lower temperature at altitude?"
ANALYSIS = judge_json(
    consensus=["Lower air pressure lowers the boiling point."],
    contradictions=[
        {
            "topic": "boiling point at 3,000 m",
            "stances": [
                {"panelist": "A", "stance": "about 90 °C"},
                {"panelist": "B", "stance": "about 89 °C"},
            ],
        }
    ],
)


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Progress:
    """Progress notifications a client received, and the token of the call they belong to."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []
        self.token: str | int | None = None
        self.first = asyncio.Event()

    async def callback(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))

    async def handler(self, message: Any) -> None:
        """The session's message handler: notifications carry the call's progress token."""
        root = getattr(message, "root", None)
        if isinstance(root, types.ProgressNotification):
            self.token = root.params.progressToken
            self.first.set()


async def _cancel(session: ClientSession, request_id: str | int) -> None:
    await session.send_notification(
        types.ClientNotification(
            types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="test")
            )
        )
    )


def _check_progress(seen: list[tuple[float, float | None, str | None]]) -> None:
    values = [p for p, _, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values), "must increase"
    assert values[-1] == seen[-1][1], "the last notification reaches the total"
    messages = " | ".join(m or "" for _, _, m in seen)
    assert "panel of 2 asked" in messages and "judge" in messages and "answer written" in messages


# --------------------------------------------------------------------------- over stdio


def _stdio_params(upstream: UpstreamServer, panel: list[str], *, console_script: bool) -> Any:
    context = fake_context(panel, base_url=upstream.base_url)
    args = ["mcp", "--transport", "stdio"]
    for key, value in context.items():  # each setting is the option named after it
        for item in value if isinstance(value, list) else [value]:
            args += [
                f"--{key.replace('_', '-')}",
                item if isinstance(item, str) else json.dumps(item),
            ]
    if console_script:
        command = str(Path(sys.executable).with_name("fusiongraph"))
    else:
        command, args = sys.executable, ["-m", "fusiongraph.serve.mcp_server", *args[1:]]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(command=command, args=args, env=env, cwd=str(ROOT))


@asynccontextmanager
async def stdio_session(params: Any, progress: Progress | None = None) -> AsyncIterator[Any]:
    handler = progress.handler if progress else None
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=handler) as session,
    ):
        await session.initialize()
        yield session


async def test_stdio_lists_and_calls_the_tool_with_progress(upstream: UpstreamServer) -> None:
    params = _stdio_params(upstream, ["p1-0.05s", "p2-0.1s"], console_script=True)
    progress = Progress()
    async with stdio_session(params, progress) as session:
        listed = (await session.list_tools()).tools
        assert [t.name for t in listed] == ["deliberate"]
        schema = listed[0].inputSchema
        assert {"question", "messages", "preset", "panel", "quorum", "deadline_s"} <= set(
            schema["properties"]
        )
        assert not OPERATOR_ONLY & set(schema["properties"])
        assert listed[0].outputSchema["properties"]["consensus"]["type"] == "array"

        result = await session.call_tool(
            "deliberate",
            {"question": f"{QUESTION} [bench:stdio-ok]"},
            progress_callback=progress.callback,
        )
    assert not result.isError, _text(result)
    data = result.structuredContent
    assert data["answer"] == SYNTHESIS_TEXT and _text(result).startswith(SYNTHESIS_TEXT)
    # The judge sees shuffled labels; mapped back, the stances name the two panelists.
    stances = data["contradictions"][0]["stances"]
    assert data["consensus"] and {s["panelist"] for s in stances} == {"p1", "p2"}
    assert data["models"]["panel"] == ["p1-0.05s", "p2-0.1s"] and data["failed"] == []
    assert data["usage"]["total_tokens"] > 0
    _check_progress(progress.seen)
    roles = sorted(r.role for r in upstream.app.records_since(0) if r.tag == "stdio-ok")
    assert roles == ["judge", "panel", "panel", "synthesis"]


async def test_stdio_cancel_stops_the_run(upstream: UpstreamServer) -> None:
    """A panelist that never answers holds the run; cancelling the call closes its request and
    nothing after it (judge, synthesis) is ever called."""
    params = _stdio_params(upstream, ["p1-0.05s", "p2-never"], console_script=False)
    progress = Progress()
    tag = "stdio-cancel"

    def held() -> list[Any]:
        return [r for r in upstream.app.records_since(0) if r.tag == tag and "never" in r.model]

    async with stdio_session(params, progress) as session:
        call = asyncio.create_task(
            session.call_tool(
                "deliberate",
                {"question": f"{QUESTION} [bench:{tag}]"},
                progress_callback=progress.callback,
            )
        )
        await asyncio.wait_for(progress.first.wait(), 60)
        assert await asyncio.to_thread(wait_for, lambda: held(), 30), "never reached upstream"
        await _cancel(session, progress.token)
        with pytest.raises(McpError, match="cancelled"):
            await asyncio.wait_for(call, 30)
        assert await asyncio.to_thread(wait_for, lambda: held()[0].done is not None, 10)
        assert held()[0].disconnected, "the held request was cut, not answered"
        await asyncio.sleep(0.5)
        # The session still serves: the next call runs.
        assert (await session.list_tools()).tools[0].name == "deliberate"
    roles = [r.role for r in upstream.app.records_since(0) if r.tag == tag]
    assert sorted(roles) == ["panel", "panel"], f"nothing may run after the cancel: {roles}"


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def scripts() -> dict[str, Script]:
    return {
        "p1": Script(["Lower pressure lowers the boiling point."]),
        "p2": Script(["At 3,000 m water boils near 90 °C."]),
        "slow": Script(["never seen"], delay_s=60),
        "judge": Script([ANALYSIS]),
        "synth": Script(["Water boils cooler up high because the air pressure is lower."]),
    }


@pytest.fixture
def http_url(scripts: dict[str, Script]) -> Iterator[str]:
    graph = build_graph(FakeFactory(scripts))
    server = create_mcp_server(graph, context=fake_context(["p1", "p2"]))
    with running_server(streamable_http_app(server), lifespan="on") as url:
        yield f"{url}/mcp"


@asynccontextmanager
async def http_session(url: str, progress: Progress | None = None) -> AsyncIterator[Any]:
    handler = progress.handler if progress else None
    async with (
        streamable_http_client(url) as (read, write, _),
        ClientSession(read, write, message_handler=handler) as session,
    ):
        await session.initialize()
        yield session


async def test_http_lists_and_calls_the_tool_with_progress(http_url: str) -> None:
    progress = Progress()
    async with http_session(http_url, progress) as session:
        listed = (await session.list_tools()).tools
        assert listed[0].name == "deliberate" and "question" in listed[0].inputSchema["properties"]
        result = await session.call_tool(
            "deliberate", {"question": QUESTION, "quorum": 2}, progress_callback=progress.callback
        )
    assert not result.isError, _text(result)
    data = result.structuredContent
    assert data["answer"].startswith("Water boils cooler")
    assert data["consensus"] == ["Lower air pressure lowers the boiling point."]
    assert [s["panelist"] for s in data["contradictions"][0]["stances"]] in (
        ["p1", "p2"],
        ["p2", "p1"],
    )
    assert data["models"] == {
        "panel": ["openai:p1", "openai:p2"],
        "judge": "openai:judge",
        "synthesizer": "openai:synth",
    }
    assert "Consensus:" in _text(result)
    _check_progress(progress.seen)


async def test_http_messages_and_overrides_reach_the_run(
    http_url: str, scripts: dict[str, Script]
) -> None:
    messages = [
        {"role": "system", "content": "Answer for a chemist."},
        {"role": "user", "content": "Boiling at altitude?"},
        {"role": "assistant", "content": "Lower."},
        {"role": "user", "content": "How much lower at 3,000 m?"},
    ]
    async with http_session(http_url) as session:
        result = await session.call_tool(
            "deliberate", {"messages": messages, "panel": ["openai:p2"], "tool_mode": "off"}
        )
    assert not result.isError, _text(result)
    assert result.structuredContent["models"]["panel"] == ["openai:p2"]
    assert scripts["p1"].calls == [], "the call's panel replaced the operator's"
    seen = " ".join(str(m.content) for m in scripts["p2"].calls[0])
    assert "Answer for a chemist." in seen and "How much lower at 3,000 m?" in seen


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "give either `question` or `messages`"),
        ({"question": "q", "messages": [{"role": "user", "content": "q"}]}, "not both"),
        ({"question": "q", "quorum": "many"}, "quorum: Input should be a valid integer"),
        ({"question": "q", "colour": "red"}, "colour: unknown argument"),
        ({"question": "q", "corpus_dir": "/etc"}, "corpus_dir is the operator's setting"),
        ({"question": "q", "mcp_servers": {}}, "mcp_servers is the operator's setting"),
        (
            {"question": "q", "panel": [{"model": "m", "base_url": "http://127.0.0.1:9"}]},
            "panel[0].base_url cannot be set per call",
        ),
        ({"question": "q", "preset": "gold"}, "preset: Input should be"),
        ({"question": "q", "quorum": 5}, "quorum: 5 exceeds the panel size 2"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "the last message must come from the user",
        ),
    ],
)
async def test_bad_arguments_are_tool_errors(
    http_url: str, scripts: dict[str, Script], arguments: dict[str, Any], expected: str
) -> None:
    async with http_session(http_url) as session:
        result = await session.call_tool("deliberate", arguments)
        assert result.isError and expected in _text(result), _text(result)
        # The server goes on serving.
        assert (await session.list_tools()).tools[0].name == "deliberate"
    assert all(not s.calls for s in scripts.values()), "no model is called for a bad call"


async def test_a_failed_run_is_a_tool_error(scripts: dict[str, Script]) -> None:
    scripts["p1"] = Script([RuntimeError("boom")])
    graph = build_graph(FakeFactory(scripts))
    server = create_mcp_server(graph, context=fake_context(["p1"]))
    with running_server(streamable_http_app(server), lifespan="on") as url:
        async with http_session(f"{url}/mcp") as session:
            result = await session.call_tool("deliberate", {"question": QUESTION})
    assert result.isError
    assert "deliberation failed (all_panelists_failed)" in _text(result)


async def test_http_cancel_stops_the_run(http_url: str, scripts: dict[str, Script]) -> None:
    progress = Progress()
    async with http_session(http_url, progress) as session:
        call = asyncio.create_task(
            session.call_tool(
                "deliberate",
                {"question": QUESTION, "panel": ["openai:p1", "openai:slow"]},
                progress_callback=progress.callback,
            )
        )
        assert await wait_for_async(
            lambda: any("slow" in (m or "") for _, _, m in progress.seen), timeout=20
        )
        await _cancel(session, progress.token)
        with pytest.raises(McpError, match="cancelled"):
            await asyncio.wait_for(call, 30)
        assert await wait_for_async(lambda: scripts["slow"].cancelled == 1, timeout=20), (
            "the slow call was not cut"
        )
        await asyncio.sleep(0.3)
    assert scripts["slow"].calls == [], "the slow model never answered"
    assert scripts["judge"].calls == [] and scripts["synth"].calls == [], "nothing after cancel"


def test_http_api_keys(monkeypatch: pytest.MonkeyPatch, scripts: dict[str, Script]) -> None:
    monkeypatch.setenv("FUSIONGRAPH_API_KEYS", "sk-right")
    server = create_mcp_server(build_graph(FakeFactory(scripts)), context=fake_context(["p1"]))
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"accept": "application/json, text/event-stream"}
    with running_server(streamable_http_app(server), lifespan="on") as url:
        refused = httpx.post(f"{url}/mcp", json=initialize, headers=headers)
        wrong = httpx.post(
            f"{url}/mcp", json=initialize, headers={**headers, "authorization": "Bearer sk-x"}
        )
        allowed = httpx.post(
            f"{url}/mcp", json=initialize, headers={**headers, "authorization": "Bearer sk-right"}
        )
    assert refused.status_code == wrong.status_code == 401
    assert "Bearer" in refused.json()["error"]
    assert allowed.status_code == 200


def test_http_on_loopback_refuses_foreign_hosts_and_origins(scripts: dict[str, Script]) -> None:
    """DNS rebinding: a web page cannot reach a loopback server under another name."""
    server = create_mcp_server(build_graph(FakeFactory(scripts)), context=fake_context(["p1"]))
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    with running_server(streamable_http_app(server), lifespan="on") as url:
        host = httpx.post(f"{url}/mcp", content=body, headers={**headers, "host": "evil.example"})
        origin = httpx.post(
            f"{url}/mcp", content=body, headers={**headers, "origin": "http://evil.example"}
        )
    assert host.status_code == 421 and origin.status_code == 403


# --------------------------------------------------------------------------- the schema


class HouseContext(FusionContext):
    house_style: str | None = None


def test_the_arguments_follow_the_graph_context_schema() -> None:
    props = input_schema(HouseContext)["properties"]
    assert "house_style" in props, "a new context setting is a new argument"
    per_call = set(FusionContext.model_fields) - OPERATOR_ONLY - {"synthesis_tools", "tool_choice"}
    assert per_call <= set(props)
    assert not OPERATOR_ONLY & set(props)
    assert "$ref" not in json.dumps(props)
    model = arguments_model(FusionContext)
    with pytest.raises(ValueError):
        model.model_validate({"question": "q", "judge": {"model": "m", "base_url": "http://x"}})


def test_progress_counts_up_to_the_total_with_unknown_events() -> None:
    counter = ProgressCounter()
    events = [
        {"event": "run_started", "panel": ["a", "b"]},
        {"event": "panelist_started", "panelist": "p1", "model": "a"},
        {"event": "panelist_started", "panelist": "p2", "model": "b"},
        {"event": "aggregation_chosen", "strategy": "vote"},
        {"event": "panelist_finished", "panelist": "p1", "model": "a", "latency_s": 1.0},
        {"event": "panelist_failed", "panelist": "p2", "model": "b", "reason": "timeout"},
        {"event": "judge_started", "model": "j", "answers": 1},
        {"event": "judge_finished", "model": "j", "latency_s": 0.5},
        {"event": "synthesis_started", "model": "s"},
        {"event": "synthesis_finished", "model": "s", "latency_s": 0.5},
    ]
    steps = [counter.step(e) for e in events]
    assert [p for p, _, _ in steps] == list(range(1, len(events) + 1))
    assert steps[-1][0] == steps[-1][1] == len(events)
    assert steps[5][2] == "p2 (b) failed: timeout"
    assert counter.finish() is None, "nothing left to report"

    early = ProgressCounter()  # a vote that agreed: no judge, no synthesis
    early.step({"event": "run_started", "panel": ["a"]})
    assert early.step({"event": "panelist_finished", "panelist": "p1"})[:2] == (2, 7)
    assert early.finish() == (7, 7, "answer written")


def test_the_cli_explains_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fusiongraph.serve.mcp_server", None)
    result = CliRunner().invoke(cli_app, ["mcp"])
    assert result.exit_code == 2
    assert "pip install 'fusiongraph[mcp]'" in result.output


def test_the_cli_refuses_bad_operator_settings() -> None:
    result = CliRunner().invoke(cli_app, ["mcp", "--quorum", "0"])
    assert result.exit_code == 2 and "quorum" in result.output
    bad = CliRunner().invoke(cli_app, ["mcp", "--mcp-servers", "{not json"])
    assert bad.exit_code == 2 and "not JSON" in bad.output


def test_structured_result_survives_a_degraded_run() -> None:
    from fusiongraph.serve.mcp_deliberate import structured_result

    fusion = {
        "panel": [{"model": "m1", "sources": [{"url": "https://a.example"}]}],
        "failed_models": [{"panelist": "p2", "model": "m2", "reason": "timeout", "message": "cut"}],
        "analysis": None,
        "degraded": True,
        "judge": {"model": "j"},
        "synthesizer": {"model": "s"},
        "usage": {"total": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}},
        "cost_usd": {"total": None},
    }
    data = structured_result(AIMessage("answer", response_metadata={"fusion": fusion}))
    assert data["degraded"] and data["consensus"] == [] and data["cost_usd"] is None
    assert data["models"]["panel"] == ["m1", "m2"] and data["failed"][0]["reason"] == "timeout"
    assert data["sources"] == ["https://a.example"]
