"""The fake OpenAI-compatible upstream as its own process, for the benchmark.

The app itself (latency from the model name, SSE in chunks, every request recorded) is
tests/support/upstream.py, shared with the tests. Here it runs as a process, so its CPU never
competes with the measured process:

    python -m bench.fake_upstream --port 0 [--chunks 10] [--chunk-delay 0.01] [--model NAME=TTFT]

prints `FAKE_UPSTREAM_URL=http://127.0.0.1:PORT/v1`; GET /_bench/requests?since=ID returns the
records, DELETE /_bench/requests clears them (`UpstreamProcess` wraps both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import httpx

from tests.support.servers import bind, uvicorn_server
from tests.support.upstream import UVICORN_CONFIG, Behaviour, FakeUpstream, RequestRecord

__all__ = ["Behaviour", "FakeUpstream", "RequestRecord", "UpstreamProcess", "main"]


class UpstreamProcess:
    """The fake upstream in its own process, so its CPU never competes for our GIL."""

    def __init__(self, chunks: int = 10, chunk_delay_s: float = 0.01) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fake_upstream",
                "--port",
                "0",
                "--chunks",
                str(chunks),
                "--chunk-delay",
                str(chunk_delay_s),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("FAKE_UPSTREAM_URL="):
            self.proc.kill()
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        self.base_url = line.split("=", 1)[1]
        self._root = self.base_url.removesuffix("/v1")
        self._client = httpx.Client(timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def records(self, since: int = 0) -> list[RequestRecord]:
        rows = self._client.get(f"{self._root}/_bench/requests", params={"since": since}).json()
        return [RequestRecord(**row) for row in rows]

    def clear(self) -> None:
        self._client.delete(f"{self._root}/_bench/requests").raise_for_status()

    def stop(self) -> None:
        self._client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="seconds between chunks")
    parser.add_argument(
        "--default-latency", type=float, default=0.0, help="for names without a latency"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=TTFT[:CHUNKS:DELAY]",
        help="an explicit behaviour; repeat",
    )
    args = parser.parse_args(argv)
    models = {}
    for item in args.model:
        name, _, spec = item.partition("=")
        ttft, chunks, delay = ([*spec.split(":"), None, None])[:3]
        models[name] = Behaviour(
            ttft_s=float(ttft),
            chunks=int(chunks) if chunks else args.chunks,
            chunk_delay_s=float(delay) if delay else args.chunk_delay,
        )
    app = FakeUpstream(
        models,
        chunks=args.chunks,
        chunk_delay_s=args.chunk_delay,
        default_latency_s=args.default_latency,
    )
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(f"FAKE_UPSTREAM_URL=http://{host}:{port}/v1", flush=True)
    uvicorn_server(app, **UVICORN_CONFIG).run(sockets=[sock])


if __name__ == "__main__":
    main()
