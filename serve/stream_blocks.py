"""What the Anthropic and Responses stream writers share: which token fragment opens, continues
or closes a block, and what of the final message was not streamed. Each API's writer says how a
block becomes its own events (serve/anthropic_api.py, serve/responses_api.py)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, ToolCallChunk
from sse_starlette import ServerSentEvent


class BlockStreamWriter(ABC):
    """Synthesis token chunks -> one block at a time (Anthropic's content blocks, the Responses
    output items): the text's block opened at the first text, one block per tool call (its
    arguments as fragments), each closed before the next opens. Providers stream tool calls one
    after another (a fragment of a call whose block was closed could not be sent: blocks do not
    reopen). Whatever the model did not stream is sent from the final message, so the assembled
    stream equals the non-streaming answer."""

    def __init__(self) -> None:
        self.open: Any = None  # "text", a tool call's key, or None
        self.sent_text = False
        self.tools: set[Any] = set()  # the keys (provider index or id) of the calls opened

    @abstractmethod
    def _text(self, text: str) -> list[ServerSentEvent]:
        """Text, in the text's block (opened first if another is open); sets `sent_text`."""

    @abstractmethod
    def _start_call(self, key: Any, call_id: str | None, name: str) -> list[ServerSentEvent]:
        """Close the open block and open a tool call's, `key` its `open`."""

    @abstractmethod
    def _arguments(self, fragment: str) -> ServerSentEvent:
        """A fragment of the open tool call's arguments (JSON text)."""

    @abstractmethod
    def _close(self) -> list[ServerSentEvent]:
        """Close the open block, if any."""

    def _tool_key(self, part: ToolCallChunk) -> Any:
        key: int | str | None = part.get("index")
        if key is None:
            key = part.get("id")
        if key is None:  # a continuation without index or id belongs to the open call
            return self.open if self.open not in (None, "text") else 0
        return key

    def token(self, chunk: AIMessageChunk) -> list[ServerSentEvent]:
        out = self._text(chunk.text) if chunk.text else []
        for part in chunk.tool_call_chunks:
            key = self._tool_key(part)
            if key not in self.tools:
                self.tools.add(key)
                out += self._start_call(key, part.get("id"), part.get("name") or "")
            if key == self.open and (fragment := part.get("args")):
                out.append(self._arguments(fragment))
        return out

    def unstreamed(self, message: AIMessage) -> list[ServerSentEvent]:
        """What of the final message was not streamed, then the last block closed."""
        out = []
        if not self.sent_text and message.text:
            out += self._text(message.text)
        if message.tool_calls and not self.tools:
            for i, call in enumerate(message.tool_calls):
                out += self._start_call(("final", i), call.get("id"), call["name"])
                out.append(self._arguments(json.dumps(call.get("args") or {}, ensure_ascii=False)))
        return out + self._close()
