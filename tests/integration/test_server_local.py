"""The OpenAI-compatible server on the real `local` preset (SmolLM2 behind llama.cpp), offline.

Two runs in total: the local model answers one request at a time and a run takes tens of seconds.
The model is weak, so only the plumbing is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI

from fusiongraph.local_model.launcher import stop_local_server
from fusiongraph.serve.server import create_app
from tests.support.servers import free_port, running_server

pytestmark = pytest.mark.integration


QUESTION = [{"role": "user", "content": "What is the capital of France? One sentence."}]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our own local model server (free port, tmp state dir), so no other test can stop it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FUSIONGRAPH_LOCAL_PORT", str(free_port()))
        env.setenv("FUSIONGRAPH_HOME", str(tmp_path_factory.mktemp("fusion-home")))
        try:
            with running_server(create_app(api_keys=[])) as url:
                yield url
        finally:
            stop_local_server()


def test_sdk_stream_on_the_local_preset(base_url: str) -> None:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=600) as c:
        chunks = list(
            c.chat.completions.create(
                model="fusion-local",
                messages=QUESTION,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    finish = next(ch for ch in chunks if ch.choices and ch.choices[0].finish_reason)
    fusion = finish.model_extra["fusion"]
    assert fusion["preset"] == "local" and fusion["panel"], fusion["failed_models"]
    assert chunks[-1].usage.total_tokens == fusion["usage"]["total"]["total_tokens"] > 0


def test_langchain_invoke_on_the_local_preset(base_url: str) -> None:
    llm = ChatOpenAI(
        base_url=f"{base_url}/v1", api_key="x", model="fusion-local", max_retries=0, timeout=600
    )
    reply = llm.invoke("Name one primary colour.")
    assert reply.text.strip()
    assert reply.usage_metadata and reply.usage_metadata["total_tokens"] > 0
