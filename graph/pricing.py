"""Cost: a price table, per-call cost, and the worst-case estimate behind `max_cost_usd`.

Prices are USD per million tokens. Lookup order: the spec's own `price`, the run's `prices`
(keyed by spec name such as `openrouter:openai/gpt-5.5`, or bare model id), then the defaults
below. When OpenRouter reports the real cost of a call (`usage.cost`), that figure wins.
"""

from __future__ import annotations

import math

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.specs import ModelSpec, Price
from fusiongraph.graph.state import Usage

# List prices as published by the providers for the preset models (USD / 1M tokens, 2026-11).
DEFAULT_PRICES: dict[str, Price] = {
    "anthropic/claude-opus-4.8": Price(input=5.0, output=25.0),
    "google/gemini-3.1-pro": Price(input=2.0, output=12.0),
    "openai/gpt-5.5": Price(input=1.25, output=10.0),
    "google/gemini-3-flash": Price(input=0.30, output=2.50),
    "deepseek/deepseek-v3.2": Price(input=0.28, output=0.42),
    "openai/gpt-5-mini": Price(input=0.25, output=2.0),
    "gpt-5.5": Price(input=1.25, output=10.0),
    "claude-opus-4.8": Price(input=5.0, output=25.0),
}
FREE = Price(input=0.0, output=0.0)

# Assumptions of the worst-case estimate (documented in the README).
CHARS_PER_TOKEN = 4
ASSUMED_MAX_TOKENS = 4096  # when a call has no max_tokens set
JUDGE_OUTPUT_TOKENS = 1200
SYNTHESIS_OVERHEAD_TOKENS = 2500  # instructions + analysis
CLASSIFIER_OUTPUT_TOKENS = 8  # nodes/routing.py caps its reply (one word)
VERIFY_SIGNATURE_TOKENS = 300  # the answers' signatures verify's judge reads beside the prompt


def price_of(spec: ModelSpec, config: FusionConfig) -> Price | None:
    if spec.price is not None:
        return spec.price
    if spec.provider == "local":
        return FREE
    for key in (spec.name, spec.model):
        if key in config.prices:
            return config.prices[key]
        if key in DEFAULT_PRICES:
            return DEFAULT_PRICES[key]
    return None


def cost_of(usage: Usage, price: Price | None) -> float | None:
    """USD for a node's usage; the provider-reported cost when there is one."""
    reported = usage.get("reported_cost_usd")
    if reported:
        return _finite(round(float(reported), 8))
    if price is None:
        return None
    return _finite(
        round(
            (usage["input_tokens"] * price.input + usage["output_tokens"] * price.output) / 1e6, 8
        )
    )


def _finite(cost: float) -> float | None:
    """An overflowed cost (or a provider's NaN) is unknown, not infinite: no bill is infinite,
    and JSON cannot carry inf, so it would break the response after the run was paid for."""
    return cost if math.isfinite(cost) else None


def worst_case_cost(config: FusionConfig, prompt_chars: int) -> tuple[float, list[str]]:
    """An upper bound on the run's cost before any call; names the models with no known price."""
    base = prompt_chars // CHARS_PER_TOKEN + 500
    unknown: list[str] = []
    total = 0.0

    def add(spec: ModelSpec, calls: list[tuple[int, int]]) -> None:
        nonlocal total
        price = price_of(spec, config)
        if price is None:
            unknown.append(spec.name)
            return
        total += sum(i * price.input + o * price.output for i, o in calls) / 1e6

    tool_tokens = config.fetch.max_chars // CHARS_PER_TOKEN
    for spec in config.panel:
        out = spec.max_tokens or config.panel_max_tokens or ASSUMED_MAX_TOKENS
        mode = config.panel_tool_mode(spec)
        if mode == "agentic":
            steps = config.panel_max_tool_calls(spec)
            # each step re-sends the growing history: the prompt plus every earlier tool result
            calls = [(base + k * (tool_tokens + out), out) for k in range(steps + 1)]
        elif mode == "prefetch":
            calls = [(base + 2 * tool_tokens, out)]
        else:
            calls = [(base, out)]
        add(spec, calls)
    panel_out = len(config.panel) * config.judge_input_chars // CHARS_PER_TOKEN
    add(config.judge, judge_calls(config, base + panel_out, tool_tokens))
    synth_out = config.max_tokens or config.synthesizer.max_tokens or ASSUMED_MAX_TOKENS
    synth_in = base + SYNTHESIS_OVERHEAD_TOKENS + (panel_out if config.include_raw_answers else 0)
    add(config.synthesizer, [(synth_in, synth_out)])
    if config.aggregation in ("verify", "auto"):  # verify's one judge call: tests or a program
        add(
            config.judge,
            [(base + VERIFY_SIGNATURE_TOKENS, config.judge.max_tokens or JUDGE_OUTPUT_TOKENS)],
        )
    if config.classifier is not None and config.aggregation == "auto":  # auto's one-word call
        add(config.classifier, [(base, CLASSIFIER_OUTPUT_TOKENS)])
    return total, unknown


def judge_calls(config: FusionConfig, prompt: int, tool_tokens: int) -> list[tuple[int, int]]:
    """The judge's calls at their largest (input, output tokens). With judge_tools: agentic, a
    tool loop like a panelist's (each step re-sends the growing history), then the analysis
    with every tool result and the notes; prefetch, the analysis, then again with a search
    result per contradiction (at most judge_max_tool_calls)."""
    out = config.judge.max_tokens or JUDGE_OUTPUT_TOKENS
    if not config.judge_tools:
        return [(prompt, out)]
    steps = config.judge_max_tool_calls
    evidence = steps * tool_tokens
    if config.judge_tool_mode() == "prefetch":
        return [(prompt, out), (prompt + evidence, out)]
    loop = [(prompt + k * (tool_tokens + out), out) for k in range(steps + 1)]
    return [*loop, (prompt + evidence + out, out)]
