"""A fault-injecting OpenAI-compatible upstream: a real HTTP/1.1 server on 127.0.0.1.

Written on raw asyncio streams rather than an ASGI framework so it can misbehave at the byte
level: reset a connection, cut a chunked body half-way, stream 50 MB. The fault is chosen by the
model name: its part before the first "." is the mode, so `ok.1` and `ok.2` are two models that
both answer normally and are counted apart.

Modes:
    ok            answers (JSON or SSE); a judge call gets a valid analysis
    err500        500 every time
    flaky500      500 once, then ok
    flaky429      429 with `Retry-After: 1` once, then ok
    ratelimit     429 every time, `Retry-After: 0.2`
    slow429       429 every time, `Retry-After: 30` (longer than any test's panel timeout)
    bad400        400 every time (must not be retried)
    hang          never answers; holds the connection until the client leaves
    slowfirst     the first request hangs (until the client's timeout), then ok
    reset         resets the connection (RST) before answering, every time
    flakyreset    resets once, then ok
    malformed     200 application/json whose body is not JSON
    ssecut        streams a few chunks, then drops the connection mid-body (no [DONE])
    huge          a 50 MB answer, chunked transfer encoding (no Content-Length)
    hugecl        a 50 MB answer announced by Content-Length
    judgejunk     valid JSON that is not an analysis (wrong keys, wrong types) for every call
    judgegarbage  text that is not JSON at all for every call

Every chat request is counted per model (`counts`, `arrivals`), and `sent` counts the body bytes
written per model, so a test can show that a client stopped reading a huge answer early.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

from tests.support.upstream import classify

HUGE_BYTES = 50 * 1024 * 1024
_PIECE = 1024 * 1024


def answer_text(model: str) -> str:
    """What a healthy model says: its name is in it, so tests can find each answer."""
    return f"ANSWER from {model}: water boils at a lower temperature at altitude."


def _analysis(body: dict[str, Any]) -> str:
    text = json.dumps(body.get("messages") or [])
    labels = [c for c in "ABCDEFGH" if f"Response {c}" in text] or ["A"]
    return json.dumps(
        {
            "consensus": ["Lower pressure lowers the boiling point."],
            "contradictions": [],
            "partial_coverage": [{"point": "Cooking takes longer", "panelists": labels[:1]}],
            "unique_insights": [{"panelist": labels[-1], "insight": "Pressure cookers help."}],
            "blind_spots": [],
        }
    )


class FaultUpstream:
    """Serve the modes above from a background thread with its own event loop."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.sent: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def _close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ protocol

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, body = request
                keep = await self._route(method, path, body, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection must not be reused."""
        if method == "GET" and path.rstrip("/") == "/v1/models":
            await _send_json(writer, 200, {"object": "list", "data": []})
            return True
        if method != "POST" or path.rstrip("/") != "/v1/chat/completions":
            await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            await _send_json(writer, 400, {"error": {"message": "invalid JSON"}})
            return True
        model = str(body.get("model", ""))
        self.counts[model] += 1
        self.arrivals[model].append(time.monotonic())
        nth = self.counts[model]
        mode = model.split(".", 1)[0]
        if mode == "err500" or (mode == "flaky500" and nth == 1):
            await _send_json(writer, 500, _error("upstream exploded", "server_error"))
            return True
        if mode == "flaky429" and nth == 1:
            await _send_json(writer, 429, _error("slow down", "rate_limit"), {"Retry-After": "1"})
            return True
        if mode in ("ratelimit", "slow429"):
            after = "0.2" if mode == "ratelimit" else "30"
            await _send_json(writer, 429, _error("slow down", "rate_limit"), {"Retry-After": after})
            return True
        if mode == "bad400":
            await _send_json(writer, 400, _error("unsupported parameter", "invalid_request"))
            return True
        if mode == "hang" or (mode == "slowfirst" and nth == 1):
            await _wait_gone(reader)
            self.disconnects[model] += 1
            return False
        if mode == "reset" or (mode == "flakyreset" and nth == 1):
            _reset(writer)
            return False
        if mode == "malformed":
            data = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "half'
            await _send_raw(writer, 200, data)
            return True
        if mode in ("huge", "hugecl"):
            return await self._huge(writer, model, body, chunked=mode == "huge")
        if mode == "judgejunk":
            content = json.dumps(
                {"verdict": "all good", "consensus": {"a": 1}, "contradictions": "none"}
            )
        elif mode == "judgegarbage":
            content = "<<< I refuse to emit JSON >>> ]]} {{ nope"
        elif classify(body) == "judge":
            content = _analysis(body)
        else:
            content = answer_text(model)
        if body.get("stream"):
            return await self._stream(writer, model, body, content, cut=mode == "ssecut")
        if mode == "ssecut":  # a non-streamed call to it is cut the same way
            data = json.dumps(_completion(model, content)).encode()
            writer.write(_head(200, {"Content-Length": str(len(data))}) + data[: len(data) // 2])
            await writer.drain()
            _reset(writer)
            return False
        await _send_json(writer, 200, _completion(model, content))
        return True

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        body: dict[str, Any],
        content: str,
        *,
        cut: bool,
    ) -> bool:
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        writer.write(
            _head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
        )
        words = content.split(" ")
        events = [_chunk(cid, model, {"role": "assistant", "content": ""})]
        events += [_chunk(cid, model, {"content": w + " "}) for w in words]
        if cut:
            for event in events[: max(2, len(events) // 2)]:
                writer.write(_chunked(event))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b'400\r\ndata: {"id": "half')  # a chunk that never ends
            await writer.drain()
            _reset(writer)
            return False
        events.append(_chunk(cid, model, {}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 0}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            events.append(
                b"data: "
                + json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        for event in events:
            writer.write(_chunked(event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _huge(
        self, writer: asyncio.StreamWriter, model: str, body: dict[str, Any], *, chunked: bool
    ) -> bool:
        """50 MB of answer, written in 1 MB pieces until done or the client goes away."""
        prefix = json.dumps(_completion(model, "@@"), separators=(",", ":")).encode()
        head_part, tail_part = prefix.split(b"@@")
        total = len(head_part) + HUGE_BYTES + len(tail_part)
        headers = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(total)}
        headers["Content-Type"] = "application/json"
        pieces = [head_part, *([b"x" * _PIECE] * (HUGE_BYTES // _PIECE)), tail_part]
        try:
            writer.write(_head(200, headers))
            for piece in pieces:
                writer.write(_chunked(piece) if chunked else piece)
                await writer.drain()
                self.sent[model] += len(piece)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            self.disconnects[model] += 1
            return False
        return True


# ---------------------------------------------------------------------------------- helpers


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, path.split("?", 1)[0], body


async def _wait_gone(reader: asyncio.StreamReader) -> None:
    """Hold the request until the client closes its side."""
    while await reader.read(65536):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), like a crashed proxy."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(
        status, "Internal Server Error"
    )
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _send_raw(
    writer: asyncio.StreamWriter, status: int, data: bytes, headers: dict[str, str] | None = None
) -> None:
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    writer.write(_head(status, {**all_headers, **(headers or {})}) + data)
    await writer.drain()


async def _send_json(
    writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    await _send_raw(writer, status, json.dumps(payload).encode(), headers)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
