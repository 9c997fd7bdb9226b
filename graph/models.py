"""Turn a ModelSpec into a LangChain chat model.

Every OpenAI-compatible endpoint (OpenAI, OpenRouter, the bundled llama.cpp server, any gateway)
goes through ChatOpenAI(base_url=...); Anthropic goes through ChatAnthropic (package langchain-anthropic). Each model gets its
own async HTTP client, closed by `close_model`, so a cancelled run closes its connections and
sync callers (one event loop per thread) never share a client across loops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel

from fusiongraph.graph.specs import ModelSpec

ModelFactory = Callable[[ModelSpec], BaseChatModel]

# Sent on every inner call, so a fusion server can refuse being called from a fusion run.
FUSION_DEPTH_HEADER = "X-Fusion-Depth"
DEFAULT_CALL_TIMEOUT_S = 120.0


def default_model_factory(spec: ModelSpec) -> BaseChatModel:
    """Build the real chat model for a spec (keys are read from the environment here)."""
    timeout = spec.timeout_s or DEFAULT_CALL_TIMEOUT_S
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
        default_headers={FUSION_DEPTH_HEADER: "1", "X-Title": "fusiongraph"},
        http_async_client=httpx.AsyncClient(timeout=timeout),
        **kwargs,
    )


async def close_model(model: Any) -> None:
    """Close the HTTP client a model owns (a no-op for fakes and wrappers)."""
    client = getattr(model, "http_async_client", None)
    if isinstance(client, httpx.AsyncClient):
        await client.aclose()
