"""Fuzz the OpenAI-compatible server with schemathesis against its own OpenAPI schema.

The app is the real one (`create_app`) around the real graph with scripted models that answer
any model name, so every request that passes validation runs a whole deliberation. Schemathesis
generates schema-valid and schema-violating requests for every operation; each response must be
no 5xx, conform to the documented status codes, content types and schemas, and be a complete
answer: a JSON body with `choices` or `error`, or an SSE stream that ends in `data: [DONE]`.
(Schemathesis's negative_data_rejection check is left out on purpose: the server reads numbers
the way pydantic's lax mode does, e.g. "16" for 16, as OpenAI's API is lenient too.)
Bounded (a fixed number of examples per operation and mode) so it runs in well under 2 minutes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.openai_request import RequestLimits
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory, Script, ScriptedChatModel, fake_context, judge_json
from tests.unit.test_server_hostile import HOSTILE, Hostile, assert_refused

pytestmark = pytest.mark.integration

# Per operation and generation mode; FUSIONGRAPH_FUZZ_EXAMPLES raises it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("FUSIONGRAPH_FUZZ_EXAMPLES", "150"))
SEEN: Counter[tuple[str, int]] = Counter()  # (operation, status) -> responses
# Small limits, so the fuzzer reaches them (a 1 MB body or 512 messages it would never build).
LIMITS = RequestLimits(
    max_body_bytes=64 * 1024, max_messages=12, max_panel=4, max_tokens=4096, max_tool_calls=8
)
ALIAS = fake_context(["m1", "m2", "m3"], search_provider="none")


class AnyModelFactory(FakeFactory):
    """Every model name answers (the fuzzer invents panels): a text that is also a valid
    analysis, so the same reply serves panelist, judge and synthesizer."""

    def __call__(self, spec: ModelSpec) -> ScriptedChatModel:
        self.built.append(spec)
        script = self.scripts.setdefault(spec.model, Script([judge_json(consensus=["Paris"])]))
        return ScriptedChatModel(script=script)


APP = create_app(
    build_graph(AnyModelFactory({})),
    api_keys=[],
    aliases={"fusion-test": ALIAS},
    limits=LIMITS,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(max_examples=MAX_EXAMPLES)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys for every provider the fuzzer may name; no web search (a fuzzed request may ask for
    `prefetch` with any search provider). `local:` models start no server: the fake factory has
    no `prepare` hook."""
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "sk-fuzz")
    monkeypatch.delenv("FUSIONGRAPH_PRESET", raising=False)

    async def no_search(*_: Any, **__: Any) -> tuple[str, list[Any]]:
        return "", []

    monkeypatch.setattr("fusiongraph.nodes.panel.prefetch_context", no_search)


# The event that ends a whole stream of the APIs whose events are typed.
STREAM_END = {"/v1/messages": "message_stop", "/v1/responses": "response.completed"}


def complete_answer(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No crash: every response is a whole, well-formed answer or error."""
    SEEN[(case.operation.label, response.status_code)] += 1
    assert response.status_code < 500, (response.status_code, response.text[:500])
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        last = STREAM_END.get(case.operation.path)
        if last is None:  # chat completions
            assert events and events[-1] == "[DONE]", response.text[-500:]
            events = events[:-1]
        else:  # the Anthropic and Responses APIs: typed events, the last one known
            assert events and json.loads(events[-1])["type"] == last, response.text[-500:]
        for event in events:
            payload = json.loads(event)
            assert "error" not in payload and payload.get("type") != "error", payload
        return True
    body = json.loads(response.text)
    assert isinstance(body, dict) and ({"choices", "error", "data", "id"} & set(body)), body
    if body.get("error") is not None:  # a response object says `"error": null`
        assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return True


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    max_examples=MAX_EXAMPLES,
)
def test_server_survives_fuzzing(case: Case) -> None:
    case.call_and_validate(
        checks=[
            complete_answer,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )


@pytest.mark.parametrize("case", HOSTILE, ids=[case.name for case in HOSTILE])
def test_hostile_bodies_are_4xx(case: Hostile) -> None:
    """Bodies the generator does not write (too deep, NaN, 5000-digit integers, lone surrogates,
    images, overflowing prices): each must be its documented 4xx with an OpenAI error."""
    client = TestClient(APP, raise_server_exceptions=False)
    headers = {"content-type": "application/json"}
    response = client.post("/v1/chat/completions", content=case.body, headers=headers)
    assert 400 <= response.status_code < 500
    assert_refused(response, case)


def test_fuzzing_reached_whole_runs() -> None:
    """The fuzzer got past validation (whole deliberations ran) as well as into the 400s."""
    chat = {status: n for (label, status), n in SEEN.items() if "chat/completions" in label}
    if not chat:
        pytest.skip("run together with test_server_survives_fuzzing")
    print(dict(SEEN))
    assert chat.get(200, 0) > 0 and chat.get(400, 0) > 0, chat
