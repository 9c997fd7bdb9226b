"""Named presets: each expands to a full configuration that any field can then override."""

from __future__ import annotations

from typing import Any

from fusiongraph.serve.local_llm import LOCAL_MODEL_ALIAS

_LOCAL = f"local:{LOCAL_MODEL_ALIAS}"

PRESETS: dict[str, dict[str, Any]] = {
    # No key, no internet: self-fusion of the bundled SmolLM2-135M at three temperatures/seeds,
    # searching the sample corpus that ships with the package.
    "local": {
        "description": "Bundled SmolLM2-135M on llama.cpp, three samples; offline corpus search.",
        "panel": [
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 0.2, "seed": 11},
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 0.7, "seed": 23},
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 1.0, "seed": 37},
        ],
        "judge": _LOCAL,
        "synthesizer": _LOCAL,
        "tool_mode": "prefetch",
        "panel_max_tokens": 200,
        "max_tokens": 320,
        "temperature": 0.3,
        # llama.cpp serves one request at a time here, so the panel is sequential in practice.
        "panel_timeout_s": 300.0,
        "judge_input_chars": 1200,
        "search": {"provider": "corpus", "max_results": 3},
    },
    "quality": {
        "description": "Frontier panel on OpenRouter; Claude Opus judges and writes.",
        "panel": [
            "openrouter:anthropic/claude-opus-4.8",
            "openrouter:google/gemini-3.1-pro",
            "openrouter:openai/gpt-5.5",
        ],
        "judge": "openrouter:anthropic/claude-opus-4.8",
        "synthesizer": "openrouter:anthropic/claude-opus-4.8",
        "tool_mode": "agentic",
        "max_tool_calls": 8,
        "search": {"provider": "auto"},
    },
    "budget": {
        "description": "Fast, cheap OpenRouter models; fewer tool steps.",
        "panel": [
            "openrouter:google/gemini-3-flash",
            "openrouter:deepseek/deepseek-v3.2",
            "openrouter:openai/gpt-5-mini",
        ],
        "judge": "openrouter:google/gemini-3-flash",
        "synthesizer": "openrouter:google/gemini-3-flash",
        "tool_mode": "agentic",
        "max_tool_calls": 4,
        "search": {"provider": "auto"},
    },
}
