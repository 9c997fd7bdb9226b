"""`fusiongraph serve` as a real subprocess on 127.0.0.1, for the workers and shutdown tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import LOOPBACK, free_port


class ServeProcess:
    """The CLI's server with `aliases` (model name -> fusion settings) on the fake upstream."""

    def __init__(
        self,
        upstream_url: str,
        aliases: dict[str, dict[str, Any]],
        workdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        alias_file = workdir / "aliases.json"
        alias_file.write_text(json.dumps(aliases))
        self.log_path = workdir / f"server-{self.port}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fusiongraph.serve.cli",
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--aliases",
                str(alias_file),
                "--log-level",
                "info",
                *args,
            ],
            env={
                **os.environ,
                "OPENAI_BASE_URL": upstream_url,
                "OPENAI_API_KEY": "test-key",
                "FUSIONGRAPH_API_KEYS": "",
                "PYTHONUNBUFFERED": "1",
                # These servers serve their aliases; on the default `local` preset `serve` would
                # start the local model at boot (serve/health.py). `env` may set it back.
                "FUSIONGRAPH_PRESET": "quality",
                **(env or {}),
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 90) -> ServeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.output()[-3000:]}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def __enter__(self) -> ServeProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuses_connections(url: str) -> bool:
    """True when nothing accepts a connection at `url` any more."""
    try:
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False
