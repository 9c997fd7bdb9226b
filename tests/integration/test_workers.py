"""`fusiongraph serve --workers 2` as a real process on the fake upstream: both workers serve,
/metrics (from whichever worker answers) sums both, SIGTERM stops all of them with exit 0, and a
setting that cannot work across processes is refused before any worker starts."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server_process import ServeProcess
from tests.support.servers import wait_for
from tests.support.upstream import FakeUpstream, UpstreamServer

ALIASES = {
    "fusion-fast": {
        "panel": ["openai:pa-0.300s", "openai:pb-0.200s"],
        "judge": "openai:judge-0.050s",
        "synthesizer": "openai:synth-0.050s",
        "tool_mode": "off",
    }
}
RUNS = 24
BURSTS = 10


@pytest.fixture(scope="module")
def upstream() -> Any:
    with UpstreamServer(FakeUpstream(chunks=3, chunk_delay_s=0.01)) as server:
        yield server


async def burst(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "fusion-fast",
                        "messages": [{"role": "user", "content": f"[bench:w{i}] Why?"}],
                    },
                )
                for i in range(n)
            )
        )


def worker_processes(server: ServeProcess) -> list[psutil.Process]:
    """The supervisor's workers (not multiprocessing's resource tracker beside them)."""
    return [
        child
        for child in psutil.Process(server.proc.pid).children()
        if "resource_tracker" not in " ".join(child.cmdline())
    ]


def served_by(metrics_dir: Path) -> set[int]:
    """The pids of the workers that have written a counter file, i.e. finished a run."""
    return {
        int(m.group(1))
        for f in metrics_dir.iterdir()
        if (m := re.fullmatch(r"counter_(\d+)\.db", f.name))
    }


def runs_ok(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fusion_runs_total" and s.labels.get("outcome") == "ok"
    )


def test_two_workers_serve_and_metrics_sum_both(upstream: UpstreamServer, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with ServeProcess(
        upstream.base_url,
        ALIASES,
        tmp_path,
        "--workers",
        "2",
        "--grace-s",
        "5",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    ) as server:
        workers = worker_processes(server)
        assert len(workers) == 2
        # Both workers must be up before the bursts (one that is ready takes every connection).
        assert wait_for(lambda: server.output().count("Application startup complete") == 2, 60)
        # The kernel hands each connection to whichever worker accepts first, so one burst may
        # all land on one worker: burst until both have served (each writes its own counter
        # file, by pid, once it has finished a run).
        pids = {w.pid for w in workers}
        runs = 0
        while served_by(metrics_dir) != pids and runs < RUNS * BURSTS:
            responses = asyncio.run(burst(server.url, RUNS))
            assert [r.status_code for r in responses] == [200] * RUNS
            runs += RUNS
        assert served_by(metrics_dir) == pids, server.output()[-2000:]
        # Any worker answers /metrics with the sum of both; scrape several times to hit both.
        for _ in range(6):
            assert runs_ok(httpx.get(f"{server.url}/metrics", timeout=5).text) == runs
        server.terminate()
        assert server.wait(30) == 0, server.output()[-3000:]
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_more_workers_refuse_an_in_memory_checkpointer(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusiongraph.serve.cli",
            "serve",
            "--workers",
            "2",
            "--checkpointer",
            "memory",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--checkpointer memory" in result.stderr


def test_a_killed_supervisor_takes_its_workers_with_it(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    with ServeProcess(upstream.base_url, ALIASES, tmp_path, "--workers", "2") as server:
        workers = worker_processes(server)
        server.proc.kill()  # SIGKILL: no chance to stop them
        server.proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
