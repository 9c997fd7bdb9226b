"""`fusiongraph mcp` over streamable HTTP against clients that misbehave, on a real uvicorn
server on 127.0.0.1 with the `mcp` SDK's own client where a client is needed.

Each of these was wrong before: a JSON-RPC id of 5000 digits or params nested past Python's
recursion limit were a 500 (the HTTP APIs answer 400); a client that dropped its connection
mid-call left the run going on to the judge and the synthesis; an abandoned session was kept for
as long as the process lived, with no way to say how long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.mcp_server import create_mcp_server, streamable_http_app
from fusiongraph.serve.openai_request import MAX_JSON_DEPTH
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json
from tests.support.servers import free_port, running_server, wait_for, wait_for_async

QUESTION = "Why does water boil at a lower temperature at altitude?"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "hostile", "version": "1"},
}


def _initialize(request_id: str = "1", params: str | None = None) -> bytes:
    """An initialize request with `request_id` and `params` as raw JSON text."""
    params = params if params is not None else json.dumps(PARAMS)
    return (
        f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "initialize", "params": {params}}}'
    ).encode()


def _nested_params(depth: int) -> str:
    """PARAMS with an extra member nested `depth` lists deep."""
    return json.dumps(PARAMS)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


@pytest.fixture
def scripts() -> dict[str, Script]:
    return {
        "p1": Script(["Lower pressure lowers the boiling point."]),
        "slow": Script(["never seen"], delay_s=60),
        "p2": Script(["Water boils near 90 °C at 3,000 m."], delay_s=2.0),
        "judge": Script([judge_json(consensus=["Lower pressure, lower boiling point."])]),
        "synth": Script(["Water boils cooler up high because the air pressure is lower."]),
    }


def _app(scripts: dict[str, Script], **options: Any) -> Any:
    graph = build_graph(FakeFactory(scripts))
    return streamable_http_app(create_mcp_server(graph, context=fake_context(["p1"])), **options)


@pytest.fixture
def url(scripts: dict[str, Script]) -> Iterator[str]:
    with running_server(_app(scripts), lifespan="on") as base:
        yield f"{base}/mcp"


# ------------------------------------------------------------------------ hostile bodies


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_initialize(request_id="1" * 5000), "number too long to read"),
        (_initialize(params=_nested_params(5000)), "max_json_depth"),
        (_initialize(params=_nested_params(MAX_JSON_DEPTH + 1)), "max_json_depth"),
        (_initialize(params='{"protocolVersion": NaN}'), "not a JSON number"),
    ],
    ids=["id-of-5000-digits", "params-past-json-loads", "params-past-the-limit", "nan"],
)
def test_a_hostile_body_is_a_4xx_json_rpc_error(
    url: str, scripts: dict[str, Script], body: bytes, expected: str
) -> None:
    response = httpx.post(url, content=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert expected in error["message"] and error["code"] in (-32700, -32600)
    # The server goes on serving.
    assert httpx.post(url, content=_initialize(), headers=HEADERS).status_code == 200
    assert all(not s.calls for s in scripts.values())


def test_a_body_with_a_byte_order_mark_is_read_without_it(url: str) -> None:
    """The same decision as the HTTP APIs' (serve/openai_request.load_json): a leading UTF-8
    byte order mark is ignored."""
    response = httpx.post(url, content=b"\xef\xbb\xbf" + _initialize(), headers=HEADERS)
    assert response.status_code == 200, response.text


def test_an_oversized_header_is_431(url: str) -> None:
    response = httpx.post(
        url, content=_initialize(), headers={**HEADERS, "x-padding": "a" * 100_000}
    )
    assert response.status_code == 431
    assert "max_header_bytes" in response.json()["error"]["message"]


def test_a_body_cut_short_logs_one_line(url: str, caplog: pytest.LogCaptureFixture) -> None:
    parts = urlsplit(url)
    caplog.set_level(logging.INFO)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            "Content-Length: 5000\r\n\r\n".encode()
            + b'{"jsonrp'
        )
    assert wait_for(lambda: "before its request body arrived" in caplog.text, timeout=10), (
        caplog.text
    )
    assert httpx.post(url, content=_initialize(), headers=HEADERS).status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


# ------------------------------------------------------------------------ the SDK's client


class Progress:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def callback(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")


@asynccontextmanager
async def session_of(url: str, *, terminate_on_close: bool = True) -> AsyncIterator[Any]:
    """An initialized SDK session and its id; without `terminate_on_close` leaving it closes the
    connections and sends no DELETE: a client that went away."""
    async with (
        streamable_http_client(url, terminate_on_close=terminate_on_close) as (read, write, sid),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session, sid()


async def test_a_client_that_disconnects_mid_call_cancels_the_run(
    url: str, scripts: dict[str, Script]
) -> None:
    progress = Progress()
    async with session_of(url, terminate_on_close=False) as (session, _):
        call = asyncio.create_task(
            session.call_tool(
                "deliberate",
                {"question": QUESTION, "panel": ["openai:p1", "openai:slow"]},
                progress_callback=progress.callback,
            )
        )
        assert await wait_for_async(
            lambda: any("slow" in m for m in progress.messages), timeout=60
        ), progress.messages
        call.cancel()  # the SDK sends no notifications/cancelled for this: only the close tells
    # The connections are closed; the session itself was not ended (no DELETE).
    assert await wait_for_async(lambda: scripts["slow"].cancelled == 1, timeout=60), (
        "the slow call was not cut"
    )
    await asyncio.sleep(0.3)
    assert scripts["slow"].calls == [], "the slow model never answered"
    assert scripts["judge"].calls == [] and scripts["synth"].calls == [], "nothing after it"


async def test_an_idle_session_expires_and_a_long_call_does_not(
    scripts: dict[str, Script],
) -> None:
    """With --session-idle-s 1: a call that takes longer than that completes (a call in flight
    is not idleness), and a session left without a DELETE is gone afterwards (404)."""
    with running_server(_app(scripts, session_idle_s=1), lifespan="on") as base:
        url = f"{base}/mcp"
        async with session_of(url, terminate_on_close=False) as (session, session_id):
            result = await session.call_tool(
                "deliberate", {"question": QUESTION, "panel": ["openai:p2"]}
            )
            assert not result.isError, result.content
        seen = await _expires(url, session_id)
        assert seen[-1] == 404, seen


async def _expires(url: str, session_id: str) -> list[int]:
    """The statuses of a ping on the session, each after a wait longer than the idle time (a
    look is a request, which restarts the idle clock), until one is a 404."""
    ping = b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}'
    headers = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-06-18"}
    seen: list[int] = []
    async with httpx.AsyncClient() as client:
        for wait_s in (1.5, 3.0, 6.0, 12.0):
            await asyncio.sleep(wait_s)
            seen.append((await client.post(url, content=ping, headers=headers)).status_code)
            if seen[-1] == 404:
                break
    return seen


def test_the_cli_flag_sets_the_idle_time(tmp_path: Path) -> None:
    """`fusiongraph mcp --transport http --session-idle-s 1` as a real process."""
    port = free_port()
    log = (tmp_path / "mcp.log").open("w")
    command = [sys.executable, "-m", "fusiongraph.serve.cli", "mcp", "--transport", "http"]
    command += ["--port", str(port), "--session-idle-s", "1"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/mcp"

    async def scenario() -> list[int]:
        async with session_of(url, terminate_on_close=False) as (_, session_id):
            pass
        return await _expires(url, session_id)

    try:
        assert wait_for(lambda: _listening(port), timeout=60), (tmp_path / "mcp.log").read_text()
        seen = asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert seen[-1] == 404, seen


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_idle_time_must_be_positive(scripts: dict[str, Script]) -> None:
    with pytest.raises(ValueError, match="session_idle_s"):
        _app(scripts, session_idle_s=0)
