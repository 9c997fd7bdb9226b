"""The server's input limits: body size, message count, panel size, max_tokens, tool steps.

Each breach is a 400 with code `limit_exceeded`, `param` naming the offending parameter and the
message naming the limit and its value; nothing is run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.openai_request import RequestLimits
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory
from tests.support.server_app import ALIAS, MODEL, scripts, served
from tests.support.servers import running_server

LIMITS = RequestLimits(
    max_body_bytes=4096, max_messages=3, max_panel=2, max_tokens=100, max_tool_calls=4
)
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeFactory]]:
    factory = FakeFactory(scripts())
    with served(factory, limits=LIMITS) as (url, _):
        yield url, factory


def _post(url: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": USER, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=30)


def _assert_limit(response: httpx.Response, param: str | None, limit: str, value: int) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert error["param"] == param
    assert error["limit"] == limit and error["limit_value"] == value
    assert f"{limit} = {value}" in error["message"]


def test_within_limits_runs(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    response = _post(url, max_tokens=100, fusion={"max_tool_calls": 4, "panel_max_tokens": 50})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_body_over_limit_by_content_length(server: tuple[str, FakeFactory]) -> None:
    url, factory = server
    built = len(factory.built)
    response = _post(url, messages=[{"role": "user", "content": "x" * 5000}])
    _assert_limit(response, None, "max_body_bytes", 4096)
    assert len(factory.built) == built  # nothing ran


def test_body_over_limit_when_chunked(server: tuple[str, FakeFactory]) -> None:
    """No Content-Length: the body is counted while it arrives and refused past the limit."""
    url, _ = server

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fusion-test", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    _assert_limit(response, None, "max_body_bytes", 4096)


def test_message_count(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ]
    _assert_limit(_post(url, messages=messages), "messages", "max_messages", 3)


def test_panel_size(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    panel = ["openai:m1", "openai:m2", "openai:m3"]
    _assert_limit(_post(url, fusion={"panel": panel}), "fusion.panel", "max_panel", 2)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 101}, "max_tokens"),
        ({"max_completion_tokens": 5000}, "max_completion_tokens"),
        ({"fusion": {"panel_max_tokens": 101}}, "fusion.panel_max_tokens"),
        ({"fusion": {"panel_max_tokens": "500"}}, "fusion.panel_max_tokens"),
        (
            {"fusion": {"panel": ["openai:m1", {"model": "m2", "max_tokens": 999}]}},
            "fusion.panel[1].max_tokens",
        ),
        ({"fusion": {"judge": {"model": "judge", "max_tokens": 999}}}, "fusion.judge.max_tokens"),
    ],
)
def test_max_tokens(server: tuple[str, FakeFactory], body: dict[str, Any], param: str) -> None:
    url, _ = server
    limit = "max_tokens"
    _assert_limit(_post(url, **body), param, limit, 100)


@pytest.mark.parametrize(
    ("fusion", "param"),
    [
        ({"max_tool_calls": 5}, "fusion.max_tool_calls"),
        ({"judge_max_tool_calls": 5}, "fusion.judge_max_tool_calls"),
        ({"panel": [{"model": "m1", "max_tool_calls": 16}]}, "fusion.panel[0].max_tool_calls"),
    ],
)
def test_tool_steps(server: tuple[str, FakeFactory], fusion: dict[str, Any], param: str) -> None:
    url, _ = server
    _assert_limit(_post(url, fusion=fusion), param, "max_tool_calls", 4)


@pytest.mark.parametrize("key", ["deadline_s", "panel_timeout_s"])
def test_time_limits_below_a_second_are_refused(server: tuple[str, FakeFactory], key: str) -> None:
    url, _ = server
    response = _post(url, fusion={key: 0.05})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == f"fusion.{key}" and "at least 1.0 s" in error["message"]


def test_panel_that_is_not_a_list_is_400(server: tuple[str, FakeFactory]) -> None:
    """Found by the fuzzer: `"panel": true` used to crash the config check (500)."""
    url, _ = server
    response = _post(url, fusion={"panel": True})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "panel"


def test_limits_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONGRAPH_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("FUSIONGRAPH_MAX_TOOL_CALLS", "3")
    limits = RequestLimits.from_env()
    assert limits.max_body_bytes == 2048 and limits.max_tool_calls == 3
    assert limits.max_messages == RequestLimits().max_messages
    monkeypatch.setenv("FUSIONGRAPH_MAX_MESSAGES", "lots")
    with pytest.raises(ValueError, match="FUSIONGRAPH_MAX_MESSAGES"):
        RequestLimits.from_env()


def test_limits_cannot_exceed_the_graphs_own() -> None:
    with pytest.raises(ValueError, match="max_panel"):
        RequestLimits(max_panel=9)
    with pytest.raises(ValueError, match="max_tool_calls"):
        RequestLimits(max_tool_calls=17)
    with pytest.raises(ValueError, match="at least 1"):
        RequestLimits(max_messages=0)


def test_openapi_describes_the_request_body(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]
    assert MODEL in body["properties"]["model"]["enum"]
    assert body["properties"]["messages"]["maxItems"] == 3
    assert body["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 100  # or null
    fusion = body["properties"]["fusion"]["anyOf"][0]
    assert fusion["properties"]["panel"]["anyOf"][0]["maxItems"] == 2
    assert {"400", "401", "429", "502", "504"} <= set(operation["responses"])


def test_a_new_context_setting_reaches_the_server_without_touching_serve() -> None:
    """One schema: a setting added to the context is documented and accepted per request."""
    from pydantic import Field

    from fusiongraph.graph.config import FusionContext

    class ExtendedContext(FusionContext):
        answer_style: str | None = Field(default=None, description="how the answer reads")

    graph = build_graph(FakeFactory(scripts()), context_schema=ExtendedContext)
    app = create_app(graph, api_keys=[], aliases={MODEL: ALIAS})
    with running_server(app) as url:
        schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
        response = _post(url, fusion={"answer_style": "terse"})
        unknown = _post(url, fusion={"answer_styl": "terse"})
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    fusion = body["application/json"]["schema"]["properties"]["fusion"]["anyOf"][0]
    assert fusion["properties"]["answer_style"]["description"] == "how the answer reads"
    assert response.status_code == 200, response.text
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "fusion.answer_styl"
