"""Turn a ModelSpec into a LangChain chat model.

Every OpenAI-compatible endpoint (OpenAI, OpenRouter, the bundled llama.cpp server, any gateway)
goes through ChatOpenAI(base_url=...); Anthropic through ChatAnthropic (langchain-anthropic).
Each model gets its own async HTTP client, closed by `close_model`, so a cancelled run closes its
connections and sync callers (one event loop per thread) never share a client across loops.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable
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
        http_async_client=httpx.AsyncClient(timeout=timeout, verify=_tls_context()),
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
