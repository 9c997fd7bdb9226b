"""A fake Ollama server: `POST /api/chat` in Ollama's own wire format, every request recorded.

Streaming replies are NDJSON lines (`{"message": {"content": ...}, "done": false}`, then one
`done: true` line with `prompt_eval_count` / `eval_count`), as the `ollama` client reads them. A
request that offers tools to a model named in `tool_replies` gets that tool call back, with the
arguments given (how the judge's function-calling structured output is answered).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import ThreadedServer


@dataclass
class OllamaRequest:
    model: str
    body: dict[str, Any]


@dataclass
class FakeOllama:
    """ASGI app. `replies`: model -> text; `tool_replies`: model -> tool arguments; `delays`:
    model -> seconds before the first byte. Token counts are words (input: every message)."""

    replies: dict[str, str] = field(default_factory=dict)
    tool_replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[OllamaRequest] = field(default_factory=list)

    def usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {"prompt_eval_count": prompt, "eval_count": max(1, len(text.split()))}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            event = await receive()
            raw += event.get("body", b"")
            if not event.get("more_body"):
                break
        if scope["path"] != "/api/chat":
            await self._send(send, 404, [json.dumps({"error": "not found"}).encode()])
            return
        body = json.loads(raw or b"{}")
        model = body.get("model", "")
        self.requests.append(OllamaRequest(model, body))
        await asyncio.sleep(self.delays.get(model, 0.0))
        lines = self._lines(model, body)
        if not body.get("stream", True):  # one JSON object: the last line with all the content
            final = dict(lines[-1])
            final["message"] = {
                **final["message"],
                "content": "".join(line["message"].get("content", "") for line in lines),
            }
            lines = [final]
        await self._send(send, 200, [json.dumps(line).encode() + b"\n" for line in lines])

    def _lines(self, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        base = {"model": model, "created_at": "2026-12-01T00:00:00Z"}
        tools = body.get("tools") or []
        if tools and model in self.tool_replies:
            args = self.tool_replies[model]
            call = {"function": {"name": tools[0]["function"]["name"], "arguments": args}}
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
            usage = self.usage(body, json.dumps(args))
            return [{**base, "message": message, "done": True, "done_reason": "stop", **usage}]
        text = self.replies.get(model, f"answer of {model}")
        words = text.split(" ")
        lines = [
            {
                **base,
                "message": {
                    "role": "assistant",
                    "content": w + (" " if i < len(words) - 1 else ""),
                },
                "done": False,
            }
            for i, w in enumerate(words)
        ]
        done = {"role": "assistant", "content": ""}
        lines.append(
            {**base, "message": done, "done": True, "done_reason": "stop", **self.usage(body, text)}
        )
        return lines

    @staticmethod
    async def _send(send: Any, status: int, chunks: list[bytes]) -> None:
        headers = [(b"content-type", b"application/x-ndjson")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class OllamaServer(ThreadedServer):
    """`with OllamaServer(FakeOllama(...)) as server: server.url` (Ollama's base URL)."""

    def __init__(self, app: FakeOllama) -> None:
        super().__init__(app, name="fake-ollama")
        self.fake = app
