"""Load and leak check: many fusion requests through the real server, on the fake upstream.

    python -m bench.load [--requests 1000] [--concurrency 100] [--call-s 0.05] [--stream-every 2]

The fake upstream (bench.fake_upstream, its own process) answers every call after `--call-s`;
the server (`fusiongraph serve`, its own process) runs an alias with a panel of N=3, a judge and
a synthesizer on it. `--requests` requests go through httpx at `--concurrency` in flight, every
`--stream-every`-th one streamed (SSE). A request counts as a success only when it is a 200 with
a non-empty answer (streamed: content chunks, no error event, `data: [DONE]`).

Memory: the server's RSS (psutil) once the first 100 requests have completed (`rss_100`, the
working set of a full concurrency wave) and after all of them (`rss_end`). PASS when no request
failed and rss_end <= 1.10 x rss_100 (no leak). Results on stdout and in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import RESULTS_DIR
from bench.fake_upstream import UpstreamProcess
from bench.plans import QUESTION
from bench.server import ServerProcess

ALIAS = "bench-load"
MAX_GROWTH = 1.10
CHECKPOINT = 100


def start_server(upstream_url: str, call_s: float, workdir: Path) -> ServerProcess:
    """`fusiongraph serve` in a subprocess with one alias: a panel of 3 on the fake upstream."""
    lat = f"{call_s:.3f}s"
    alias = {
        ALIAS: {
            "preset": "quality",
            "panel": [f"openai:load{i}-{lat}" for i in (1, 2, 3)],
            "judge": f"openai:judge-{lat}",
            "synthesizer": f"openai:synth-{lat}",
            "tool_mode": "off",
            "search_provider": "none",
        }
    }
    aliases = workdir / "aliases.json"
    aliases.write_text(json.dumps(alias))
    return ServerProcess(upstream_url, extra_args=["--aliases", str(aliases)])


@dataclass
class Outcome:
    ok: bool
    latency_s: float
    error: str | None = None


async def one_request(client: httpx.AsyncClient, url: str, stream: bool) -> Outcome:
    """One fusion request; ok only for a complete, non-empty answer."""
    body: dict[str, Any] = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": stream,
    }
    started = time.monotonic()
    try:
        if not stream:
            response = await client.post(url, json=body)
            if response.status_code != 200:
                return Outcome(False, 0.0, f"HTTP {response.status_code}: {response.text[:200]}")
            content = response.json()["choices"][0]["message"]["content"]
            return Outcome(bool(content), time.monotonic() - started, None if content else "empty")
        text, done, error = [], False, None
        async with client.stream("POST", url, json={**body}) as response:
            if response.status_code != 200:
                raw = await response.aread()
                return Outcome(False, 0.0, f"HTTP {response.status_code}: {raw[:200]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = str(chunk["error"])[:200]
                for choice in chunk.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
        ok = done and error is None and bool("".join(text))
        return Outcome(ok, time.monotonic() - started, error or (None if ok else "incomplete"))
    except Exception as exc:
        return Outcome(False, 0.0, f"{type(exc).__name__}: {exc}"[:200])


@dataclass
class Report:
    requests: int
    concurrency: int
    call_s: float
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    throughput_rps: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_100_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    growth: float = 0.0
    passed: bool = False


async def load(args: argparse.Namespace) -> Report:
    report = Report(args.requests, args.concurrency, args.call_s)
    with tempfile.TemporaryDirectory() as tmp, UpstreamProcess(chunks=5, chunk_delay_s=0.002) as up:
        server = start_server(up.base_url, args.call_s, Path(tmp))
        completions_url = f"{server.base_url}/chat/completions"
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        try:
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                for i in range(4):  # warm-up: imports, first clients, both response kinds
                    warm = await one_request(client, completions_url, stream=bool(i % 2))
                    if not warm.ok:
                        raise RuntimeError(f"warm-up request failed: {warm.error}")
                report.rss_start_mb = server.rss_mb()
                outcomes = await _drive(client, server, args, report)
            report.rss_end_mb = server.rss_mb()
        finally:
            server.stop()
            up.clear()
    failed = [o for o in outcomes if not o.ok]
    report.failures = len(failed)
    report.errors = dict(Counter(o.error or "?" for o in failed).most_common(5))
    latencies = sorted(o.latency_s for o in outcomes if o.ok)
    if latencies:
        report.latency_p50_s = round(statistics.median(latencies), 3)
        report.latency_p95_s = round(latencies[int(0.95 * (len(latencies) - 1))], 3)
    report.throughput_rps = round(args.requests / report.wall_s, 1) if report.wall_s else 0.0
    report.growth = round(report.rss_end_mb / report.rss_100_mb, 3) if report.rss_100_mb else 0
    report.passed = report.failures == 0 and report.growth <= MAX_GROWTH
    return report


async def _drive(
    client: httpx.AsyncClient, server: ServerProcess, args: argparse.Namespace, report: Report
) -> list[Outcome]:
    """Keep `concurrency` requests in flight until `requests` are done; sample RSS meanwhile."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    outcomes: list[Outcome] = []
    peak = [server.rss_mb()]
    stop = asyncio.Event()

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            stream = args.stream_every > 0 and i % args.stream_every == 0
            outcomes.append(
                await one_request(client, f"{server.base_url}/chat/completions", stream)
            )
            if len(outcomes) == min(CHECKPOINT, args.requests):
                report.rss_100_mb = server.rss_mb()

    async def sampler() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_mb())
            await asyncio.sleep(0.05)

    started = time.monotonic()
    watch = asyncio.create_task(sampler())
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    report.wall_s = round(time.monotonic() - started, 2)
    stop.set()
    await watch
    report.rss_peak_mb = round(peak[0], 1)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--call-s", type=float, default=0.05, help="latency of each upstream call")
    parser.add_argument(
        "--stream-every", type=int, default=2, help="stream every k-th request (0: never)"
    )
    args = parser.parse_args(argv)
    report = asyncio.run(load(args))
    for name in ("rss_start_mb", "rss_100_mb", "rss_end_mb"):
        setattr(report, name, round(getattr(report, name), 1))
    print(
        f"{report.requests} requests at concurrency {report.concurrency} "
        f"(N=3 panel, {report.call_s * 1000:.0f} ms per upstream call): "
        f"{report.failures} failed, {report.wall_s} s, {report.throughput_rps} req/s, "
        f"latency p50 {report.latency_p50_s} s / p95 {report.latency_p95_s} s"
    )
    if report.errors:
        print(f"errors: {report.errors}")
    print(
        f"server RSS: {report.rss_start_mb} MB after warm-up, {report.rss_100_mb} MB after the "
        f"first {CHECKPOINT}, {report.rss_end_mb} MB after all (peak {report.rss_peak_mb} MB); "
        f"end / after-{CHECKPOINT} = {report.growth} (limit {MAX_GROWTH})"
    )
    print("PASS" if report.passed else "FAIL")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(asdict(report), indent=1))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
