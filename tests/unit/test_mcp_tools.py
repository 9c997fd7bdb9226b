"""MCP tools for panelists: an operator's MCP server (a tiny FastMCP server in tests/support,
started over stdio) whose tools a scripted panelist calls beside web_search and web_fetch,
under the same tool budget, its results fenced as untrusted data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import OPERATOR_ONLY, FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.nodes.panel import panel_cache_key, panel_identity
from fusiongraph.serve.openai_errors import OpenAIError
from fusiongraph.serve.openai_protocol import fusion_options_model
from fusiongraph.serve.openai_request import fusion_overrides
from fusiongraph.tools.mcp import McpServerSettings, result_text
from fusiongraph.tools.untrusted import CLOSE_MARKER, OPEN_MARKER
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json, tool_call
from tests.support.mcp_tools_server import FACT
from tests.support.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [HumanMessage("At what temperature does the Zorblax reactor run?")]


def docs_server(calls: Path, **extra: Any) -> dict[str, Any]:
    """The test MCP server over stdio; every call it serves is a line in `calls`."""
    return {
        "command": sys.executable,
        "args": ["-m", "tests.support.mcp_tools_server"],
        "cwd": str(ROOT),
        "env": {"MCP_TEST_CALLS": str(calls), "PYTHONPATH": str(ROOT)},
        **extra,
    }


def served(calls: Path) -> list[dict[str, Any]]:
    """The calls the test server served: tool, args and the server process's pid."""
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def served_calls(calls: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in call.items() if k != "pid"} for call in served(calls)]


def scripted(panelist: Script) -> FakeFactory:
    return FakeFactory(
        {
            "p1": panelist,
            "judge": Script([judge_json(consensus=["451 K"])]),
            "synth": Script(["It runs at 451 kelvin."]),
        }
    )


def agentic(servers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return fake_context(
        ["p1"], tool_mode="agentic", search_provider="none", mcp_servers=servers, **extra
    )


def tool_results(script: Script) -> list[ToolMessage]:
    """The tool results in the panelist's last request (its whole history by then)."""
    return [m for m in script.calls[-1] if isinstance(m, ToolMessage)]


async def test_a_panelist_calls_an_mcp_tool_within_the_budget(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    panelist = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("docs_lookup", "c1", term="zorblax"),
                    tool_call("docs_lookup", "c2", term="again"),  # over the budget of 1
                ],
            ),
            "The reactor runs at 451 kelvin.",
        ]
    )
    graph = build_graph(scripted(panelist))
    out = await graph.ainvoke(
        {"messages": QUESTION}, context=agentic({"docs": docs_server(calls)}, max_tool_calls=1)
    )

    bound = [t.name for t in panelist.bound_tools[0][0]]
    assert bound == ["web_search", "web_fetch", "docs_lookup", "docs_slow", "docs_broken"]
    assert served_calls(calls) == [{"tool": "lookup", "args": {"term": "zorblax"}}]
    first, second = tool_results(panelist)
    assert FACT in first.content
    # Fenced: one opening and one closing marker; the server's forged closer is neutralised.
    assert first.content.count(OPEN_MARKER) == 1 and first.content.count(CLOSE_MARKER) == 1
    assert first.content.rstrip().endswith(CLOSE_MARKER)
    assert "MCP server docs, tool lookup" in first.content
    assert "budget is spent" in second.content
    system = str(panelist.calls[0][0].content)
    assert "docs_lookup, docs_slow, docs_broken" in system and "same tool budget" in system
    entry = out["messages"][-1].response_metadata["fusion"]["panel"][0]
    assert entry["tool_calls"] == 1 and entry["content"] == "The reactor runs at 451 kelvin."


async def test_a_failing_mcp_tool_is_fenced_text_the_panelist_routes_around(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls.jsonl"
    panelist = Script(
        [
            AIMessage("", tool_calls=[tool_call("docs_broken", "c1", reason="today")]),
            "I could not check; from memory: about 450 K.",
        ]
    )
    graph = build_graph(scripted(panelist))
    out = await graph.ainvoke({"messages": QUESTION}, context=agentic({"docs": docs_server(calls)}))

    (result,) = tool_results(panelist)
    assert result.content.startswith("docs_broken failed:")
    assert "the database is down today" in result.content and OPEN_MARKER in result.content
    assert served_calls(calls) == [{"tool": "broken", "args": {"reason": "today"}}]
    assert out["messages"][-1].response_metadata["fusion"]["failed_models"] == []


async def test_a_slow_mcp_tool_times_out_as_text(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    panelist = Script(
        [AIMessage("", tool_calls=[tool_call("docs_slow", "c1", seconds=30)]), "No answer."]
    )
    graph = build_graph(scripted(panelist))
    server = docs_server(calls, timeout_s=1)
    await graph.ainvoke({"messages": QUESTION}, context=agentic({"docs": server}))
    (result,) = tool_results(panelist)
    assert result.content == "docs_slow failed: no answer within 1 s"


async def test_a_panelist_cut_by_its_clock_closes_the_server(tmp_path: Path) -> None:
    """The panel timeout cuts a panelist waiting on an MCP tool: the run goes on without it, and
    the server process it started is gone (no leaked process)."""
    calls = tmp_path / "calls.jsonl"
    factory = scripted(
        Script([AIMessage("", tool_calls=[tool_call("docs_slow", "c1", seconds=60)]), "late"])
    )
    factory.scripts["p2"] = Script(["451 K, from memory."])
    context = agentic({"docs": docs_server(calls)}, panel_timeout_s=4)
    context["panel"] = ["openai:p1", "openai:p2"]
    out = await build_graph(factory).ainvoke({"messages": QUESTION}, context=context)

    fusion = out["messages"][-1].response_metadata["fusion"]
    assert [f["reason"] for f in fusion["failed_models"]] == ["timeout"]
    assert [p["panelist"] for p in fusion["panel"]] == ["p2"]
    pids = {call["pid"] for call in served(calls)}
    assert len(pids) == 1, "p1 reached the server"
    assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), 10)


async def test_an_unreachable_server_leaves_the_web_tools(tmp_path: Path) -> None:
    gone = {"command": sys.executable, "args": ["-c", "pass"], "connect_timeout_s": 10}
    panelist = Script(["From memory: 451 K."])
    graph = build_graph(scripted(panelist))
    out = await graph.ainvoke({"messages": QUESTION}, context=agentic({"gone": gone}))

    assert [t.name for t in panelist.bound_tools[0][0]] == ["web_search", "web_fetch"]
    assert out["messages"][-1].response_metadata["fusion"]["panel"][0]["content"]


def test_the_panel_cache_key_holds_the_servers_identity(tmp_path: Path) -> None:
    def key(**extra: Any) -> str:
        config = resolve_config(fake_context(["p1"], tool_mode="agentic", **extra))
        task = {"panelist": "p1", "messages": QUESTION, **panel_identity(config, 0)}
        return panel_cache_key(task)  # type: ignore[arg-type]

    one = {"docs": docs_server(tmp_path / "a")}
    other = {"docs": docs_server(tmp_path / "b")}
    assert key(mcp_servers=one) == key(mcp_servers=one)
    assert len({key(), key(mcp_servers=one), key(mcp_servers=other)}) == 3
    identity = panel_identity(resolve_config(fake_context(["p1"], mcp_servers=one)), 0)
    assert "mcp_servers" not in identity["tools"], "tool_mode off: the servers play no part"
    secret = {"docs": {"url": "http://127.0.0.1:9/mcp", "headers": {"x-key": "s3cret"}}}
    assert "s3cret" not in key(mcp_servers=secret), "a digest, not the settings"


def test_mcp_servers_is_the_operators_setting() -> None:
    """The OpenAI-compatible server refuses it in a request's `fusion` object (the MCP server's
    deliberate tool too: tests/unit/test_mcp_server.py)."""
    assert "mcp_servers" in OPERATOR_ONLY
    options = fusion_options_model(FusionContext)
    assert "mcp_servers" not in options.model_fields
    with pytest.raises(OpenAIError) as refused:
        fusion_overrides({"mcp_servers": {}}, options, frozenset(FusionContext.model_fields))
    assert refused.value.status == 400 and "cannot be set per request" in str(refused.value)


def test_servers_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    servers = {"docs": {"url": "http://127.0.0.1:9/mcp"}}
    monkeypatch.setenv("FUSIONGRAPH_MCP_SERVERS", json.dumps(servers))
    config = resolve_config(fake_context(["p1"]))
    assert config.mcp_servers["docs"].transport == "streamable_http"
    assert config.settings_used()["mcp_servers"] == ["docs"]

    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"files": {"command": "mcp-files", "args": ["--ro"]}}))
    monkeypatch.setenv("FUSIONGRAPH_MCP_SERVERS", str(path))
    assert resolve_config(fake_context(["p1"])).mcp_servers["files"].args == ["--ro"]
    # The caller's own setting replaces a server of the same name whole (never a mix of both).
    mixed = resolve_config(fake_context(["p1"], mcp_servers={"files": {"url": "http://h/mcp"}}))
    assert mixed.mcp_servers["files"].command is None

    monkeypatch.setenv("FUSIONGRAPH_MCP_SERVERS", "{oops")
    with pytest.raises(FusionConfigError, match="mcp_servers: FUSIONGRAPH_MCP_SERVERS: not JSON"):
        resolve_config(fake_context(["p1"]))


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ({"bad name": {"command": "x"}}, "server name 'bad name'"),
        ({"docs": {"args": ["x"]}}, "needs `command` (stdio) or `url`"),
        ({"docs": {"transport": "stdio", "url": "http://h"}}, "needs `command`"),
        ({"docs": {"command": "x", "shell": True}}, "unknown setting"),
    ],
)
def test_bad_server_settings_name_the_field(servers: dict[str, Any], expected: str) -> None:
    with pytest.raises(FusionConfigError, match="mcp_servers") as refused:
        resolve_config(fake_context(["p1"], mcp_servers=servers))
    assert expected in str(refused.value)


def test_without_the_extra_the_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_mcp_adapters", None)
    with pytest.raises(FusionConfigError, match=r"pip install 'fusiongraph\[mcp\]'"):
        resolve_config(fake_context(["p1"], mcp_servers={"docs": {"command": "x"}}))


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "t0k")
    http = McpServerSettings(url="http://h/mcp", headers={"authorization": "Bearer ${DOCS_TOKEN}"})
    assert http.connection()["headers"] == {"authorization": "Bearer t0k"}
    assert "t0k" not in json.dumps(http.model_dump())
    stdio = McpServerSettings(command="srv", env={"TOKEN": "${DOCS_TOKEN}", "MISSING": "${NOPE}"})
    assert stdio.connection()["env"] == {"TOKEN": "t0k", "MISSING": "${NOPE}"}


def test_result_text() -> None:
    blocks = [{"type": "text", "text": "a"}, {"type": "image", "base64": "..."}]
    assert result_text(blocks) == "a\n[image content omitted]"
    assert result_text([], {"structured_content": {"rows": 2}}) == '{"rows": 2}'
    assert result_text("x" * 30_000).endswith("[...truncated]")
