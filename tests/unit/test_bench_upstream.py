"""The benchmark's fake upstream speaks OpenAI's wire format and records what it saw."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from fusiongraph.nodes.analysis import Analysis
from tests.support.upstream import FakeUpstream, UpstreamServer


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(FakeUpstream(chunks=4, chunk_delay_s=0.01)) as server:
        yield server


def test_openai_sdk_completion_and_stream(upstream: UpstreamServer) -> None:
    client = openai.OpenAI(base_url=upstream.base_url, api_key="x")
    messages = [{"role": "user", "content": "[bench:t1] hello"}]
    completion = client.chat.completions.create(model="m-0.05s", messages=messages)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="m-0.05s",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [m.id for m in client.models.list()] == []

    records = [r for r in upstream.app.records if r.tag == "t1"]
    assert [r.stream for r in records] == [False, True]
    for record in records:
        assert record.duration is not None and record.duration >= 0.04
        assert not record.disconnected
    assert records[1].ttft is not None and records[1].ttft < records[1].duration


def test_chat_openai_usage_and_judge_json(upstream: UpstreamServer) -> None:
    model = ChatOpenAI(
        model="judge-0.01s", base_url=upstream.base_url, api_key="x", stream_usage=True
    )
    reply = model.invoke("[bench:t2] hi")
    assert reply.usage_metadata and reply.usage_metadata["total_tokens"] > 0
    streamed = list(model.stream("[bench:t2] hi"))
    assert any(c.usage_metadata for c in streamed)

    judge = model.with_structured_output(Analysis, method="json_schema", include_raw=True)
    out = judge.invoke("[bench:t2] Response A: one\n\nResponse B: two")
    assert isinstance(out["parsed"], Analysis) and out["parsed"].consensus
    roles = [r.role for r in upstream.app.records if r.tag == "t2"]
    assert roles == ["panel", "panel", "judge"]


def test_never_model_records_the_disconnect(upstream: UpstreamServer) -> None:
    body = {"model": "never", "messages": [{"role": "user", "content": "[bench:t3] hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{upstream.base_url}/chat/completions", json=body, timeout=0.2)
    deadline = time.monotonic() + 2
    record = None
    while time.monotonic() < deadline:
        record = next((r for r in upstream.app.records if r.tag == "t3"), None)
        if record and record.done is not None:
            break
        time.sleep(0.02)
    assert record is not None and record.disconnected and record.first_chunk is None
    rows = httpx.get(upstream.base_url.removesuffix("/v1") + "/_bench/requests").json()
    assert any(row["tag"] == "t3" and row["disconnected"] for row in rows)
    assert json.loads(json.dumps(rows))  # plain JSON
