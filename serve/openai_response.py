"""Shape fusion results as OpenAI chat.completion objects and chat.completion.chunk streams.

The fusion metadata rides in a top-level `fusion` field: the official SDKs keep unknown fields
(`completion.model_extra["fusion"]`) and LangChain's ChatOpenAI ignores them, so standard clients
work unchanged while ours can read the panel, the analysis and the per-node usage.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, ToolCall, ToolCallChunk

_FINISH_PASSTHROUGH = {"length", "content_filter"}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_block(message: AIMessage) -> dict[str, Any]:
    """OpenAI usage from the final message, whose usage_metadata totals every call of the run
    (with the reasoning tokens among them in completion_tokens_details, when any)."""
    usage: Mapping[str, Any] = message.usage_metadata or {}
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    block: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
    reasoning = int((usage.get("output_token_details") or {}).get("reasoning", 0) or 0)
    if reasoning:
        block["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return block


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False),
        },
    }


def finish_reason(message: AIMessage) -> str:
    if message.tool_calls:
        return "tool_calls"
    reason = (message.response_metadata or {}).get("finish_reason")
    return reason if reason in _FINISH_PASSTHROUGH else "stop"


def fusion_of(message: AIMessage) -> dict[str, Any] | None:
    return (message.response_metadata or {}).get("fusion")


def completion_body(message: AIMessage, *, model: str, cid: str, created: int) -> dict[str, Any]:
    """A non-streaming chat.completion (content is null when the answer is only tool calls)."""
    tool_calls = [openai_tool_call(c) for c in message.tool_calls]
    text = message.text
    body_message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        body_message["tool_calls"] = tool_calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": body_message,
                "logprobs": None,
                "finish_reason": finish_reason(message),
            }
        ],
        "usage": usage_block(message),
        "fusion": fusion_of(message),
    }


class ChunkWriter:
    """Turns synthesis token chunks into chat.completion.chunk dicts, in OpenAI's order.

    Tool-call deltas follow OpenAI's format: the first delta of a call carries index, id, type and
    the function name; later ones only index and argument fragments. Whatever the model did not
    stream (some providers send tool calls or the whole text only at the end) is sent from the
    final message, so the assembled stream always equals the non-streaming answer.
    """

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.cid = completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.sent_text = False
        self._call_index: dict[Any, int] = {}  # provider index (or id) -> our index
        self._last_index: int | None = None

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def start(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def _tool_index(self, part: ToolCallChunk) -> tuple[int, bool]:
        """Our index for a tool-call fragment, and whether it opens a new call."""
        key: int | str | None = part.get("index")
        if key is None:
            key = part.get("id")
        if key is None:  # a continuation without index or id belongs to the last call
            if self._last_index is not None:
                return self._last_index, False
            key = 0
        if key in self._call_index:
            self._last_index = self._call_index[key]
            return self._last_index, False
        self._call_index[key] = self._last_index = len(self._call_index)
        return self._last_index, True

    def token(self, chunk: AIMessageChunk) -> list[dict[str, Any]]:
        out = []
        text = chunk.text
        if text:
            self.sent_text = True
            out.append(self._chunk({"content": text}))
        for part in chunk.tool_call_chunks:
            index, new = self._tool_index(part)
            delta: dict[str, Any] = {
                "index": index,
                "function": {"arguments": part.get("args") or ""},
            }
            if new:
                delta["id"] = part.get("id") or f"call_{uuid.uuid4().hex[:24]}"
                delta["type"] = "function"
                delta["function"]["name"] = part.get("name") or ""
            elif part.get("name"):
                delta["function"]["name"] = part["name"]
            out.append(self._chunk({"tool_calls": [delta]}))
        return out

    def finish(self, message: AIMessage) -> list[dict[str, Any]]:
        """Anything not streamed yet, the finish chunk with the fusion metadata, then usage."""
        out = []
        if not self.sent_text and message.text:
            out.append(self._chunk({"content": message.text}))
        if message.tool_calls and not self._call_index:
            for index, call in enumerate(message.tool_calls):
                out.append(
                    self._chunk({"tool_calls": [{"index": index, **openai_tool_call(call)}]})
                )
        out.append(self._chunk({}, finish_reason(message), fusion=fusion_of(message)))
        if self.include_usage:
            out.append(
                {
                    "id": self.cid,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_block(message),
                }
            )
        return out
