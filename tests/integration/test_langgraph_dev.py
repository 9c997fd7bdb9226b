"""`langgraph dev` serves langgraph.json offline; langgraph-sdk runs the graph on the local preset.

The server is the real CLI (`langgraph dev --no-browser --no-reload`), started from the repo root
on a free loopback port. Its environment turns off everything that would reach the internet: the
CLI's usage analytics, the PyPI version check and LangSmith tracing / metadata (an API key in the
environment would switch both on). The graph starts its own llama.cpp server on demand; it gets a
free port and a temporary FUSIONGRAPH_HOME, so this test neither queues behind nor stops a shared
one.

Shutdown uses SIGINT (Ctrl-C): uvicorn re-raises a SIGTERM after its graceful shutdown, and the
default SIGTERM action ends the process without running atexit hooks, which is where the launcher
stops the llama.cpp server it started (that server has its own session, so it outlives the group).
The fixture then stops that server (found by its command line) in any case.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from fusiongraph.local_model import launcher, settings
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
GRAPH_ID = "fusion"
STARTUP_TIMEOUT_S = 120.0
# One local run is 20-90 s on an idle machine (three panelists, judge, synthesis, one request at
# a time); the machine is shared, so allow much more.
RUN_TIMEOUT_S = 600.0
SHUTDOWN_GRACE_S = 30.0  # the atexit hook may wait up to 15 s for the llama.cpp server
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Variables that would make langgraph-api trace to / report to LangSmith, or export telemetry.
_DROPPED_ENV = (
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
_OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # langgraph_cli.analytics: POST per CLI command
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # langgraph_api.cli: PyPI lookup at startup
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "OTEL_ENABLED": "false",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class DevServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return _ANSI.sub("", text)[-chars:]


def _wait_ready(server: DevServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {server.proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/ok", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(
                f"langgraph dev not ready in {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(0.25)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C the server's process group; SIGKILL it if it does not stop in time."""
    for sig, wait_s in ((signal.SIGINT, SHUTDOWN_GRACE_S), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    home = tmp_path_factory.mktemp("fusiongraph-home")
    port = llm_port = free_port()
    while llm_port == port:
        llm_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(_OFFLINE_ENV)
    env.update({settings.HOME_ENV: str(home), settings.PORT_ENV: str(llm_port)})
    log = home / "langgraph-dev.log"
    cmd = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can signal all of it
        )
    server = DevServer(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(proc)
        # Whatever happened above, stop the llama.cpp server the graph started for this test.
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(settings.HOME_ENV, str(home))
            mp.setenv(settings.PORT_ENV, str(llm_port))
            launcher.stop_local_server()


def _client(server: DevServer) -> Any:
    # api_key=None: send no LangSmith key from the environment to the local server.
    return get_client(
        url=server.url, api_key=None, timeout=httpx.Timeout(RUN_TIMEOUT_S, connect=10)
    )


async def test_assistant_schemas_expose_the_context(dev_server: DevServer) -> None:
    client = _client(dev_server)
    assistants = await client.assistants.search(graph_id=GRAPH_ID)
    assert assistants, "langgraph dev creates one assistant per graph in langgraph.json"
    schemas = await client.assistants.get_schemas(assistants[0]["assistant_id"])

    context = schemas["context_schema"]
    assert context is not None, dev_server.log_tail()
    assert {"preset", "panel"} <= set(context["properties"])
    # null here means langgraph-api failed to build the schema (it logs a warning).
    assert schemas["input_schema"] is not None, dev_server.log_tail()
    assert "messages" in schemas["input_schema"]["properties"]


@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
async def test_run_on_the_local_preset(dev_server: DevServer) -> None:
    client = _client(dev_server)
    thread = await client.threads.create()
    started = time.monotonic()
    state = await client.runs.wait(
        thread["thread_id"],
        GRAPH_ID,  # a graph id stands for its default assistant
        input={"messages": [{"role": "user", "content": "What is photosynthesis?"}]},
        context={"preset": "local"},
    )
    elapsed = time.monotonic() - started
    assert isinstance(state, dict) and "__error__" not in state, state

    reply = state["messages"][-1]
    assert reply["type"] == "ai", state["messages"]
    assert isinstance(reply["content"], str) and reply["content"].strip()
    fusion = reply["response_metadata"]["fusion"]
    assert fusion["preset"] == "local"
    assert fusion["panel"], fusion
    assert any(entry.get("content") for entry in fusion["panel"]), fusion["panel"]
    print(f"local run through langgraph dev: {elapsed:.1f} s, {len(fusion['panel'])} panelists")

    # The run went through the server's checkpointer: the thread holds the same final message.
    saved = await client.threads.get_state(thread["thread_id"])
    assert saved["values"]["messages"][-1]["content"] == reply["content"]
