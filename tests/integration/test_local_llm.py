"""Integration tests for the bundled llama.cpp server launcher (real server, real SmolLM2 model).

The shared server runs on the ambient FUSIONGRAPH_LOCAL_PORT / FUSIONGRAPH_HOME (so a server that
other tests or a developer already started is reused). Tests that start or stop servers of their
own use a free port and a tmp state dir, so they never kill the shared one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from fusiongraph.local_model import launcher, server, settings
from fusiongraph.local_model.launcher import (
    aensure_local_server,
    ensure_local_server,
    server_status,
    stop_local_server,
)
from fusiongraph.local_model.settings import LOCAL_MODEL_ALIAS, LocalServerError, local_base_url
from tests.support.servers import free_port

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def _server_pids() -> list[int]:
    """Live server processes launched for the current port's config file."""
    marker = str(settings.config_path()).encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes() and _alive(int(cmdline.parent.name)):
                pids.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def _chat(**kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=local_base_url(),
        api_key="local",
        model=LOCAL_MODEL_ALIAS,
        timeout=120,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def shared_server() -> str:
    """The shared server on the ambient port (started here, or reused if already up)."""
    return ensure_local_server()


@pytest.fixture
def private_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    """A free port and tmp state dir for a server of our own; stopped afterwards."""
    port = free_port()
    monkeypatch.setenv("FUSIONGRAPH_LOCAL_PORT", str(port))
    monkeypatch.setenv("FUSIONGRAPH_HOME", str(tmp_path / "home"))
    yield port
    stop_local_server()


def test_ensure_starts_or_reuses_and_status_reports_alias(shared_server: str) -> None:
    assert shared_server == local_base_url()
    assert shared_server.startswith("http://127.0.0.1:")
    status = server_status()
    assert status.running
    assert status.base_url == shared_server
    assert LOCAL_MODEL_ALIAS in status.models


def test_ensure_twice_reuses_same_pid(shared_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_before = server_status().pid
    monkeypatch.setattr(launcher, "STATUS_CACHE_TTL_S", 0.0)  # force a real re-check
    assert ensure_local_server() == shared_server
    assert server_status().pid == pid_before
    if pid_before is not None:
        assert _alive(pid_before)


def test_positive_check_is_cached(shared_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_local_server()

    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached positive check must not probe the server again")

    monkeypatch.setattr(launcher, "_probe", no_probe)
    for _ in range(100):
        assert ensure_local_server() == shared_server


async def test_async_ensure(shared_server: str) -> None:
    assert await aensure_local_server() == shared_server


def test_chat_completion_has_content_and_usage(shared_server: str) -> None:
    reply = _chat(max_tokens=64).invoke("What is the capital of France? Answer in one sentence.")
    assert isinstance(reply.content, str) and reply.content.strip()
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert 0 < usage["output_tokens"] <= 64


def test_max_tokens_is_honoured(shared_server: str) -> None:
    # langchain-openai sends `max_completion_tokens`; the launcher maps it to `max_tokens`.
    reply = _chat(max_tokens=8, temperature=0.8).invoke("Write a very long story about a dragon.")
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata.get("finish_reason") == "length"


def test_seed_and_temperature_are_accepted(shared_server: str) -> None:
    for seed, temperature in ((11, 0.2), (37, 1.0)):
        reply = _chat(max_tokens=24, seed=seed, temperature=temperature).invoke("Name a fruit.")
        assert isinstance(reply.content, str) and reply.content.strip()


def test_streaming_reports_usage(shared_server: str) -> None:
    llm = _chat(max_tokens=16, temperature=0.5, seed=3, stream_usage=True)
    chunks = list(llm.stream("Say hello."))
    text = "".join(str(chunk.content) for chunk in chunks)
    usage = next((c.usage_metadata for c in chunks if c.usage_metadata), None)
    assert text.strip()
    assert usage is not None
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 16


def test_langchain_history_with_content_blocks_and_tool_calls(shared_server: str) -> None:
    # SmolLM2's template concatenates `content` as a string; the launcher flattens the rest.
    history = [
        SystemMessage("Be terse."),
        HumanMessage(content=[{"type": "text", "text": "What is 2+2?"}]),
        AIMessage(content="", tool_calls=[{"name": "calc", "args": {"x": "2+2"}, "id": "c1"}]),
        ToolMessage(content="4", tool_call_id="c1"),
        HumanMessage("So what is the answer?"),
    ]
    reply = _chat(max_tokens=16).invoke(history)
    assert isinstance(reply.content, str)
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 20


def test_normalize_chat_request() -> None:
    data = {
        "max_completion_tokens": 7,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            },
        ],
    }
    out = server.normalize_chat_request(data)
    assert out["max_tokens"] == 7 and "max_completion_tokens" not in out
    assert out[server.STREAM_USAGE_FIELD] is True and "stream_options" not in out
    assert out["messages"][0]["content"] == "a\n[image_url omitted]"
    assert out["messages"][1]["content"] == "f({})"
    assert "max_tokens" not in data  # the caller's dict is not mutated


class _City(BaseModel):
    city: str
    population_millions: float
    is_capital: bool


def test_json_object_with_schema_is_schema_valid(shared_server: str) -> None:
    schema = _City.model_json_schema()
    llm = _chat(
        max_tokens=128,
        temperature=0.2,
        extra_body={"response_format": {"type": "json_object", "schema": schema}},
    )
    reply = llm.invoke("Give facts about Paris as JSON.")
    assert isinstance(reply.content, str)
    assert reply.response_metadata.get("finish_reason") == "stop"
    parsed = _City.model_validate_json(reply.content)
    assert parsed.city
    assert set(json.loads(reply.content)) == {"city", "population_millions", "is_capital"}


def test_reuse_while_busy_does_not_spawn_second_server(
    shared_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /v1/models waits for the model lock during a completion; ensure must still reuse the server.
    pid_before = server_status().pid
    worker = threading.Thread(
        target=lambda: _chat(max_tokens=200, temperature=0.8).invoke("Write a long essay on tea.")
    )
    worker.start()
    try:
        time.sleep(0.3)
        monkeypatch.setattr(launcher, "STATUS_CACHE_TTL_S", 0.0)
        assert ensure_local_server(timeout_s=30) == shared_server
        assert server_status().running
    finally:
        worker.join()
    assert server_status().pid == pid_before


def test_stop_on_private_port(private_env: int) -> None:
    base_url = ensure_local_server(timeout_s=120)
    assert base_url == f"http://127.0.0.1:{private_env}/v1"
    status = server_status()
    assert status.running and LOCAL_MODEL_ALIAS in status.models
    pid = status.pid
    assert pid is not None and _server_pids() == [pid]

    assert stop_local_server() is True
    assert not _alive(pid)
    assert _server_pids() == []
    assert server_status().running is False
    assert stop_local_server() is False
    # And it comes back on demand after a stop (no stale positive cache).
    assert ensure_local_server(timeout_s=120) == base_url
    assert server_status().pid not in (None, pid)


def test_concurrent_threads_start_one_server(private_env: int) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_local_server(timeout_s=120))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    assert server_status().running
    assert _server_pids() == [server_status().pid]


def test_concurrent_processes_start_one_server(private_env: int) -> None:
    code = (
        "from fusiongraph.local_model.launcher import ensure_local_server, server_status\n"
        "ensure_local_server(timeout_s=120, detach=True)\n"
        "print(server_status().pid)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=180)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0] == outputs[1] != "None"
    # Detached: the server outlived the processes that started it; the fixture stops it.
    assert _server_pids() == [int(outputs[0])]
    assert server_status().running


def test_startup_failure_raises_with_log_tail(private_env: int) -> None:
    # Something that accepts connections but never answers HTTP holds the port: the server process
    # fails to bind and exits, which must surface as a clear error carrying the log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", private_env))
        blocker.listen(8)
        with pytest.raises(RuntimeError) as excinfo:
            ensure_local_server(timeout_s=60)
    message = str(excinfo.value)
    assert "exited" in message
    assert "address already in use" in message.lower() or "errno 98" in message.lower()
    assert _server_pids() == []


def test_missing_llama_cpp_gives_install_hint(
    private_env: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "_has_module", lambda name: name != "llama_cpp")
    with pytest.raises(LocalServerError, match=r"fusiongraph\[local\]"):
        ensure_local_server(timeout_s=5)


def test_status_when_nothing_listens(private_env: int) -> None:
    status = server_status()
    assert status.running is False
    assert status.pid is None
    assert status.models == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{local_base_url()}/models", timeout=1)
