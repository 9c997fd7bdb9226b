"""The providers a model spec can name beyond the built-in OpenAI-compatible ones.

`LANGCHAIN_PROVIDERS`: every provider LangChain's `init_chat_model` knows (ollama, groq,
google_genai, bedrock, ...), each with the package that brings its chat model and the extra of
fusiongraph that installs it (`pip install 'fusiongraph[ollama]'`). A spec such as
`ollama:llama3.2` is built through `init_chat_model`; the spec's temperature, seed, max_tokens,
timeout, base_url and reasoning effort go to whichever of the model class's own parameters
takes them (a class without a reasoning_effort parameter does not get one). openai,
openrouter and local keep the built-in OpenAI-compatible path (shared HTTP client, byte cap,
send hooks), which also serves any gateway; anthropic is built through init_chat_model too.

`OBJECT_PROVIDER`: a spec `object:<name>` names a chat model object the caller registered with
`build_graph(models={name: model})` (graph/model_objects.py). That object carries its own
sampling, endpoint and key: the spec settings in `OBJECT_IGNORES` do not apply to it.

This module imports no provider package (nor langchain) at import time: specs.py reads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from fusiongraph.graph.specs import ModelSpec

OBJECT_PROVIDER = "object"
# What an `object:` spec (or the run, through it) may set that the object's own settings replace.
OBJECT_IGNORES = (
    "temperature",
    "seed",
    "max_tokens",
    "timeout_s",
    "reasoning_effort",
    "base_url",
    "api_key_env",
)


@dataclass(frozen=True)
class LangChainProvider:
    """One `init_chat_model` provider: where its chat model lives and how to install it."""

    package: str  # the distribution on PyPI
    module: str  # where init_chat_model imports the class from
    class_name: str
    extra: str | None  # fusiongraph's extra installing `package`; None: a core dependency
    api_key_env: str | None = None  # checked before the run; None: several ways to authenticate

    def install_hint(self) -> str:
        if self.extra is None:
            return f"pip install '{self.package}'"
        return f"pip install 'fusiongraph[{self.extra}]'"


def _p(package: str, cls: str, key: str | None = None, module: str = "") -> LangChainProvider:
    extra = None if package == "langchain-openai" else package.removeprefix("langchain-")
    extra = {"nvidia-ai-endpoints": "nvidia"}.get(extra or "", extra)
    return LangChainProvider(
        package, module or package.replace("-", "_"), cls, extra, api_key_env=key
    )


# Mirrors langchain.chat_models.base._BUILTIN_PROVIDERS (tests/unit/test_providers.py checks that
# each entry is one LangChain knows, with the same class). Keys only where one variable is the
# provider's usual way in: AWS, Google Cloud, watsonx, LiteLLM and Hugging Face have several.
LANGCHAIN_PROVIDERS: dict[str, LangChainProvider] = {
    "anthropic": _p("langchain-anthropic", "ChatAnthropic"),  # key: PROVIDER_DEFAULTS (specs)
    "anthropic_bedrock": _p("langchain-aws", "ChatAnthropicBedrock"),
    "azure_ai": _p(
        "langchain-azure-ai", "AzureAIOpenAIApiChatModel", module="langchain_azure_ai.chat_models"
    ),
    "azure_openai": _p("langchain-openai", "AzureChatOpenAI"),
    "baseten": _p("langchain-baseten", "ChatBaseten", "BASETEN_API_KEY"),
    "bedrock": _p("langchain-aws", "ChatBedrock"),
    "bedrock_converse": _p("langchain-aws", "ChatBedrockConverse"),
    "bedrock_mantle_anthropic": _p("langchain-aws", "ChatAnthropicMantle"),
    "bedrock_mantle_openai": _p("langchain-aws", "ChatOpenAIMantle"),
    "cohere": _p("langchain-cohere", "ChatCohere", "COHERE_API_KEY"),
    "deepseek": _p("langchain-deepseek", "ChatDeepSeek", "DEEPSEEK_API_KEY"),
    "fireworks": _p("langchain-fireworks", "ChatFireworks", "FIREWORKS_API_KEY"),
    "google_anthropic_vertex": _p(
        "langchain-google-vertexai",
        "ChatAnthropicVertex",
        module="langchain_google_vertexai.model_garden",
    ),
    "google_genai": _p("langchain-google-genai", "ChatGoogleGenerativeAI"),  # GOOGLE_ or GEMINI_
    "google_vertexai": _p("langchain-google-vertexai", "ChatVertexAI"),
    "groq": _p("langchain-groq", "ChatGroq", "GROQ_API_KEY"),
    "huggingface": _p("langchain-huggingface", "ChatHuggingFace"),
    "ibm": _p("langchain-ibm", "ChatWatsonx"),
    "langsmith": _p("langchain-openai", "ChatOpenAI"),  # LangSmith's gateway
    "litellm": _p("langchain-litellm", "ChatLiteLLM"),
    "meta": _p("langchain-meta", "ChatMetaModel"),
    "mistralai": _p("langchain-mistralai", "ChatMistralAI", "MISTRAL_API_KEY"),
    "nvidia": _p("langchain-nvidia-ai-endpoints", "ChatNVIDIA", "NVIDIA_API_KEY"),
    "ollama": _p("langchain-ollama", "ChatOllama"),  # a local server: no key
    "perplexity": _p("langchain-perplexity", "ChatPerplexity", "PPLX_API_KEY"),
    "together": _p("langchain-together", "ChatTogether", "TOGETHER_API_KEY"),
    "upstage": _p("langchain-upstage", "ChatUpstage", "UPSTAGE_API_KEY"),
    "xai": _p("langchain-xai", "ChatXAI", "XAI_API_KEY"),
}


def missing_package(provider: str) -> str | None:
    """Why a spec of this provider cannot be built here (its package is absent), else None.
    Found without importing the package (a config check must stay cheap)."""
    entry = LANGCHAIN_PROVIDERS.get(provider)
    if entry is None:
        return None
    top = entry.module.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return f"{provider}: models need the package {entry.package}: {entry.install_hint()}"


# The model classes' own names for the spec's settings, first match wins (checked on the class).
_PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "seed": ("seed", "random_seed"),
    "max_tokens": ("max_tokens", "max_output_tokens", "num_predict", "max_new_tokens"),
    "timeout": ("timeout", "request_timeout", "default_request_timeout"),
    "max_retries": ("max_retries",),
    "base_url": ("base_url", "api_base", "endpoint_url", "endpoint"),
    "api_key": ("api_key",),
    "reasoning_effort": ("reasoning_effort",),  # groq, xai, deepseek, azure_openai, ...
}


def _parameters(cls: type) -> set[str]:
    """The keyword names a pydantic chat model class accepts: its fields and their aliases."""
    names: set[str] = set()
    for name, info in getattr(cls, "model_fields", {}).items():
        names.add(name)
        if isinstance(info.alias, str):
            names.add(info.alias)
    return names


def chat_model_kwargs(spec: ModelSpec, cls: type, timeout: float) -> dict[str, Any]:
    """The spec's settings under the names `cls` takes them by. A base_url the class has no
    parameter for is an error, not silently dropped (the model would call another endpoint)."""
    accepted = _parameters(cls)
    values: dict[str, Any] = {
        "temperature": spec.temperature,
        "seed": spec.seed,
        "max_tokens": spec.max_tokens,
        "timeout": timeout,
        "max_retries": 2,
        "base_url": spec.resolved_base_url(),
        "api_key": os.environ.get(spec.api_key_env, "") if spec.api_key_env else None,
        "reasoning_effort": getattr(spec, "reasoning_effort", None),
    }
    kwargs: dict[str, Any] = {}
    for setting, value in values.items():
        if value is None:
            continue
        name = next((n for n in _PARAMETER_NAMES[setting] if n in accepted), None)
        if name is not None:
            kwargs[name] = value
        elif setting == "timeout" and "client_kwargs" in accepted:
            kwargs["client_kwargs"] = {"timeout": value}  # ollama: its httpx clients' timeout
        elif setting in ("base_url", "api_key"):
            raise ValueError(f"{spec.name}: {cls.__name__} takes no {setting} parameter")
    return kwargs


def build_chat_model(spec: ModelSpec, timeout: float) -> BaseChatModel:
    """The provider's own chat model for a spec, through LangChain's `init_chat_model`."""
    from langchain.chat_models import init_chat_model

    entry = LANGCHAIN_PROVIDERS[spec.provider]
    cls = getattr(importlib.import_module(entry.module), entry.class_name)
    return init_chat_model(
        spec.model, model_provider=spec.provider, **chat_model_kwargs(spec, cls, timeout)
    )


def object_models_note(specs: list[ModelSpec]) -> dict[str, Any] | None:
    """For the run record: which models are the caller's objects, and which spec settings their
    own configuration replaces (None when the run has none)."""
    names = sorted({s.name for s in specs if s.provider == OBJECT_PROVIDER})
    if not names:
        return None
    return {"models": names, "not_applied": list(OBJECT_IGNORES)}
