"""A fake OpenAI-compatible upstream: known latencies, real HTTP, full records.

The benchmark's instrument (bench/fake_upstream.py runs it as a process) and the tests' stand-in
for a provider. It speaks /v1/chat/completions (JSON, and SSE streaming with `data: {chunk}`
lines, a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`) and
/v1/models, on 127.0.0.1.

Latency per model: an explicit `Behaviour` per model name, or encoded in the name:
`<anything>-<seconds>s` (e.g. `p1-0.300s`) takes that long in total; a name containing `never`
never answers and holds the request until the client disconnects; one containing `stall`
streams its first piece, then only SSE keep-alive comments until the client leaves. A panel
model whose name holds
`-ans<X>-` (e.g. `p1-ans42-1.000s`) ends its answer with "Answer: <X>.", so panelists can be made
to agree (the same X) or disagree (different ones) on a short final answer; without it every
panel answer is the same text but for the model's name. Streaming answers come in
`chunks` pieces `chunk_delay_s` apart; the first content chunk leaves at
`total - (chunks - 1) * chunk_delay_s` after arrival, so streamed and non-streamed calls of one
model take equally long.

Every request is recorded (`RequestRecord`): arrival, first content chunk sent, completion, and
whether the client went away first (so a benchmark can check that stragglers are cancelled).
Times are `time.monotonic()`, which on Linux is the system-wide CLOCK_MONOTONIC and so comparable
with the benchmark's own clock across processes. A `[bench:<tag>]` marker anywhere in the
messages tags the request so concurrent runs can be told apart. Judge calls (detected by
`response_format` or the judge's system prompt) get a valid analysis JSON.
GET /_bench/requests?since=ID returns the records, DELETE /_bench/requests clears them.
A `Behaviour(content=...)` scripts what a model answers (a hostile answer, say); each record
keeps the last user message's text (`question`). Each record also says how many image_url parts
the request held and how many omitted-image notes its text did (`images`, `image_notes`), and
which `reasoning_effort` / `reasoning` it sent (`options`); `FakeUpstream(reasoning_tokens=N)`
reports N reasoning tokens (completion_tokens_details) for every request that asked for a
reasoning effort.

In-process: `UpstreamServer` (uvicorn in a thread). As a process: `python -m bench.fake_upstream`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fusiongraph.nodes import prompts, verify_judge
from fusiongraph.nodes.images import IMAGE_OMITTED
from tests.support.servers import ThreadedServer, bind

_LATENCY_RE = re.compile(r"(\d+(?:\.\d+)?)s$")
_TAG_RE = re.compile(r"\[bench:([\w.-]+)\]")
_ANSWER_RE = re.compile(r"-ans([A-Za-z0-9.]+?)(?=-|$)")
_LABEL_RE = re.compile(r"Response ([A-Z]):")
_JUDGE_MARK = prompts.JUDGE[:48]
_SYNTHESIS_MARK = prompts.SYNTHESIS[:48]
# verify's judge call (nodes/verify_judge.py): tests for code, a program for math.
_VERIFY_MARKS = (verify_judge.TESTS_PROMPT[:48], verify_judge.PROGRAM_PROMPT[:48])
RECORDED_OPTIONS = (
    "response_format",
    "usage",
    "tools",
    "tool_choice",
    "reasoning_effort",
    "reasoning",
)

PANEL_TEXT = (
    "Water boils at a lower temperature at high altitude because the air pressure is lower, so "
    "the vapour pressure of water reaches the surrounding pressure sooner. At about 3,000 m it "
    "boils near 90 °C, which is why cooking takes longer there and pressure cookers help. "
)
SYNTHESIS_TEXT = (
    "At altitude the atmospheric pressure drops, so water reaches its boiling point at a lower "
    "temperature: roughly 1 °C less for every 300 m of climb, about 90 °C at 3,000 m. Food "
    "therefore cooks more slowly, and a pressure cooker restores the higher temperature."
)


@dataclass(frozen=True)
class Behaviour:
    """How one model answers: time to its first content chunk, then `chunks` pieces."""

    ttft_s: float
    chunks: int = 10
    chunk_delay_s: float = 0.01
    never: bool = False
    stall: bool = False  # streamed: the first piece, then keep-alive comments only
    content: str | None = None  # the answer's text (panel or synthesis), when a test scripts it

    @property
    def total_s(self) -> float:
        return self.ttft_s + (self.chunks - 1) * self.chunk_delay_s


@dataclass
class RequestRecord:
    """What the upstream saw of one request (monotonic seconds)."""

    id: int
    model: str
    role: str  # panel | judge | synthesis
    tag: str | None
    stream: bool
    arrival: float
    first_chunk: float | None = None  # first content chunk sent (non-streamed: the body)
    done: float | None = None  # response finished, or the client left
    disconnected: bool = False  # the client went away before the response was complete
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens (reported when the request asked to reason)
    images: int = 0  # image_url parts in the request's messages
    image_notes: int = 0  # the omitted-image note in its text (nodes/images.py)
    # Body fields beyond the messages that a caller may want to check (response_format, ...).
    options: dict[str, Any] = field(default_factory=dict)
    question: str = ""  # the last user message's text: what the caller asked
    headers: dict[str, str] = field(default_factory=dict)  # as sent, names lower-cased

    @property
    def duration(self) -> float | None:
        return None if self.done is None else self.done - self.arrival

    @property
    def ttft(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.arrival


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def classify(body: dict[str, Any]) -> str:
    """panel, judge or synthesis, from the request the fusion graph sent."""
    messages = body.get("messages") or []
    system = " ".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_schema", "json_object") or _JUDGE_MARK in system or _asks_verify(system):
        return "judge"
    if _SYNTHESIS_MARK in system:
        return "synthesis"
    return "panel"


def _asks_verify(system: str) -> bool:
    return any(mark in system for mark in _VERIFY_MARKS)


def _system(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return " ".join(_text(m.get("content")) for m in messages if m.get("role") == "system")


def judge_json(body: dict[str, Any]) -> str:
    """A valid analysis for the labels the judge prompt shows (Response A, B, ...)."""
    text = " ".join(_text(m.get("content")) for m in body.get("messages") or [])
    labels = sorted(set(_LABEL_RE.findall(text))) or ["A"]
    analysis = {
        "consensus": ["Water boils at a lower temperature at altitude because pressure is lower."],
        "contradictions": [
            {
                "topic": "The boiling point at 3,000 m",
                "stances": [
                    {"panelist": x, "stance": f"about {89 + i} °C"}
                    for i, x in enumerate(labels[:2])
                ],
            }
        ]
        if len(labels) > 1
        else [],
        "partial_coverage": [{"point": "Cooking takes longer", "panelists": labels[:1]}],
        "unique_insights": [{"panelist": labels[-1], "insight": "Pressure cookers compensate."}],
        "blind_spots": ["Dissolved salt raises the boiling point only slightly."],
    }
    if "best_reason" in _system(body) + json.dumps(body.get("response_format") or {}):
        # asked to select (nodes/aggregation.py): an opinion, the first response it was shown
        analysis.update(best=labels[0], best_reason="It reads as the most complete.")
    return json.dumps(analysis)


def panel_text(model: str) -> str:
    """A panel answer; with `-ans<X>-` in the model's name it commits to the final answer X."""
    answer = _ANSWER_RE.search(model)
    final = f"Answer: {answer.group(1)}." if answer else ""
    return f"[{model}] {PANEL_TEXT}{final}"


class _Connection:
    """Watches one request's ASGI `receive` for the client going away."""

    def __init__(self, receive: Any) -> None:
        self.gone = asyncio.Event()
        self.finished = False
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.gone.set()
                return

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the client leaves first; False when it did."""
        if self.gone.is_set():
            return False
        if seconds <= 0:
            return True
        if math.isinf(seconds):
            await self.gone.wait()
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.gone.wait()
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.finished = True
        self._task.cancel()


class FakeUpstream:
    """The ASGI app. `models` maps names to behaviours; other names are parsed (see module doc)."""

    def __init__(
        self,
        models: dict[str, Behaviour] | None = None,
        *,
        chunks: int = 10,
        chunk_delay_s: float = 0.01,
        default_latency_s: float = 0.0,
        reasoning_tokens: int = 0,
    ) -> None:
        self.models = dict(models or {})
        # Reported (completion_tokens_details.reasoning_tokens) by each request that asks for a
        # reasoning effort (`reasoning_effort`, or OpenRouter's `reasoning.effort`), not "none".
        self.reasoning_tokens = reasoning_tokens
        self.chunks = chunks
        self.chunk_delay_s = chunk_delay_s
        self.default_latency_s = default_latency_s
        self.records: list[RequestRecord] = []
        self._next_id = 1

    def behaviour(self, model: str) -> Behaviour:
        if model in self.models:
            return self.models[model]
        if "never" in model:
            return Behaviour(ttft_s=float("inf"), never=True)
        if "stall" in model:
            return Behaviour(ttft_s=0.0, stall=True)
        match = _LATENCY_RE.search(model)
        total = float(match.group(1)) if match else self.default_latency_s
        spread = (self.chunks - 1) * self.chunk_delay_s
        if total < spread:
            return Behaviour(ttft_s=total, chunks=self.chunks, chunk_delay_s=0.0)
        return Behaviour(
            ttft_s=total - spread, chunks=self.chunks, chunk_delay_s=self.chunk_delay_s
        )

    def records_since(self, since: int = 0) -> list[RequestRecord]:
        return [r for r in list(self.records) if r.id > since]

    def clear(self) -> None:
        self.records.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == "/v1/chat/completions" and method == "POST":
            await self._chat(scope, receive, send)
        elif path == "/v1/models" and method == "GET":
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "bench"}
                for name in self.models
            ]
            await _json(send, 200, {"object": "list", "data": data})
        elif path == "/_bench/requests" and method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode())
            since = int(query.get("since", ["0"])[0])
            await _json(send, 200, [_record_dict(r) for r in self.records_since(since)])
        elif path == "/_bench/requests" and method == "DELETE":
            self.clear()
            await _json(send, 200, {"cleared": True})
        elif path == "/health":
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})

    async def _chat(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        arrival = time.monotonic()
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            await _json(send, 400, {"error": {"message": "invalid JSON", "type": "bad_request"}})
            return
        model = str(body.get("model", ""))
        text = " ".join(_text(m.get("content")) for m in body.get("messages") or [])
        tag = _TAG_RE.search(text)
        record = RequestRecord(
            id=self._next_id,
            model=model,
            role=classify(body),
            tag=tag.group(1) if tag else None,
            stream=bool(body.get("stream")),
            arrival=arrival,
            prompt_tokens=max(1, len(text) // 4),
            options={k: body[k] for k in RECORDED_OPTIONS if k in body},
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            images=_image_parts(body),
            image_notes=text.count(IMAGE_OMITTED),
            question=_last_user_text(body),
        )
        self._next_id += 1
        self.records.append(record)
        scripted = self.behaviour(model).content
        if record.role == "judge" and scripted is not None and _asks_verify(_system(body)):
            content = scripted  # a judge scripted with verify's tests (or program) writes them
        elif record.role == "judge":
            content = judge_json(body)
        elif scripted is not None:
            content = scripted
        elif record.role == "synthesis":
            content = SYNTHESIS_TEXT
        else:
            content = panel_text(model)
        record.completion_tokens = max(1, len(content) // 4)
        if _asks_to_reason(body):
            record.reasoning_tokens = self.reasoning_tokens
            record.completion_tokens += self.reasoning_tokens
        conn = _Connection(receive)
        try:
            if record.stream:
                await self._stream(send, conn, record, body, content)
            else:
                await self._complete(send, conn, record, content)
        finally:
            conn.close()
            if record.done is None:
                record.done = time.monotonic()

    async def _complete(
        self, send: Any, conn: _Connection, record: RequestRecord, content: str
    ) -> None:
        behaviour = self.behaviour(record.model)
        if not await conn.sleep(behaviour.total_s):
            record.disconnected = True
            return
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(record),
        }
        conn.finished = True
        record.first_chunk = time.monotonic()
        await _json(send, 200, body)
        record.done = time.monotonic()

    async def _stream(
        self,
        send: Any,
        conn: _Connection,
        record: RequestRecord,
        body: dict[str, Any],
        content: str,
    ) -> None:
        behaviour = self.behaviour(record.model)
        if not await conn.sleep(behaviour.ttft_s):
            record.disconnected = True
            return
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        pieces = _split(content, behaviour.chunks)
        await _body(send, chunk({"role": "assistant", "content": "", "refusal": None}))
        for i, piece in enumerate(pieces):
            if i and not await conn.sleep(behaviour.chunk_delay_s):
                record.disconnected = True
                return
            await _body(send, chunk({"content": piece}))
            if i == 0:
                record.first_chunk = time.monotonic()
            while behaviour.stall:  # bytes keep flowing, content does not
                if not await conn.sleep(0.05):
                    record.disconnected = True
                    return
                await _body(send, b": keep-alive\n\n")
        tail = chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "choices": [],
                "usage": _usage(record),
            }
            tail += b"data: " + json.dumps(usage).encode() + b"\n\n"
        conn.finished = True
        await _body(send, tail + b"data: [DONE]\n\n", more=False)
        record.done = time.monotonic()


def _split(text: str, parts: int) -> list[str]:
    parts = max(1, parts)
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def _image_parts(body: dict[str, Any]) -> int:
    return sum(
        1
        for m in body.get("messages") or []
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def _asks_to_reason(body: dict[str, Any]) -> bool:
    effort = body.get("reasoning_effort") or (body.get("reasoning") or {}).get("effort")
    return bool(effort) and effort != "none"


def _usage(record: RequestRecord) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens,
    }
    if record.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": record.reasoning_tokens}
    return usage


def _record_dict(record: RequestRecord) -> dict[str, Any]:
    return asdict(record)


async def _body(send: Any, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _json(send: Any, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


# How the upstream runs under uvicorn, in a thread or as a process (bench/fake_upstream.py).
UVICORN_CONFIG: dict[str, Any] = {"access_log": False, "backlog": 2048, "timeout_keep_alive": 30}


class UpstreamServer(ThreadedServer):
    """Serve a FakeUpstream from a background thread (its own event loop) on 127.0.0.1."""

    start_timeout_s = 10.0

    def __init__(self, app: FakeUpstream | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__(
            app or FakeUpstream(), bind(host, port), name="fake-upstream", **UVICORN_CONFIG
        )

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"
