"""FusionChatModel on the real `local` preset: the bundled SmolLM2 behind llama.cpp, offline.

Two runs in total (the server answers one request at a time, a run takes tens of seconds). The
model is weak, so only the plumbing is asserted: text comes back, usage is counted over every
call, the panel is there, and streaming yields tokens as they come.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk

from fusiongraph.graph.chat_model import FusionChatModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model() -> FusionChatModel:
    return FusionChatModel(preset="local")


def test_local_invoke_returns_answer_usage_and_panel(model: FusionChatModel) -> None:
    reply = model.invoke("What is the capital of France? Answer in one sentence.")
    assert reply.text.strip()
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    fusion = reply.response_metadata["fusion"]
    assert fusion["preset"] == "local"
    assert len(fusion["panel"]) == 3, fusion["failed_models"]
    assert usage["total_tokens"] == fusion["usage"]["total"]["total_tokens"]
    assert reply.response_metadata["model_name"] == "fusion:local"


async def test_local_astream_yields_tokens_then_totals(model: FusionChatModel) -> None:
    chunks = [c async for c in model.astream("Name one primary colour.")]
    assert len(chunks) > 2  # tokens as they come, then the metadata chunk
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert full.text.strip()
    assert full.usage_metadata is not None and full.usage_metadata["total_tokens"] > 0
    assert [c.usage_metadata is not None for c in chunks].count(True) == 1
    assert len(full.response_metadata["fusion"]["panel"]) >= 1
