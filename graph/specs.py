"""Model specs: which model, behind which endpoint (OpenAI-compatible, or any provider LangChain's
init_chat_model knows, e.g. `ollama:llama3.2`), with which key.

A spec is written as a string (`openrouter:anthropic/claude-opus-4.8`, `openai:gpt-5.5`,
`anthropic:claude-opus-4.8`, `local:smollm2-135m`) or as an object with model, base_url and the
name of the environment variable holding the key, for any other OpenAI-compatible gateway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fusiongraph.graph.limits import MAX_TOOL_CALLS
from fusiongraph.graph.providers import LANGCHAIN_PROVIDERS, OBJECT_PROVIDER

# The built-in OpenAI-compatible providers (and anthropic), then every other provider LangChain's
# init_chat_model knows, then `object` (a caller's chat model object): see graph/providers.py.
BUILTIN_PROVIDERS = ("openai", "openrouter", "anthropic", "local", "openai_compatible")
PROVIDERS: tuple[str, ...] = (
    *BUILTIN_PROVIDERS,
    *(p for p in LANGCHAIN_PROVIDERS if p not in BUILTIN_PROVIDERS),
    OBJECT_PROVIDER,
)
# Made from LangChain's list at import time, so pydantic checks it; mypy sees only a value.
Provider = Literal[PROVIDERS]  # type: ignore[valid-type]
ToolMode = Literal["agentic", "prefetch", "off"]
# How the judge asks for its structure: OpenAI json_schema; llama.cpp's JSON mode constrained by
# a schema grammar; tool calling; plain JSON mode; or only a prompt (always parsed tolerantly).
StructuredMethod = Literal["json_schema", "json_object_schema", "function_calling", "prompt"]
# OpenAI's reasoning effort levels (OpenRouter's `reasoning.effort` takes the same names).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]

PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "openai": {
        "base_url_env": "OPENAI_BASE_URL",
        "base_url": None,
        "api_key_env": "OPENAI_API_KEY",
        "structured_output": "json_schema",
    },
    "openrouter": {
        "base_url_env": "OPENROUTER_BASE_URL",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_env": "OPENROUTER_API_KEY",
        "structured_output": "json_schema",
    },
    "anthropic": {
        "base_url_env": "ANTHROPIC_BASE_URL",
        "base_url": None,
        "api_key_env": "ANTHROPIC_API_KEY",
        "structured_output": "function_calling",
    },
    "local": {
        "base_url_env": None,
        "base_url": None,
        "api_key_env": None,
        "structured_output": "json_object_schema",
    },
    "openai_compatible": {
        "base_url_env": None,
        "base_url": None,
        "api_key_env": None,
        "structured_output": "json_schema",
    },
}
# The init_chat_model providers and model objects: the provider's own client finds its endpoint;
# tool calling is the structured-output method every LangChain chat model with tools has.
for _provider in PROVIDERS:
    PROVIDER_DEFAULTS.setdefault(
        _provider,
        {
            "base_url_env": None,
            "base_url": None,
            "api_key_env": getattr(LANGCHAIN_PROVIDERS.get(_provider), "api_key_env", None),
            "structured_output": "function_calling",
        },
    )


# Base URLs known only at run time, per provider: the bundled local server's depends on its port
# setting. The model factory (graph/models.py) registers them, so specs import no model provider.
_BASE_URL_RESOLVERS: dict[str, Callable[[], str]] = {}


def register_base_url(provider: Provider, resolver: Callable[[], str]) -> None:
    """Make `resolver()` the default base URL of a provider's specs (read on every call)."""
    _BASE_URL_RESOLVERS[provider] = resolver


# USD per million tokens. The dearest list prices are a few hundred; a price past this bound is
# a typo or an attack, and multiplied by a run's tokens it overflowed the cost to infinity,
# which JSON cannot carry (found after the run had been paid for).
MAX_PRICE_PER_MTOK = 100_000.0


class Price(BaseModel):
    """USD per million tokens: finite and bounded, so every cost computed from it is finite."""

    model_config = ConfigDict(allow_inf_nan=False)

    input: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)
    output: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)


class ModelSpec(BaseModel):
    """One model call site: the panelist, the judge or the synthesizer."""

    # inf/NaN pass `gt=0` (timeout_s) and reach the HTTP client or JSON, which cannot carry them.
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    model: str = Field(min_length=1, description="the model's name at its endpoint")
    provider: Provider = Field(
        default="openai_compatible",
        description="openai | openrouter | anthropic | local | openai_compatible (needs base_url)"
        " | any init_chat_model provider (ollama, groq, google_genai, bedrock, ...; its extra) "
        "| object (a model object given to build_graph(models=...))",
    )
    base_url: str | None = Field(
        default=None, description="an OpenAI-compatible endpoint (or the provider's own)"
    )
    api_key_env: str | None = Field(
        default=None, description="the environment variable holding the API key"
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="sampling")
    seed: int | None = Field(default=None, description="sampling seed, where the endpoint has one")
    max_tokens: int | None = Field(default=None, ge=1, le=200_000, description="per answer")
    timeout_s: float | None = Field(default=None, gt=0, description="per HTTP call")
    tool_mode: ToolMode | None = Field(
        default=None,
        description="panel (and a judge with judge_tools): agentic | prefetch | off; unset: the "
        "run's (judge: agentic, the local model prefetch)",
    )
    max_tool_calls: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOOL_CALLS,
        description="panel only: tool steps; unset: the run's",
    )
    structured_output: StructuredMethod | None = Field(
        default=None,
        description="judge only: json_schema | json_object_schema | function_calling | prompt; "
        "unset: the provider's strongest",
    )
    price: Price | None = Field(default=None, description="USD per million tokens")
    images: bool | None = Field(
        default=None,
        description="panel only: whether it is sent the conversation's images; unset: the "
        "model's profile (image_inputs), else a text note in place of each image",
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="none | minimal | low | medium | high | xhigh, where the provider has it; "
        "unset: the run's reasoning_effort (panel and judge)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_spec_string(value)
        return value

    @property
    def name(self) -> str:
        """The spec as a user writes it, e.g. `openrouter:openai/gpt-5.5`."""
        return (
            f"{self.provider}:{self.model}" if self.provider != "openai_compatible" else self.model
        )

    def resolved_base_url(self) -> str | None:
        if self.base_url:
            return self.base_url
        defaults = PROVIDER_DEFAULTS[self.provider]
        env = defaults["base_url_env"]
        if env and os.environ.get(env):
            return os.environ[env]
        resolver = _BASE_URL_RESOLVERS.get(self.provider)
        if resolver is not None:
            return resolver()
        return defaults["base_url"]

    def latency_key(self) -> str:
        """Which model at which endpoint: what a remembered panel latency belongs to."""
        return f"{self.name}@{self.resolved_base_url() or ''}"

    def resolved_key_env(self) -> str | None:
        return self.api_key_env or PROVIDER_DEFAULTS[self.provider]["api_key_env"]

    def resolved_structured_output(self) -> StructuredMethod:
        return self.structured_output or PROVIDER_DEFAULTS[self.provider]["structured_output"]

    def is_fusion(self) -> bool:
        """A fusion model (ours or a gateway's) must never sit inside a fusion run."""
        last = self.model.rsplit("/", 1)[-1].lower()
        return last.startswith("fusion") or self.model.lower().startswith("fusion")


def parse_spec_string(text: str) -> dict[str, Any]:
    provider, sep, model = text.partition(":")
    if not sep or not model:
        raise ValueError(
            f"model spec {text!r} needs a provider prefix, one of "
            "openai:, openrouter:, anthropic:, local:, an init_chat_model provider such as "
            "ollama: (or an object with model and base_url)"
        )
    if provider not in PROVIDER_DEFAULTS or provider == "openai_compatible":
        known = ", ".join(p for p in PROVIDERS if p != "openai_compatible")
        raise ValueError(f"unknown provider {provider!r} in model spec {text!r}; known: {known}")
    return {"provider": provider, "model": model}
