"""Turn a ModelSpec into a LangChain chat model.

Every OpenAI-compatible endpoint (OpenAI, OpenRouter, the bundled llama.cpp server, any gateway)
goes through ChatOpenAI(base_url=...); Anthropic through ChatAnthropic (langchain-anthropic).
Each model gets its own async HTTP client, closed by `close_model`, so a cancelled run closes its
connections and sync callers (one event loop per thread) never share a client across loops.

Retries are the openai SDK's (max_retries=2, so at most three attempts): 408/409/429/5xx,
connection errors and timeouts, with exponential backoff from 0.5 s (capped at 8 s, minus up to
25 % jitter), or exactly the server's Retry-After when it is at most 120 s (a longer Retry-After
is not retried at all). Other 4xx are never retried. The panel clock and the run's deadline cut a
call (and its pending retries) at their cutoff. Every response body is capped at
`max_response_bytes()` (16 MiB, env FUSIONGRAPH_MAX_RESPONSE_BYTES), counted while it streams:
an upstream that sends more fails that call with `ResponseTooLarge` instead of filling memory.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel

from fusiongraph.graph.specs import ModelSpec

ModelFactory = Callable[[ModelSpec], BaseChatModel]

# Sent on every inner call, so a fusion server can refuse being called from a fusion run.
FUSION_DEPTH_HEADER = "X-Fusion-Depth"
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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context shared by every model's client (same settings as httpx's
    default). Building one loads the CA bundle: 20-40 ms of CPU, five to ten times per run."""
    return httpx.create_ssl_context()


def default_model_factory(spec: ModelSpec) -> BaseChatModel:
    """Build the real chat model for a spec (keys are read from the environment here)."""
    default = LOCAL_CALL_TIMEOUT_S if spec.provider == "local" else DEFAULT_CALL_TIMEOUT_S
    timeout = spec.timeout_s or default
    if spec.provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model=spec.model,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens or 4096,
            timeout=timeout,
            max_retries=2,
        )
    from langchain_openai import ChatOpenAI

    key_env = spec.resolved_key_env()
    api_key = os.environ.get(key_env, "") if key_env else ""
    kwargs: dict[str, Any] = {}
    if spec.seed is not None:
        kwargs["seed"] = spec.seed
    if spec.provider == "openrouter":
        # Ask OpenRouter to report the real cost of each call in `usage.cost`.
        kwargs["extra_body"] = {"usage": {"include": True}}
    return ChatOpenAI(
        model=spec.model,
        base_url=spec.resolved_base_url(),
        api_key=api_key or "not-needed",
        temperature=spec.temperature,
        max_tokens=spec.max_tokens,
        timeout=timeout,
        max_retries=2,
        stream_usage=True,
        stream_chunk_timeout=timeout,
        default_headers={FUSION_DEPTH_HEADER: "1", "X-Title": "fusiongraph"},
        http_async_client=httpx.AsyncClient(
            timeout=timeout,
            verify=_tls_context(),
            event_hooks={"response": [_cap_response]},
        ),
        **kwargs,
    )


def quiet(model: BaseChatModel) -> BaseChatModel:
    """Never stream this model's calls (panel, judge): one response, no per-chunk timeouts, and
    no tokens of it can reach the caller's answer stream."""
    model.disable_streaming = True
    return model


async def close_model(model: Any) -> None:
    """Close the HTTP client a model owns (a no-op for fakes and wrappers)."""
    client = getattr(model, "http_async_client", None)
    if isinstance(client, httpx.AsyncClient):
        await client.aclose()
