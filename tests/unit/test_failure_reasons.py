"""Failure reasons that say what happened, and error records that keep what was paid for."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from langchain_core.messages import BaseMessage, HumanMessage

from fusiongraph.graph import models
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes.failures import cut_error
from tests.support.fakes import (
    FakeFactory,
    Script,
    ScriptedChatModel,
    fake_context,
    judge_json,
    judge_spec,
)

ASK = {"messages": [HumanMessage(content="Why is the sky blue?")]}
PRICES = {
    "openai:a": {"input": 1.0, "output": 2.0},
    "openai:b": {"input": 1.0, "output": 2.0},
    "openai:judge": {"input": 3.0, "output": 4.0},
    "openai:synth": {"input": 10.0, "output": 10.0},
}


class HTTPError(Exception):
    """An SDK error as failure_reason sees it (status_code duck-typing)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"Error code: {status_code}")
        self.status_code = status_code


def scripts(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "a": ["answer of a"],
        "b": ["answer of b"],
        "judge": [judge_json(consensus=["blue light scatters more"])],
        "synth": ["Rayleigh scattering."],
    }
    return {**base, **overrides}


def ctx(panel: list[str] | None = None, judge_method: str = "prompt", **extra: Any) -> dict:
    judge = judge_spec(structured_output=judge_method)
    return fake_context(panel or ["a", "b"], judge=judge, **extra)


# --------------------------------------------------------- cut while the SDK retried an error


class RetryingModel(ScriptedChatModel):
    """Its upstream answered `status` (seen by the shared client's response hook); the SDK's
    retry of it then never ends."""

    status: int = 500

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        await models._note_response(httpx.Response(self.status))
        await asyncio.sleep(3600)


def retrying_factory(status: int) -> Any:
    fake = FakeFactory(scripts(flaky=["never"]))

    def factory(spec: ModelSpec) -> Any:
        if spec.model == "flaky":
            return RetryingModel(script=fake.scripts["flaky"], status=status)
        return fake(spec)

    return factory


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "upstream_error"), (503, "upstream_error"), (429, "rate_limited"), (200, "timeout")],
)
async def test_a_panelist_cut_while_retrying_names_the_http_error(status: int, reason: str):
    graph = build_graph(retrying_factory(status))
    result = await graph.ainvoke(ASK, context=ctx(["a", "flaky"], panel_timeout_s=0.3))
    [failed] = result["messages"][-1].response_metadata["fusion"]["failed_models"]
    assert failed["reason"] == reason
    assert "panel timeout" in failed["message"]
    assert (f"while retrying after HTTP {status}" in failed["message"]) == (status != 200)


async def test_the_status_holder_is_per_task() -> None:
    """The hook writes into the holder of the task that made the request, and nowhere else."""
    with models.track_upstream_status() as outer:

        async def branch(status: int) -> int | None:
            with models.track_upstream_status() as seen:
                await models._note_response(httpx.Response(status))
                await asyncio.sleep(0)
                return seen.status

        assert await asyncio.gather(branch(500), branch(429)) == [500, 429]
        assert outer.status is None
        await models._note_response(httpx.Response(502))
        assert outer.status == 502
    await models._note_response(httpx.Response(500))  # no holder: nothing to record


def test_cut_error_keeps_the_clock_reason_unless_an_error_was_being_retried() -> None:
    assert cut_error("straggler", "cut", None) == {"reason": "straggler", "message": "cut"}
    assert cut_error("deadline", "cut", 200)["reason"] == "deadline"
    assert cut_error("deadline", "cut", 400)["reason"] == "deadline"  # never retried
    assert cut_error("timeout", "cut", 502) == {
        "reason": "upstream_error",
        "message": "cut, while retrying after HTTP 502",
    }
    assert cut_error("timeout", "cut", 429)["reason"] == "rate_limited"


# ------------------------------------------------------------------------ the judge's reason


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([HTTPError(500), HTTPError(500)], "upstream_error"),
        ([HTTPError(401), "not json"], "auth"),
        (["not json", HTTPError(429)], "rate_limited"),
        (["not json", "{broken"], "invalid_response"),
        ([judge_json(), "not json"], "invalid_response"),
        ([judge_json(), judge_json()], "empty"),
    ],
)
async def test_a_failed_judge_reports_why(replies: list[Any], reason: str) -> None:
    fake = FakeFactory(scripts(judge=Script(replies)))
    result = await build_graph(fake).ainvoke(ASK, context=ctx(judge_method="json_schema"))
    fusion = result["messages"][-1].response_metadata["fusion"]
    assert fusion["degraded"] is True
    error = fusion["judge"]["error"]
    assert error["reason"] == reason
    assert error["message"].startswith("json_schema: ") and "; prompt: " in error["message"]


async def test_a_judge_cut_by_the_run_deadline_while_retrying_says_so() -> None:
    fake = FakeFactory(scripts())

    def factory(spec: ModelSpec) -> Any:
        if spec.model == "judge":
            return RetryingModel(script=fake.scripts["judge"], status=503)
        return fake(spec)

    result = await build_graph(factory).ainvoke(ASK, context=ctx(deadline_s=1.0))
    error = result["messages"][-1].response_metadata["fusion"]["judge"]["error"]
    assert error["reason"] == "upstream_error"
    assert "run deadline" in error["message"] and "HTTP 503" in error["message"]


# ------------------------------------------------------------- error bodies keep the record


async def test_synthesis_failure_carries_the_full_record() -> None:
    """Everything a successful run reports, except what the failed synthesis used (unknown)."""
    ok = await build_graph(FakeFactory(scripts())).ainvoke(ASK, context=ctx(prices=PRICES))
    success = ok["messages"][-1].response_metadata["fusion"]

    fake = FakeFactory(scripts(synth=Script([HTTPError(500)])))
    with pytest.raises(FusionError) as info:
        await build_graph(fake).ainvoke(ASK, context=ctx(prices=PRICES))
    error = info.value
    assert error.reason == "synthesis_failed" and "upstream_error" in error.message
    record = error.details
    assert set(record) == set(success) - {"usage_estimated"}
    assert [p["content"] for p in record["panel"]] == ["answer of a", "answer of b"]
    assert record["analysis"] == success["analysis"]
    assert record["judge"]["ok"] is True and record["judge"]["model"] == "openai:judge"
    assert record["usage"]["panel"] == success["usage"]["panel"]
    assert record["usage"]["judge"] == success["usage"]["judge"]
    assert record["usage"]["judge"]["total_tokens"] > 0
    assert record["usage"]["synthesis"]["total_tokens"] == 0
    assert record["cost_usd"]["panel"] == success["cost_usd"]["panel"] > 0
    assert record["cost_usd"]["judge"] == success["cost_usd"]["judge"] > 0
    assert record["cost_usd"]["synthesis"] is None and record["cost_usd"]["total"] is None
    assert record["synthesizer"]["model"] == "openai:synth"
    assert record["synthesizer"]["latency_s"] is not None
    assert error.to_dict()["usage"] == record["usage"]  # what the server and the CLI send


async def test_judge_and_synthesis_failure_keeps_the_failed_judges_usage() -> None:
    fake = FakeFactory(scripts(judge=["not json"], synth=Script([RuntimeError("down")])))
    with pytest.raises(FusionError) as info:
        await build_graph(fake).ainvoke(ASK, context=ctx(prices=PRICES))
    record = info.value.details
    assert info.value.reason == "judge_and_synthesis_failed"
    assert record["judge"]["ok"] is False
    assert record["judge"]["error"]["reason"] == "invalid_response"
    assert record["usage"]["judge"]["output_tokens"] > 0  # the unparsable reply was paid for
    assert record["cost_usd"]["judge"] > 0


async def test_all_panelists_failed_carries_what_the_panel_used() -> None:
    fake = FakeFactory(scripts(a=["   "], b=["  "]))  # answered (and billed), but nothing usable
    with pytest.raises(FusionError) as info:
        await build_graph(fake).ainvoke(ASK, context=ctx(prices=PRICES))
    record = info.value.details
    assert info.value.reason == "all_panelists_failed"
    assert record["panel"] == [] and record["analysis"] is None
    assert [(f["panelist"], f["reason"]) for f in record["failed_models"]] == [
        ("p1", "empty"),
        ("p2", "empty"),
    ]
    assert record["usage"]["panel"]["total_tokens"] > 0
    assert record["cost_usd"]["panel"] > 0
    assert record["usage"]["judge"]["total_tokens"] == 0
    assert record["usage"]["synthesis"]["total_tokens"] == 0
    assert record["cost_usd"]["synthesis"] == 0 and record["synthesizer"]["latency_s"] is None
    assert record["cost_usd"]["total"] == record["cost_usd"]["panel"]
    assert fake.scripts["judge"].calls == [] and fake.scripts["synth"].calls == []


# ------------------------------------------------------- reasons by type, not by class name


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/chat"))


def _provider_errors() -> list[tuple[BaseException, str]]:
    """What langchain-openai raises (langchain-core's neutral errors), and the raw SDK's."""
    import openai
    from langchain_openai.chat_models import base as lc_openai

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat")
    body = {"error": {"message": "x"}}
    return [
        (lc_openai.OpenAIRateLimitError("x", response=_response(429), body=body), "rate_limited"),
        (lc_openai.OpenAIAuthenticationError("x", response=_response(401), body=body), "auth"),
        (lc_openai.OpenAIPermissionDeniedError("x", response=_response(403), body=body), "auth"),
        (lc_openai.OpenAIAPIError("x", response=_response(500), body=body), "upstream_error"),
        (lc_openai.OpenAITimeoutError(request=request), "timeout"),
        (lc_openai.OpenAIConnectionError(request=request), "connection_error"),
        (
            lc_openai.OpenAIInvalidRequestError("x", response=_response(400), body=body),
            "bad_request",
        ),
        (openai.APITimeoutError(request=request), "timeout"),
        (openai.APIConnectionError(request=request), "connection_error"),
        (httpx.ConnectTimeout("x"), "timeout"),
        (httpx.RemoteProtocolError("x"), "connection_error"),
        (HTTPError(503), "upstream_error"),
        (ValueError("a timeout-looking ConnectionTimeout text"), "error"),
    ]


@pytest.mark.parametrize(("exc", "reason"), _provider_errors())
def test_failure_reasons_come_from_the_error_types(exc: BaseException, reason: str) -> None:
    from fusiongraph.nodes.failures import failure_reason

    assert failure_reason(exc) == reason
