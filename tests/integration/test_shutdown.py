"""SIGTERM on a real `fusiongraph serve` process (fake upstream on 127.0.0.1): new connections
are refused at once, an in-flight run finishes within the grace, one that outlives a short grace
is cancelled with a clean 503 (JSON, or before a stream opened) and its upstream calls closed,
the process exits 0, and a cancelled checkpointed run resumes on retry."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server_process import ServeProcess, refuses_connections
from tests.support.servers import wait_for
from tests.support.upstream import FakeUpstream, UpstreamServer

USER = "[bench:{tag}] Why is the sky blue?"


def alias(panel_s: float) -> dict[str, Any]:
    return {
        "panel": [f"openai:pa-{panel_s:.3f}s", f"openai:pb-{panel_s / 2:.3f}s"],
        "judge": "openai:judge-0.050s",
        "synthesizer": "openai:synth-0.050s",
        "tool_mode": "off",
    }


ALIASES = {"fusion-slow": alias(3.0), "fusion-endless": alias(60.0)}


@pytest.fixture(scope="module")
def upstream() -> Any:
    with UpstreamServer(FakeUpstream(chunks=3, chunk_delay_s=0.01)) as server:
        yield server


def send(url: str, model: str, tag: str, out: dict[str, Any], *, stream: bool = False) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": USER.format(tag=tag)}],
        "stream": stream,
    }
    try:
        with httpx.Client(timeout=90) as client:
            response = client.post(f"{url}/v1/chat/completions", json=body)
        out[tag] = response
    except httpx.HTTPError as exc:  # a dropped connection is what a clean shutdown never does
        out[tag] = exc


def in_flight(upstream: UpstreamServer, tag: str, n: int) -> bool:
    return sum(1 for r in upstream.app.records_since(0) if r.tag == tag) >= n


def send_both(
    url: str, upstream: UpstreamServer, model: str, json_tag: str, sse_tag: str
) -> tuple[list[threading.Thread], dict[str, Any]]:
    """A JSON request and a streamed one, in threads, once both reached the whole panel."""
    out: dict[str, Any] = {}
    threads = [
        threading.Thread(target=send, args=(url, model, json_tag, out)),
        threading.Thread(target=send, args=(url, model, sse_tag, out), kwargs={"stream": True}),
    ]
    for thread in threads:
        thread.start()
    for tag in (json_tag, sse_tag):
        assert wait_for(partial(in_flight, upstream, tag, 2), timeout=30)
    return threads, out


def test_sigterm_lets_the_run_in_flight_finish_and_exits_0(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    with ServeProcess(
        upstream.base_url, ALIASES, tmp_path, "--workers", "1", "--grace-s", "20"
    ) as server:
        clients, out = send_both(server.url, upstream, "fusion-slow", "grace", "grace-sse")
        signalled = time.monotonic()
        server.terminate()
        assert wait_for(lambda: refuses_connections(server.url), timeout=5), server.output()
        for client in clients:
            client.join(60)
        response = out["grace"]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        streamed = out["grace-sse"]
        assert isinstance(streamed, httpx.Response), streamed
        assert streamed.status_code == 200
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert '"finish_reason":"stop"' in streamed.text
        assert server.wait(30) == 0, server.output()[-3000:]
        assert time.monotonic() - signalled < 20  # finished within the grace, not cut by it
        assert "grace over" not in server.output()


def test_a_run_that_outlives_the_grace_is_cancelled_cleanly(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    with ServeProcess(
        upstream.base_url, ALIASES, tmp_path, "--workers", "1", "--grace-s", "1"
    ) as server:
        threads, out = send_both(server.url, upstream, "fusion-endless", "cut-json", "cut-sse")
        signalled = time.monotonic()
        server.terminate()
        for thread in threads:
            thread.join(30)
        for tag in ("cut-json", "cut-sse"):
            response = out[tag]
            assert isinstance(response, httpx.Response), f"{tag}: {response!r}"
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "server_shutting_down"
        assert server.wait(30) == 0, server.output()[-3000:]
        assert time.monotonic() - signalled < 15
        # The cancelled runs closed their upstream calls (the panel was still answering).
        records = [r for r in upstream.app.records_since(0) if r.tag in ("cut-json", "cut-sse")]
        assert records and all(r.disconnected for r in records)


def test_a_cancelled_checkpointed_run_resumes_on_retry(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """Cut by the grace mid-panel, retried on a new server (same SQLite file, same thread id):
    the panelist that had finished is not called again."""
    aliases = {"fusion-half": alias(8.0) | {"panel": ["openai:qa-0.200s", "openai:qb-8.000s"]}}
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    headers = {"X-Fusion-Thread-Id": "thread-shutdown-1"}
    body = {
        "model": "fusion-half",
        "messages": [{"role": "user", "content": "[bench:resume] Why?"}],
    }
    args = ("--workers", "1", "--checkpointer", db)
    out: dict[str, Any] = {}

    def first(url: str) -> None:
        with httpx.Client(timeout=60) as client:
            out["first"] = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)

    with ServeProcess(upstream.base_url, aliases, tmp_path, *args, "--grace-s", "1") as server:
        thread = threading.Thread(target=first, args=(server.url,))
        thread.start()
        assert wait_for(lambda: in_flight(upstream, "resume", 2), timeout=30)
        time.sleep(0.5)  # qa (0.2 s) has answered and been checkpointed
        server.terminate()
        thread.join(30)
        assert out["first"].status_code == 503
        assert server.wait(30) == 0
    calls = [r.model for r in upstream.app.records_since(0) if r.tag == "resume"]
    assert sorted(calls) == ["qa-0.200s", "qb-8.000s"]
    with ServeProcess(upstream.base_url, aliases, tmp_path, *args) as server:
        with httpx.Client(timeout=60) as client:
            retry = client.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
        assert retry.status_code == 200, retry.text
    calls = [r.model for r in upstream.app.records_since(0) if r.tag == "resume"]
    assert calls.count("qa-0.200s") == 1  # finished before the shutdown: not called again
    assert calls.count("qb-8.000s") == 2
