"""Turn a ModelSpec into a LangChain chat model.

Every OpenAI-compatible endpoint (OpenAI, OpenRouter, the bundled llama.cpp server, any gateway)
goes through ChatOpenAI(base_url=...); every other provider LangChain's init_chat_model knows
(anthropic, ollama, groq, bedrock, ...) through init_chat_model, with its own client
(graph/providers.py). An `object:` spec names a caller's model object, which only the factory of a
graph built with `build_graph(models=...)` has (graph/model_objects.py): this one refuses it.
Models are built once per event loop and reused (`LoopModels`): every call on a loop shares one
httpx client and its keep-alive connections. Building a ChatOpenAI and opening a connection cost
several milliseconds of CPU per call, which sat on the run's critical path three times over.
Cancelling a call still closes its own connection (httpcore drops a connection whose request was
interrupted), so a cut straggler is really disconnected. A loop's models die with the loop;
`aclose_models()` closes them early, and sync node runs (one short-lived loop each) call it.
Their chat completion calls skip the SDK's per-call parameter transform, more CPU before each
call (`graph/compat_openai.py`, which falls back to the SDK's own path).

Retries are the openai SDK's (max_retries=2, so at most three attempts): 408/409/429/5xx,
connection errors and timeouts, with exponential backoff from 0.5 s (capped at 8 s, minus up to
25 % jitter), or exactly the server's Retry-After when it is at most 120 s (a longer Retry-After
is not retried at all). Other 4xx are never retried. The panel clock and the run's deadline cut a
call (and its pending retries) at their cutoff; one cut while retrying an HTTP error is reported
as that error (`track_upstream_status`). Every response body is capped at
`max_response_bytes()` (16 MiB, env FUSIONGRAPH_MAX_RESPONSE_BYTES), counted while it streams:
an upstream that sends more fails that call with `ResponseTooLarge` instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import importlib
import os
import ssl
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.http_pool import ShardedTransport
from fusiongraph.graph.prewarm import prewarm_pending, wait_client_prewarm
from fusiongraph.graph.providers import LANGCHAIN_PROVIDERS, OBJECT_PROVIDER, build_chat_model
from fusiongraph.graph.specs import ModelSpec, register_base_url
from fusiongraph.local_model.settings import local_base_url

# A factory may also have an async `prepare(specs)`: see `prepare_models`.
ModelFactory = Callable[[ModelSpec], BaseChatModel]

# `local:` specs talk to the bundled server, whose URL follows its port setting.
register_base_url("local", local_base_url)

# Sent on every inner call, so a fusion server can refuse being called from a fusion run: ours,
# and OpenRouter's own name for it (OpenRouter Fusion refuses to fuse again a call carrying it).
FUSION_DEPTH_HEADER = "X-Fusion-Depth"
OPENROUTER_DEPTH_HEADER = "x-openrouter-fusion-depth"
DEFAULT_CALL_TIMEOUT_S = 120.0
# The bundled llama.cpp server answers one request at a time: a call may queue behind the panel.
LOCAL_CALL_TIMEOUT_S = 600.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_RESPONSE_BYTES_ENV = "FUSIONGRAPH_MAX_RESPONSE_BYTES"


class ResponseTooLarge(Exception):
    """A model's HTTP response passed the byte cap (a runaway or hostile upstream)."""


def max_response_bytes() -> int:
    value = os.environ.get(MAX_RESPONSE_BYTES_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_RESPONSE_BYTES


class _CappedStream(httpx.AsyncByteStream):
    """The response body as it arrives, failing once more than `limit` bytes came in."""

    def __init__(self, stream: httpx.AsyncByteStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"the response passed the cap of {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _cap_response(response: httpx.Response) -> None:
    """httpx response hook (before the body is read): refuse or wrap the body stream."""
    limit = max_response_bytes()
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ResponseTooLarge(f"the response announces {length} bytes, over the cap of {limit}")
    if isinstance(response.stream, httpx.AsyncByteStream):
        response.stream = _CappedStream(response.stream, limit)


# What to call when the current task's next request leaves (nodes/scheduling.py).
_REQUEST_SENT: ContextVar[Callable[[], None] | None] = ContextVar(
    "fusion_request_sent", default=None
)


@contextlib.contextmanager
def on_request_sent(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` when a request of this task (or of tasks it starts) is handed to httpx."""
    token = _REQUEST_SENT.set(callback)
    try:
        yield
    finally:
        _REQUEST_SENT.reset(token)


async def _note_request_sent(request: httpx.Request) -> None:
    """httpx request hook: the request is built and about to go out."""
    callback = _REQUEST_SENT.get()
    if callback is not None:
        callback()


class UpstreamStatus:
    """The HTTP status of the last upstream response a task got. A call cut off while the SDK
    retries (after a 500 or a 429) is then reported as the error it was retrying after, not as
    a slow upstream."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None


_LAST_STATUS: ContextVar[UpstreamStatus | None] = ContextVar("fusion_last_status", default=None)


@contextlib.contextmanager
def track_upstream_status() -> Iterator[UpstreamStatus]:
    """Record the status of every response of this task (and of tasks it starts) in the holder."""
    seen = UpstreamStatus()
    token = _LAST_STATUS.set(seen)
    try:
        yield seen
    finally:
        _LAST_STATUS.reset(token)


async def _note_response(response: httpx.Response) -> None:
    """httpx response hook: remember the status for `track_upstream_status`."""
    seen = _LAST_STATUS.get()
    if seen is not None:
        seen.status = response.status_code


def reports_sends(model: Any) -> bool:
    """Whether this model's HTTP client calls `on_request_sent` callbacks (ours do)."""
    client = getattr(model, "http_async_client", None)
    return isinstance(client, httpx.AsyncClient) and any(
        hook is _note_request_sent for hook in client.event_hooks["request"]
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context shared by every model's client (same settings as httpx's
    default). Building one loads the CA bundle: 20-40 ms of CPU, five to ten times per run."""
    return httpx.create_ssl_context()


class LoopModels:
    """A cache of the chat models of one event loop and the one HTTP client they share.

    Process-wide, one per event loop (`_MODEL_CACHES`), on purpose: building a model and
    its client costs milliseconds of CPU and a client's pooled connections are what later runs
    reuse, while an HTTP client belongs to the loop it was opened on. Bounded (MAX_MODELS specs
    per loop, dropped with its loop) and safe across runs, which only read a model (a call
    carries its own settings), and across workers, each of which has its own.
    """

    MAX_MODELS = 256  # distinct specs kept per loop (about 8 KiB each; requests may vary them)

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._models: OrderedDict[tuple[str, str], BaseChatModel] = OrderedDict()
        self._quiet: dict[int, BaseChatModel] = {}  # id(model) -> its non-streaming copy

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = _http_client(DEFAULT_CALL_TIMEOUT_S)
        return self._client

    def get(self, spec: ModelSpec) -> BaseChatModel:
        key = (spec.model_dump_json(), _api_key(spec))
        model = self._models.get(key)
        if model is None:
            model = _build_model(spec, self.client())
            self._models[key] = model
            if len(self._models) > self.MAX_MODELS:
                _, evicted = self._models.popitem(last=False)
                self._quiet.pop(id(evicted), None)
        else:
            self._models.move_to_end(key)
        return model

    def quiet(self, model: BaseChatModel) -> BaseChatModel | None:
        """The cached non-streaming copy of a model of this loop (None for a foreign model)."""
        if not any(m is model for m in self._models.values()):
            return None
        copy = self._quiet.get(id(model))
        if copy is None:
            copy = self._quiet[id(model)] = model.model_copy(update={"disable_streaming": True})
        return copy

    def owns(self, client: object) -> bool:
        return client is not None and client is self._client

    async def aclose(self) -> None:
        self._models.clear()
        self._quiet.clear()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


_MODEL_CACHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopModels] = (
    weakref.WeakKeyDictionary()
)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def loop_models() -> LoopModels | None:
    """The model cache of the running event loop (None outside one)."""
    loop = _running_loop()
    if loop is None:
        return None
    models = _MODEL_CACHES.get(loop)
    if models is None:
        models = _MODEL_CACHES[loop] = LoopModels()
    return models


async def aclose_models() -> None:
    """Close the running loop's shared HTTP client and forget its models (before a loop ends)."""
    loop = _running_loop()
    models = _MODEL_CACHES.pop(loop, None) if loop is not None else None
    if models is not None:
        await models.aclose()


@functools.cache
def sync_http_client() -> httpx.Client:
    """The one client of every model's synchronous path (the nodes call models async only).

    Without it, langchain-openai builds and caches a sync client per base URL and timeout, and
    building one loads the CA bundle again: about 40 ms on a process's first run, and again on
    the first run of every new endpoint, for a client the graph never calls.
    """
    return httpx.Client(
        timeout=DEFAULT_CALL_TIMEOUT_S,
        verify=_tls_context(),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        cookies=_NoCookies(),
    )


def _http_client(timeout: float) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        timeout=timeout,
        # The SDK sets each request's own timeout; a pool limit would only queue a busy server's
        # calls behind each other, so connections are unbounded, in a few small pools.
        transport=ShardedTransport(verify=_tls_context()),
        verify=_tls_context(),  # for a proxy from the environment (HTTPS_PROXY, ...)
        event_hooks={"request": [_note_request_sent], "response": [_note_response, _cap_response]},
        cookies=_NoCookies(),
    )
    return client


class _NoCookies(http.cookiejar.CookieJar):
    """A shared client keeps no cookies: one upstream's cookies must never ride along on another
    run's (or another tenant's) requests. It also skips cookie parsing on every response."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Any) -> None:
        return None


def _api_key(spec: ModelSpec) -> str:
    key_env = spec.resolved_key_env()
    return (os.environ.get(key_env, "") if key_env else "") or "not-needed"


class DefaultModelFactory:
    """The real chat models. Its `prepare` hook starts what they talk to: the bundled local model
    server, when the plan has a `local:` spec (graph/ reaches the local model only here)."""

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        """The real chat model for a spec, reused on the running event loop (keys are read from
        the environment on every call, so a changed key builds a new model)."""
        if spec.provider == OBJECT_PROVIDER:
            raise _no_object(spec)
        models = loop_models()
        if models is None:  # no loop yet: a model of its own, closed by close_model
            return _build_model(spec, _http_client(_timeout(spec)))
        return models.get(spec)

    async def prepare(self, specs: Iterable[ModelSpec]) -> None:
        """Start (or reuse) the local model server when a spec needs it, off the event loop."""
        for spec in specs:
            if spec.provider == OBJECT_PROVIDER:
                raise _no_object(spec)
        if prewarm_pending():  # the client stack a graph build started loading (prewarm.py)
            await asyncio.to_thread(wait_client_prewarm)
        local = [spec.model for spec in specs if spec.provider == "local"]
        if local:
            from fusiongraph.local_model.launcher import aensure_local_server
            from fusiongraph.local_model.settings import LocalModelMissing

            try:
                await aensure_local_server(models=local)
            except LocalModelMissing as exc:  # what to install: the caller's to fix, not a crash
                raise FusionConfigError("local", str(exc)) from None


default_model_factory = DefaultModelFactory()


async def prepare_models(model_factory: ModelFactory, specs: Iterable[ModelSpec]) -> None:
    """Await the factory's optional `prepare(specs)` hook before any model of the plan is built
    or called (a plain callable, like the tests' fakes, has none)."""
    prepare = getattr(model_factory, "prepare", None)
    if prepare is not None:
        await prepare(list(specs))


def _timeout(spec: ModelSpec) -> float:
    default = LOCAL_CALL_TIMEOUT_S if spec.provider == "local" else DEFAULT_CALL_TIMEOUT_S
    return spec.timeout_s or default


# A typical reply of each kind, parsed once to build the SDK's response types (see below).
_SAMPLE_COMPLETION: dict[str, Any] = {
    "id": "warm",
    "object": "chat.completion",
    "created": 0,
    "model": "warm",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
_SAMPLE_CHUNK: dict[str, Any] = {
    "id": "warm",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "warm",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@functools.cache
def prewarm_clients() -> None:
    """Load what a default model's first build loads (`_build_model`), without a request: the
    client libraries, the CA bundle, anyio's backend and the SDK's types. graph/prewarm.py runs
    it in the background when a graph is built."""
    from langchain_openai import ChatOpenAI

    from fusiongraph.graph.compat_openai import send_directly

    _tls_context()  # the CA bundle, shared by every client
    sync_http_client()
    warm_client_stack()  # anyio's backend, the SDK's response types
    # One throwaway model (no request is made) builds ChatOpenAI's validators and the SDK
    # client classes the first real build would build.
    model = ChatOpenAI(
        model="prewarm",
        api_key=SecretStr("prewarm"),
        base_url="http://127.0.0.1:9/v1",
        http_client=sync_http_client(),
        http_async_client=_http_client(DEFAULT_CALL_TIMEOUT_S),
    )
    send_directly(model)


@functools.cache
def warm_client_stack() -> None:
    """Do once, when the process builds its first model (dispatch, before any panelist's clock
    starts), what its first request would otherwise do lazily on a panelist's clock: anyio
    imports its asyncio backend on its first use (httpcore's first connection), langchain-core
    its message block translators on its first call, and the openai SDK builds each response
    type's pydantic schema when it first parses one (its models defer their build)."""
    import anyio
    import anyio.lowlevel

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the background prewarm thread: a throwaway loop of anyio's own
        anyio.run(anyio.lowlevel.checkpoint)
    else:
        anyio.current_time()  # any anyio call on a running loop loads its backend
    for name in (
        "langchain_core.messages.block_translators.langchain_v0",
        "langchain_core.messages.block_translators.openai",
    ):
        importlib.import_module(name)
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    ChatCompletion.construct(**_SAMPLE_COMPLETION)
    ChatCompletionChunk.construct(**_SAMPLE_CHUNK)


def _no_object(spec: ModelSpec) -> FusionConfigError:
    return FusionConfigError(
        "models",
        f"{spec.name} names a model object, which only a graph built with "
        f"build_graph(models={{{spec.model!r}: <chat model>}}) has (a request, an alias or the "
        "CLI cannot carry one)",
    )


def _build_model(spec: ModelSpec, client: httpx.AsyncClient) -> BaseChatModel:
    if spec.provider in LANGCHAIN_PROVIDERS:  # ollama, groq, bedrock, ...: their own clients
        return build_chat_model(spec, _timeout(spec))
    from langchain_openai import ChatOpenAI

    from fusiongraph.graph.compat_openai import send_directly
    from fusiongraph.graph.reasoning import chat_openai_kwargs

    warm_client_stack()
    timeout = _timeout(spec)
    kwargs: dict[str, Any] = {}
    if spec.seed is not None:
        kwargs["seed"] = spec.seed
    if spec.provider == "openrouter":
        # Ask OpenRouter to report the real cost of each call in `usage.cost`.
        kwargs["extra_body"] = {"usage": {"include": True}}
    # The spec's reasoning effort, in the form its endpoint reads (graph/reasoning.py).
    reasoning = chat_openai_kwargs(spec)
    if "extra_body" in reasoning:
        kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **reasoning.pop("extra_body")}
    kwargs.update(reasoning)
    model = ChatOpenAI(
        model=spec.model,
        base_url=spec.resolved_base_url(),
        api_key=SecretStr(_api_key(spec)),
        temperature=spec.temperature,
        max_completion_tokens=spec.max_tokens,  # the field max_tokens, by its alias
        timeout=timeout,
        max_retries=2,
        stream_usage=True,
        stream_chunk_timeout=timeout,
        default_headers={
            FUSION_DEPTH_HEADER: "1",
            OPENROUTER_DEPTH_HEADER: "1",
            "X-Title": "fusiongraph",
        },
        http_async_client=client,
        http_client=sync_http_client(),
        **kwargs,
    )
    send_directly(model)  # the SDK's transform skipped (graph/compat_openai.py)
    return model


def quiet(model: BaseChatModel) -> BaseChatModel:
    """Never stream this model's calls (panel, judge): one response, no per-chunk timeouts, and
    no tokens of it can reach the caller's answer stream. A copy: the model may be shared."""
    models = loop_models()
    copy = models.quiet(model) if models is not None else None
    return copy or model.model_copy(update={"disable_streaming": True})


async def close_model(model: Any) -> None:
    """Close the HTTP client a model owns (a no-op for shared clients, fakes and wrappers). Only
    a client this module made is closed: a caller's model object keeps the client it came with."""
    client = getattr(model, "http_async_client", None)
    loop = _running_loop()
    shared = loop is not None and loop in _MODEL_CACHES and _MODEL_CACHES[loop].owns(client)
    if isinstance(client, httpx.AsyncClient) and not shared and reports_sends(model):
        await client.aclose()
