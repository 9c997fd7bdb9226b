"""The server tests' setup: the real OpenAI-compatible app on a scripted graph, served on
127.0.0.1 in a thread, and an SDK client for it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
from fastapi import FastAPI
from langchain_core.messages import AIMessage
from langgraph.graph.state import CompiledStateGraph

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory, ScriptedChatModel, fake_context, judge_json
from tests.support.servers import running_server

ANSWER = "Paris is the capital of France, as every panelist agreed."
MODEL = "fusion-test"
ALIAS = fake_context(["m1", "m2", "m3"])
USER = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tool_call_reply(
    name: str = "get_weather", call_id: str = "call_abc123", **args: Any
) -> AIMessage:
    """A synthesis reply that is one tool call, in the form providers send (streams as a chunk)."""
    return AIMessage(
        content="",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ]
        },
    )


def scripts(**overrides: Any) -> dict[str, Any]:
    """Panelists m1..m9 (each names itself: ANSWER-p<i>), a judge that finds a consensus, and a
    synthesizer that says ANSWER; `overrides` replaces any of them."""
    base: dict[str, Any] = {
        f"m{i}": [f"Panelist {i} says Paris. ANSWER-p{i}"] for i in range(1, 10)
    }
    base["judge"] = [judge_json(consensus=["Paris is the capital"])]
    base["synth"] = [ANSWER]
    base.update(overrides)
    return base


class CancelAwareModel(ScriptedChatModel):
    """Records in `cancelled` (a threading.Event) when its call is cancelled mid-flight."""

    cancelled: Any = None

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._agenerate(*args, **kwargs)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def _astream(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        try:
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class CancelAwareFactory(FakeFactory):
    """FakeFactory whose models for `watched` names record cancellation."""

    def __init__(self, scripts: dict[str, Any], watched: set[str]) -> None:
        super().__init__(scripts)
        self.watched = watched
        self.cancelled = threading.Event()

    def __call__(self, spec: ModelSpec) -> ScriptedChatModel:
        self.built.append(spec)
        if spec.model in self.watched:
            return CancelAwareModel(script=self.scripts[spec.model], cancelled=self.cancelled)
        return ScriptedChatModel(script=self.scripts[spec.model])


def fake_graph(factory: FakeFactory) -> CompiledStateGraph:
    return build_graph(factory)


def app_for(factory: FakeFactory, **kwargs: Any) -> FastAPI:
    """The server app on `factory`'s graph: no API keys, the alias MODEL -> ALIAS."""
    kwargs.setdefault("api_keys", [])
    kwargs.setdefault("aliases", {MODEL: ALIAS})
    return create_app(fake_graph(factory), **kwargs)


@contextmanager
def served(factory: FakeFactory, **app_kwargs: Any) -> Iterator[tuple[str, openai.OpenAI]]:
    """A running server for `factory` and an SDK client for it (no retries, so errors surface)."""
    with (
        running_server(app_for(factory, **app_kwargs)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        yield url, client
