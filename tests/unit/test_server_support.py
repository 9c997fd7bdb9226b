"""Shared pieces of the server tests: the real app under uvicorn on 127.0.0.1, scripted graphs.

No tests here; the other test_server*.py modules import these helpers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import uvicorn
from fastapi import FastAPI
from langchain_core.messages import AIMessage
from langgraph.graph.state import CompiledStateGraph

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.server import create_app
from tests.fakes import FakeFactory, Script, ScriptedChatModel, judge_json

ANSWER = "Paris is the capital of France, as every panelist agreed."
JUDGE = {"provider": "openai", "model": "judge", "structured_output": "prompt"}
MODEL = "fusion-test"
ALIAS = {
    "preset": "quality",
    "panel": ["openai:m1", "openai:m2", "openai:m3"],
    "judge": JUDGE,
    "synthesizer": "openai:synth",
    "tool_mode": "off",
}
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
    kwargs.setdefault("api_keys", [])
    kwargs.setdefault("aliases", {MODEL: ALIAS})
    return create_app(fake_graph(factory), **kwargs)


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def served(factory: FakeFactory, **app_kwargs: Any) -> Iterator[tuple[str, openai.OpenAI]]:
    """A running server for `factory` and an SDK client for it (no retries, so errors surface)."""
    with (
        running_server(app_for(factory, **app_kwargs)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        yield url, client


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll `predicate` until true or `timeout`; a bound on waiting, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


__all__ = [
    "ALIAS",
    "ANSWER",
    "MODEL",
    "WEATHER_TOOL",
    "CancelAwareFactory",
    "FakeFactory",
    "Script",
    "app_for",
    "running_server",
    "scripts",
    "served",
    "tool_call_reply",
    "wait_for",
]


USER = [{"role": "user", "content": "What is the capital of France?"}]
