"""Replicas: two real `fusiongraph serve` processes on one real PostgreSQL (and one Redis).

The replicas run the real model factory (ChatOpenAI over HTTP) against a fake OpenAI upstream on
127.0.0.1 that counts requests per model and can hold one. A request on replica A is held at
its third panelist; once the first two have answered and their writes are saved, replica A (its
whole process group) is SIGKILLed. The client retries with the same `X-Fusion-Thread-Id` on
replica B, which resumes the run from PostgreSQL: the finished panelists are not asked again.
The same request on a replica started later (a process that never saw the run) then replays
the stored answer without a call. With `--cache redis://...`, an identical request on a new
thread on the other replica is answered from the panel answers the first replica paid for.
The first replica takes its settings as options, the others as the environment variables that
compose.yaml sets: the deployment's configuration is the one tested here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fusiongraph.serve.runs import THREAD_HEADER
from tests.integration.services import postgres_url, redis_url
from tests.integration.test_durable_kill import (
    FakeOpenAI,
    panel_context,
    saved_panel_answers,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

ALIAS = "fusion-replicated"
QUESTION = {"model": ALIAS, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
FUSIONGRAPH = Path(sys.executable).with_name("fusiongraph")
ENV_OF = {"--checkpointer": "FUSIONGRAPH_CHECKPOINTER", "--cache": "FUSIONGRAPH_CACHE"}


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with fake.server:
        yield fake
        fake.release.set()


def write_aliases(path: Path, base: str) -> Path:
    """The operator's alias: the panel of tests/integration/test_durable_kill.py."""
    path.write_text(json.dumps({ALIAS: panel_context(base)}))
    return path


class Replica:
    """One `fusiongraph serve` process (in its own process group) on a free loopback port."""

    def __init__(self, args: list[str], log: Path, settings: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "FUSIONGRAPH_API_KEYS": "",
            # The alias is the model under test; on the default `local` preset `serve` would
            # start the local model at boot (serve/health.py).
            "FUSIONGRAPH_PRESET": "quality",
            **settings,
        }
        cmd = [str(FUSIONGRAPH), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            cmd,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"replica exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"replica not ready in {timeout_s}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL the replica: the server process and any worker it forked."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def replicas(
    count: int, args: list[str], settings: dict[str, str], tmp_path: Path, name: str
) -> Iterator[list[Replica]]:
    """`count` replicas; `settings` (option -> value) go to the first as command-line options and
    to the others as the environment variables compose.yaml sets (FUSIONGRAPH_CHECKPOINTER, ...)."""
    flags = [part for option, value in settings.items() for part in (option, value)]
    env = {ENV_OF[option]: value for option, value in settings.items()}
    started = [
        Replica(
            [*args, *flags] if i == 0 else args, tmp_path / f"{name}{i}.log", {} if i == 0 else env
        )
        for i in range(count)
    ]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


def post(url: str, thread_id: str | None, timeout_s: float = 120) -> httpx.Response:
    headers = {THREAD_HEADER: thread_id} if thread_id else {}
    return httpx.post(
        f"{url}/v1/chat/completions", json=QUESTION, headers=headers, timeout=timeout_s
    )


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_a_run_killed_on_one_replica_resumes_on_the_other_and_replays_anywhere(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    pg = postgres_url()
    aliases = write_aliases(tmp_path / "aliases.json", upstream.server.url("/v1"))
    args = ["--aliases", str(aliases), "--log-level", "warning"]
    settings = {"--checkpointer": pg}
    thread_id = f"replica-{os.getpid()}-{time.time_ns()}"
    upstream.hold = {"m3"}

    with replicas(2, args, settings, tmp_path, "replica") as (a, b):
        # The client's first try, on replica A: it never gets an answer.
        outcome: dict[str, Any] = {}

        def first_try() -> None:
            try:
                outcome["response"] = post(a.url, thread_id)
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        client = threading.Thread(target=first_try, daemon=True)
        client.start()
        deadline = time.monotonic() + 60
        while not (
            upstream.answered["m1"] == upstream.answered["m2"] == 1
            and upstream.arrived["m3"] == 1
            and saved_panel_answers(pg, thread_id) == 2
        ):
            assert a.process.poll() is None, a.log.read_text()
            assert time.monotonic() < deadline, (dict(upstream.arrived), dict(upstream.answered))
            time.sleep(0.05)
        a.kill()
        client.join(30)
        assert "response" not in outcome, "the killed replica answered"
        assert upstream.answered["judge"] == upstream.answered["synth"] == 0

        # The retry, on replica B: resumed from PostgreSQL; only m3 is asked again.
        upstream.hold = set()
        retried = post(b.url, thread_id)
        assert answer(retried) == "Final answer."
        assert retried.headers[THREAD_HEADER] == thread_id
        fusion = retried.json()["fusion"]
        assert sorted(p["panelist"] for p in fusion["panel"]) == ["p1", "p2", "p3"]
        assert dict(upstream.arrived) == {"m1": 1, "m2": 1, "m3": 2, "judge": 1, "synth": 1}

    # A finished run is replayed from any replica, a process that never saw it included.
    with replicas(2, args, settings, tmp_path, "later") as later:
        c = later[1]  # configured through the environment, as in compose.yaml
        replayed = post(c.url, thread_id)
        assert answer(replayed) == "Final answer."
    assert dict(upstream.arrived) == {"m1": 1, "m2": 1, "m3": 2, "judge": 1, "synth": 1}


def test_replicas_share_the_panel_cache_through_redis(upstream: FakeOpenAI, tmp_path: Path) -> None:
    import redis

    url = redis_url()
    with redis.Redis.from_url(url) as client:
        client.flushdb()  # a cache left by an earlier run would answer for the first replica
    aliases = write_aliases(tmp_path / "aliases.json", upstream.server.url("/v1"))
    args = ["--aliases", str(aliases), "--log-level", "warning"]

    with replicas(2, args, {"--cache": url}, tmp_path, "cached") as (a, b):
        assert answer(post(a.url, None)) == "Final answer."
        assert dict(upstream.arrived) == {"m1": 1, "m2": 1, "m3": 1, "judge": 1, "synth": 1}
        second = post(b.url, None)
        assert answer(second) == "Final answer."
    # Replica B asked no panelist: their answers came from Redis, marked as cached and free.
    assert dict(upstream.arrived) == {"m1": 1, "m2": 1, "m3": 1, "judge": 2, "synth": 2}
    panel = second.json()["fusion"]["panel"]
    assert [p.get("cached") for p in panel] == [True, True, True]
    with redis.Redis.from_url(url) as client:
        assert client.keys("fusiongraph:cache:*")
