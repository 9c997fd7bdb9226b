"""The real server (`fusiongraph serve`) in a subprocess, and a sampler of its memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import httpx
import psutil

from bench import RESULTS_DIR
from tests.support.servers import free_port


class ServerProcess:
    """`fusiongraph serve` in a subprocess, so its RSS and CPU are its own (with `workers` > 1:
    the supervisor's and its workers', summed)."""

    def __init__(
        self, upstream_url: str, extra_args: Sequence[str] = (), *, workers: int = 1
    ) -> None:
        self.port = free_port()
        RESULTS_DIR.mkdir(exist_ok=True)
        self.log_path = RESULTS_DIR / f"server-{self.port}.log"
        self.log = self.log_path.open("w")
        env = {
            **os.environ,
            "OPENAI_BASE_URL": upstream_url,
            "OPENAI_API_KEY": "bench",
            "FUSIONGRAPH_API_KEYS": "",
            # Every bench run names its models: the server's default model must not be the
            # local one, or `serve` starts the bundled llama.cpp server at boot (item 4's RSS).
            "FUSIONGRAPH_PRESET": "quality",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fusiongraph.serve.cli",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--workers",
                str(workers),
                *extra_args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in _tree(self.ps))

    def rss_mb(self) -> float:
        return tree_rss_mb(self.ps)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def tree_rss_mb(proc: psutil.Process) -> float:
    """RSS of a process and its children (a server's workers), in MB."""
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


class RssSampler:
    """Polls a process's RSS in a thread and keeps the peak."""

    def __init__(self, proc: psutil.Process, every_s: float = 0.02) -> None:
        self.proc, self.every_s = proc, every_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, tree_rss_mb(self.proc))
            except psutil.Error:
                return
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
