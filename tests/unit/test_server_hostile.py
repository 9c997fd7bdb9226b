"""Hostile requests: each is a 4xx naming what is wrong, answered before any model is called.

Each of these used to be a 500, a hang, or was passed on to every panelist: JSON nested past
Python's recursion limit, integers past its digit limit, `NaN`/`Infinity` (not JSON), prices
that overflow the cost to infinity, lone surrogates no UTF-8 encoder accepts, image parts whose
URL points inside the network (a model's endpoint would fetch it), audio parts, and bodies that
never finish arriving. HOSTILE is shared with the fuzz
suite (tests/integration/test_fuzz_server.py), which sends the same bodies.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import ValidationError

from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.pricing import cost_of
from fusiongraph.graph.specs import MAX_PRICE_PER_MTOK, ModelSpec, Price
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.serve.openai_errors import OpenAIError
from fusiongraph.serve.openai_request import MAX_JSON_DEPTH, RequestLimits, check_json_values
from tests.support.fakes import FakeFactory
from tests.support.server_app import ALIAS, MODEL, app_for, fake_graph, scripts
from tests.support.servers import running_server, wait_for

USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
BODY_TIMEOUT_S = 1


class Hostile(NamedTuple):
    """A raw request body, the status it must get and the `param` its error must name."""

    name: str
    body: bytes
    status: int
    param: str | None


def _body(**fields: Any) -> bytes:
    """A request as json.dumps writes it: it emits NaN/Infinity and escapes lone surrogates."""
    return json.dumps({"model": MODEL, "messages": USER, **fields}).encode()


def _spliced(key: str, raw_json: str) -> bytes:
    """A request with `key` set to text json.dumps cannot produce (too deep, too long)."""
    return _body()[:-1] + f', "{key}": {raw_json}}}'.encode()


def _nested(depth: int) -> dict[str, Any]:
    """{"a": {"a": ...}} `depth` objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _tool_turns(arguments: str) -> list[dict[str, Any]]:
    """A conversation whose assistant turn called a tool with these `arguments` (a string)."""
    call = {**CALL, "function": {**CALL["function"], "arguments": arguments}}
    return [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]


IMAGE = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
DEEP = 5000  # past json.loads' own recursion limit
# A container at depth MAX_JSON_DEPTH + 1 is the first refused; the body is depth 1, so its path
# has MAX_JSON_DEPTH keys.
HOSTILE = [
    Hostile("nesting-past-json-loads", _spliced("metadata", "[" * DEEP + "]" * DEEP), 400, None),
    Hostile(
        "nesting-in-tool-parameters",
        _body(tools=[{**TOOL, "function": {**TOOL["function"], "parameters": _nested(800)}}]),
        400,
        "tools[0].function.parameters" + ".a" * (MAX_JSON_DEPTH - 4),
    ),
    Hostile(
        "nesting-in-tool-choice",
        _body(
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "lookup", "x": _deep_list(300)}},
        ),
        400,
        "tool_choice.function.x" + "[0]" * (MAX_JSON_DEPTH - 3),
    ),
    Hostile(
        "nesting-in-tool-arguments",
        _body(messages=_tool_turns("[" * DEEP + "]" * DEEP)),
        400,
        "messages[1].tool_calls[0].function.arguments",
    ),
    Hostile("integer-of-5000-digits", _spliced("user_id", "1" * 5000), 400, None),
    Hostile("nan-temperature", _body(temperature=float("nan")), 400, "temperature"),
    Hostile("nan-in-unknown-field", _body(top_k=float("nan")), 400, "top_k"),
    Hostile(
        "infinity-budget", _body(fusion={"max_cost_usd": float("inf")}), 400, "fusion.max_cost_usd"
    ),
    Hostile(
        "minus-infinity-price",
        _body(fusion={"prices": {"openai:m1": {"input": float("-inf"), "output": 1}}}),
        400,
        "fusion.prices.openai:m1.input",
    ),
    Hostile(
        "overflowing-number", _spliced("fusion", '{"deadline_s": 1e999}'), 400, "fusion.deadline_s"
    ),
    Hostile(
        "price-that-overflows-the-cost",
        _body(fusion={"prices": {"openai:m1": {"input": 1e308, "output": 1}}}),
        400,
        "prices.openai:m1.input",
    ),
    Hostile(
        "spec-price-that-overflows-the-cost-streamed",
        _body(
            stream=True,
            fusion={
                "panel": [
                    {"model": "m1", "provider": "openai", "price": {"input": 1, "output": 1e308}}
                ]
            },
        ),
        400,
        "panel[0].price.output",
    ),
    Hostile(
        "lone-surrogate-in-content",
        _body(messages=[{"role": "user", "content": "hi \ud800"}]),
        400,
        "messages[0].content",
    ),
    Hostile(
        "lone-surrogate-in-text-part",
        _body(messages=[{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]),
        400,
        "messages[0].content[0].text",
    ),
    Hostile("lone-surrogate-in-key", _body(fusion={"\ud800": 1}), 400, "fusion.\\ud800"),
    Hostile(
        "lone-surrogate-in-tool-arguments",
        _body(messages=_tool_turns('{"q": "\\ud800"}')),
        400,
        "messages[1].tool_calls[0].function.arguments.q",
    ),
    Hostile(
        "image-part",
        _body(
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE]}]
        ),
        400,
        "messages[0].content[1]",
    ),
    Hostile(
        "audio-part",
        _body(messages=[{"role": "user", "content": [AUDIO]}]),
        400,
        "messages[0].content[0]",
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeFactory]]:
    factory = FakeFactory(scripts())
    limits = RequestLimits(body_timeout_s=BODY_TIMEOUT_S)
    with running_server(app_for(factory, limits=limits)) as url:
        yield url, factory


def _post_raw(url: str, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, timeout=30)


def assert_refused(response: httpx.Response, case: Hostile) -> dict[str, Any]:
    """The documented status, an OpenAI-shaped error naming `case.param`; returns the error."""
    assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error", error
    assert error["param"] == case.param, error
    return error


@pytest.mark.parametrize("case", HOSTILE, ids=[case.name for case in HOSTILE])
def test_hostile_body_is_refused_before_any_model(
    server: tuple[str, FakeFactory], case: Hostile
) -> None:
    url, factory = server
    built = len(factory.built)
    assert_refused(_post_raw(url, case.body), case)
    assert len(factory.built) == built  # no model was called (none was even built)


def test_the_server_still_answers_after_them(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    response = _post_raw(
        url, _body(tools=[TOOL], fusion={"prices": {"openai:m1": {"input": 5, "output": 25}}})
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_nesting_up_to_the_limit_passes_the_walker() -> None:
    check_json_values({"tools": _nested(MAX_JSON_DEPTH - 1)})
    with pytest.raises(OpenAIError) as err:
        check_json_values({"tools": _nested(MAX_JSON_DEPTH)})
    assert err.value.status == 400 and err.value.code == "limit_exceeded"
    assert err.value.param == "tools" + ".a" * (MAX_JSON_DEPTH - 1)
    assert err.value.extra == {"limit": "max_json_depth", "limit_value": MAX_JSON_DEPTH}


def test_errors_name_what_they_refuse(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    by_name = {case.name: case for case in HOSTILE}

    def message(name: str) -> str:
        case = by_name[name]
        return assert_refused(_post_raw(url, case.body), case)["message"]

    assert "NaN is not a JSON number" in message("nan-temperature")
    assert "-Infinity is not a JSON number" in message("minus-infinity-price")
    assert "max_json_depth = 64" in message("nesting-past-json-loads")
    assert "4300 digits" in message("integer-of-5000-digits")
    assert "not valid Unicode" in message("lone-surrogate-in-content")
    assert "non-public host (169.254.169.254)" in message("image-part")
    assert "audio and files cannot be sent" in message("audio-part")
    assert "less than or equal to 100000" in message("price-that-overflows-the-cost")


# ------------------------------------------------------------------------ bodies that stall


def _send_head(url: str, content_length: int) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\n" + f"Content-Length: {content_length}\r\n\r\n".encode()
    )
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def _assert_body_timeout(status: int, body: dict[str, Any], elapsed: float) -> None:
    assert status == 408, body
    error = body["error"]
    assert error["code"] == "body_timeout" and error["limit"] == "body_timeout_s"
    assert f"within {BODY_TIMEOUT_S} s" in error["message"]
    assert elapsed < BODY_TIMEOUT_S + 4  # the connection was held for 75 s before


def test_body_shorter_than_its_content_length_is_408(server: tuple[str, FakeFactory]) -> None:
    url, factory = server
    built = len(factory.built)
    started = time.monotonic()
    with _send_head(url, 1000) as sock:
        sock.sendall(b'{"model": ')
        status, body = _read_response(sock)
    _assert_body_timeout(status, body, time.monotonic() - started)
    assert len(factory.built) == built


def test_trickled_body_is_408(server: tuple[str, FakeFactory]) -> None:
    """One byte every 0.4 s: each arrives in time, the whole body does not."""
    url, factory = server
    built = len(factory.built)
    payload = _body()
    started = time.monotonic()
    with _send_head(url, len(payload)) as sock:
        for byte in payload:
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.4)[0]:  # the server answered
                break
        status, body = _read_response(sock)
    _assert_body_timeout(status, body, time.monotonic() - started)
    assert len(factory.built) == built


def test_body_timeout_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RequestLimits().body_timeout_s == 10
    monkeypatch.setenv("FUSIONGRAPH_BODY_TIMEOUT_S", "3")
    assert RequestLimits.from_env().body_timeout_s == 3
    with pytest.raises(ValueError, match="body_timeout_s"):
        RequestLimits(body_timeout_s=0)


def test_openapi_documents_408_and_bounded_prices(server: tuple[str, FakeFactory]) -> None:
    url, _ = server
    operation = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"][
        "/v1/chat/completions"
    ]["post"]
    assert "408" in operation["responses"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    prices = body["properties"]["fusion"]["anyOf"][0]["properties"]["prices"]["anyOf"][0]
    price = prices["additionalProperties"]["properties"]["input"]
    assert price["maximum"] == MAX_PRICE_PER_MTOK


# ------------------------------------------------- clients that leave, bytes around the JSON


def test_a_body_cut_short_logs_one_line_and_no_traceback(
    server: tuple[str, FakeFactory],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Content-Length 5000, 9 bytes, then the client closes: not a server error."""
    url, factory = server
    built = len(factory.built)
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)  # its tracebacks too
    caplog.set_level(logging.INFO)
    with _send_head(url, 5000) as sock:
        sock.sendall(b'{"model":')
    assert wait_for(lambda: "before its request body arrived" in caplog.text, 10), caplog.text
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [], "no traceback"
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and "POST /v1/chat/completions" in lines[0].getMessage()
    assert len(factory.built) == built


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/chat/completions", {"messages": USER}),
        ("/v1/messages", {"messages": USER, "max_tokens": 64}),
        ("/v1/responses", {"input": "What is the capital of France?"}),
    ],
)
def test_a_leading_byte_order_mark_is_ignored(
    server: tuple[str, FakeFactory], path: str, fields: dict[str, Any]
) -> None:
    """RFC 8259 lets a parser ignore a leading BOM, and Windows tools write one: every surface
    reads the body without it (serve/openai_request.load_json)."""
    url, _ = server
    body = b"\xef\xbb\xbf" + json.dumps({"model": MODEL, **fields}).encode()
    response = httpx.post(
        f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 200, response.text[:500]


def test_a_body_in_another_encoding_is_400(server: tuple[str, FakeFactory]) -> None:
    """UTF-8 only (RFC 8259): json.loads alone would read a UTF-16 body."""
    url, factory = server
    built = len(factory.built)
    body = json.dumps({"model": MODEL, "messages": USER}).encode("utf-16")
    response = _post_raw(url, body)
    assert response.status_code == 400, response.text[:500]
    assert "utf-8" in response.json()["error"]["message"]
    assert len(factory.built) == built


def test_an_oversized_request_header_is_431(server: tuple[str, FakeFactory]) -> None:
    url, factory = server
    built = len(factory.built)
    headers = {"content-type": "application/json"}
    limit = RequestLimits().max_header_bytes
    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=_body(),
        headers={**headers, "x-padding": "a" * 100_000},
        timeout=30,
    )
    assert response.status_code == 431, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "request_header_too_large" and error["limit_value"] == limit
    assert len(factory.built) == built
    # Every route: the probes too. A header well within the limit is served.
    assert httpx.get(f"{url}/healthz", headers={"x-padding": "a" * 100_000}).status_code == 431
    fits = {**headers, "x-padding": "a" * (limit // 2)}
    response = httpx.post(f"{url}/v1/chat/completions", content=_body(), headers=fits, timeout=30)
    assert response.status_code == 200


def test_the_header_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONGRAPH_MAX_HEADER_BYTES", "4096")
    with running_server(app_for(FakeFactory(scripts()))) as url:
        big = httpx.get(f"{url}/healthz", headers={"x-padding": "a" * 5000})
        small = httpx.get(f"{url}/healthz", headers={"x-padding": "a" * 3000})
    assert big.status_code == 431 and small.status_code == 200


# ------------------------------------------------------------- the same rules off the server


def test_prices_and_specs_are_finite_and_bounded() -> None:
    Price(input=MAX_PRICE_PER_MTOK, output=0)
    for value in (1e308, float("inf"), float("nan")):
        with pytest.raises(ValidationError):
            Price(input=value, output=1)
    with pytest.raises(ValidationError):
        ModelSpec(model="m", timeout_s=float("inf"))


@pytest.mark.parametrize(
    ("usage", "price"),
    [
        ({"input_tokens": 10**304, "output_tokens": 0}, Price(input=MAX_PRICE_PER_MTOK, output=1)),
        ({"input_tokens": 1, "output_tokens": 1, "reported_cost_usd": float("inf")}, None),
        ({"input_tokens": 1, "output_tokens": 1, "reported_cost_usd": float("nan")}, None),
    ],
    ids=["overflow", "reported-inf", "reported-nan"],
)
def test_a_cost_that_is_not_finite_is_unknown(usage: dict[str, Any], price: Price | None) -> None:
    assert cost_of(usage, price) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        HumanMessage(
            [{"type": "text", "text": "What is it?"}, {"type": "image", "url": "http://[::1]/"}]
        ),
        HumanMessage([{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]),
        HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}]),
        HumanMessage([{"type": "file", "file_id": "f1"}]),
        HumanMessage("hi \ud800"),
        HumanMessage([{"type": "text", "text": "\udfff"}]),
    ],
    ids=["image", "image_url", "audio", "file", "surrogate", "surrogate-in-block"],
)
def test_check_conversation_refuses_what_no_model_can_read(message: HumanMessage) -> None:
    with pytest.raises(FusionError) as err:
        check_conversation([HumanMessage("context"), AIMessage("ok"), message])
    assert err.value.reason == "invalid_input" and "message 2" in err.value.message
    err.value.message.encode("utf-8")  # the error itself can be sent


def test_check_conversation_keeps_non_media_blocks() -> None:
    """Other models' tool-use and reasoning blocks in an agent's history are not media."""
    history = [
        HumanMessage("Weather in Oslo?"),
        AIMessage([{"type": "text", "text": "Looking."}, {"type": "tool_use", "id": "t1"}]),
        ToolMessage("4 °C", tool_call_id="t1"),
    ]
    check_conversation(history)


async def test_the_graph_refuses_a_bad_image_before_any_model() -> None:
    factory = FakeFactory(scripts())
    image = HumanMessage([{"type": "text", "text": "What is it?"}, {"type": "image", "url": "x"}])
    with pytest.raises(FusionError) as err:
        await fake_graph(factory).ainvoke({"messages": [image]}, context=ALIAS)
    assert err.value.reason == "invalid_input"
    assert factory.built == []
