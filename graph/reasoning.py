"""Reasoning effort: which level a call site runs at, and how each provider is asked for it.

A spec's own `reasoning_effort` wins; unset, the run's `reasoning_effort` applies to the panel
and the judge (the synthesizer only reasons harder when its own spec says so: its tokens are
the ones the caller waits for). The level reaches the endpoint as:
- OpenAI and any OpenAI-compatible endpoint: the chat-completions body's `reasoning_effort`
  (ChatOpenAI's own parameter);
- OpenRouter: `reasoning: {"effort": ...}` in the body, OpenRouter's normalised form, which it
  translates for every provider behind it (Anthropic and Gemini thinking budgets included);
- the bundled local model: nothing (llama.cpp's chat endpoint has no such parameter);
- `anthropic:` specs (ChatAnthropic): not mapped; its thinking takes a token budget that must
  fit under max_tokens and forbids a set temperature, so no level is guessed into one.
Reasoning tokens the provider reports (usage_metadata's output_token_details.reasoning, from
OpenAI's completion_tokens_details.reasoning_tokens) are counted in the run's usage.
"""

from __future__ import annotations

from typing import Any

from fusiongraph.graph.specs import ModelSpec, ReasoningEffort

# Providers whose requests carry a level; the others are sent none (see the module doc).
MAPPED_PROVIDERS = frozenset({"openai", "openrouter", "openai_compatible"})


def with_effort(spec: ModelSpec, run_effort: ReasoningEffort | None) -> ModelSpec:
    """`spec` with the run's level filled in where it sets none."""
    if spec.reasoning_effort is not None or run_effort is None:
        return spec
    return spec.model_copy(update={"reasoning_effort": run_effort})


def effort_is_mapped(spec: ModelSpec) -> bool:
    """Whether this spec's level reaches its endpoint (False when it has none)."""
    return spec.reasoning_effort is not None and spec.provider in MAPPED_PROVIDERS


def chat_openai_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """ChatOpenAI keyword arguments that ask the endpoint for the spec's level. `extra_body`,
    when returned, is to be merged with the model's other body fields."""
    if not effort_is_mapped(spec):
        return {}
    if spec.provider == "openrouter":
        return {"extra_body": {"reasoning": {"effort": spec.reasoning_effort}}}
    return {"reasoning_effort": spec.reasoning_effort}
