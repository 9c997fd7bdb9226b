"""Deterministic chat models for offline tests: scripted replies, recorded inputs."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from fusiongraph.graph.specs import ModelSpec

Reply = AIMessage | str | Exception | Callable[[list[BaseMessage]], AIMessage | str]


class Script:
    """Replies for one model name, shared by every instance the factory builds for it."""

    def __init__(self, replies: Sequence[Reply], *, repeat_last: bool = True, delay_s: float = 0.0):
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.delay_s = delay_s
        self.cancelled = 0
        self.calls: list[list[BaseMessage]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.bound_tools: list[Any] = []
        self._lock = threading.Lock()

    def next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        with self._lock:
            self.calls.append(messages)
            self.kwargs.append(kwargs)
            index = len(self.calls) - 1
            if index >= len(self.replies) and not self.repeat_last:
                raise AssertionError(f"no scripted reply left (call {index + 1})")
            reply = self.replies[min(index, len(self.replies) - 1)]
        if callable(reply) and not isinstance(reply, AIMessage):
            reply = reply(messages)
        if isinstance(reply, Exception):
            raise reply
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        if message.usage_metadata is None:
            text = message.text or json.dumps([c["args"] for c in message.tool_calls])
            message = with_usage(message, messages, text)
        return message


def with_usage(message: AIMessage, messages: list[BaseMessage], text: str) -> AIMessage:
    """`message` with its usage counted in words: of the input `messages`, of the output `text`."""
    n_in = sum(len(str(m.content).split()) for m in messages)
    n_out = max(1, len(text.split()))
    usage = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
    return message.model_copy(update={"usage_metadata": usage})


def stream_chunks(message: AIMessage) -> Iterator[ChatGenerationChunk]:
    """Stream a scripted reply like a provider does: text token by token, then one last chunk
    with the tool calls, usage and response metadata (GenericFakeChatModel drops those)."""
    for token in re.split(r"(\s)", message.text):
        if token:
            yield ChatGenerationChunk(message=AIMessageChunk(content=token, id=message.id))
    calls = [
        {
            "name": c["name"],
            "args": json.dumps(c["args"]),
            "id": c["id"],
            "index": i,
            "type": "tool_call_chunk",
        }
        for i, c in enumerate(message.tool_calls)
    ]
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            id=message.id,
            tool_call_chunks=calls,
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
    )


class ScriptedChatModel(GenericFakeChatModel):
    """A GenericFakeChatModel whose replies come from a Script and whose bind_tools works."""

    script: Any = None
    messages: Any = iter(())

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        from langchain_core.outputs import ChatGeneration

        return ChatResult(generations=[ChatGeneration(message=self.script.next(messages, kwargs))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        await self._delay()
        return self._generate(messages, stop, None, **kwargs)

    async def _delay(self) -> None:
        """Simulated latency; a cancelled call is counted, as a real HTTP call would be closed."""
        if not self.script.delay_s:
            return
        try:
            await asyncio.sleep(self.script.delay_s)
        except asyncio.CancelledError:
            self.script.cancelled += 1
            raise

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        yield from stream_chunks(self.script.next(messages, kwargs))

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        # One scripted reply per call (the base _astream would call _stream again in a thread).
        await self._delay()
        for chunk in stream_chunks(self.script.next(messages, kwargs)):
            yield chunk

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        self.script.bound_tools.append((list(tools), kwargs))
        return self


class FakeFactory:
    """A model factory for build_graph: model name -> Script."""

    def __init__(self, scripts: dict[str, Script | Sequence[Reply]]):
        self.scripts = {k: v if isinstance(v, Script) else Script(v) for k, v in scripts.items()}
        self.built: list[ModelSpec] = []

    def __call__(self, spec: ModelSpec) -> ScriptedChatModel:
        self.built.append(spec)
        return ScriptedChatModel(script=self.scripts[spec.model])


def judge_json(**sections: Any) -> str:
    """A judge reply with the five sections (missing ones empty)."""
    base = {
        "consensus": [],
        "contradictions": [],
        "partial_coverage": [],
        "unique_insights": [],
        "blind_spots": [],
    }
    return json.dumps({**base, **sections})


def tool_call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def judge_spec(**overrides: Any) -> dict[str, Any]:
    """The scripted judge: model `judge`, asked for its analysis in the prompt (a fake model has
    no native structured output). A new dict each call, so no test can change another's."""
    return {"provider": "openai", "model": "judge", "structured_output": "prompt", **overrides}


def fake_context(
    panel: Sequence[str], *, base_url: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The usual context of a scripted run: the quality preset, `panel` (model names of the
    openai provider, or with `base_url` specs of that endpoint), the scripted judge, synthesizer
    `synth`, no tools; `extra` adds or overrides settings."""

    def spec(name: str) -> Any:
        return f"openai:{name}" if base_url is None else {"model": name, "base_url": base_url}

    judge = judge_spec() if base_url is None else {**spec("judge"), "structured_output": "prompt"}
    return {
        "preset": "quality",
        "panel": [spec(name) for name in panel],
        "judge": judge,
        "synthesizer": spec("synth"),
        "tool_mode": "off",
        **extra,
    }
