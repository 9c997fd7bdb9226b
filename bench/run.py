"""Latency, streaming and cost of a fusion run, as ratios measured in one run of this script.

    python -m bench.run [--runs 30] [--quick] [--items 1,2,3,4,5] [--scale 4]

Everything talks real HTTP on 127.0.0.1: the fake upstream (bench.fake_upstream) runs in its
own process; the graph is driven in this process with the real default model factory (real
ChatOpenAI clients); the HTTP measurements go through the real server (`fusiongraph serve`) in
a subprocess, called with httpx. Every critical path comes from the upstream's own records of
the run (arrival, first chunk, completion of each call), never from the configured latencies.

1. overhead = wall / (slowest panelist + judge + synthesis), N = 1, 3, 8, graph and HTTP.
2. time to first answer token minus the upstream's own time to its first synthesis token
   (slowest panelist + judge + synthesis time-to-first-chunk).
3. one panelist never answers, quorum N-1: wall / (second-slowest + grace + judge + synthesis),
   the straggler's request really cancelled; and the same run without quorum or deadline.
4. 200 concurrent fusion requests (N=3, 1 s per upstream call) through the server: all succeed,
   p95 overhead, peak RSS of the server process, CPU ms per fusion run.
5. early exit and cascade (N=3, a panel that agrees or disagrees): upstream calls made and wall
   time against the full path (synthesize), as ratios (bench/savings.py).

Results: a table on stdout and JSON in bench/results/.

The parts: bench/plans.py (the models of each run, one run's sample), bench/drivers.py (the
graph and the HTTP surfaces), bench/server.py (the server process), bench/stats.py (percentiles,
the table), bench/items.py (the four measurements). The fake upstream runs as a process from
bench/fake_upstream.py; its app is tests/support/upstream.py, which the tests use as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import RESULTS_DIR
from bench.drivers import Driver, GraphDriver, HttpDriver
from bench.fake_upstream import UpstreamProcess
from bench.items import item_load, item_overhead, item_quorum
from bench.plans import LOAD_CALL_S
from bench.savings import item_savings
from bench.server import ServerProcess
from bench.stats import Row, table

CHUNKS, CHUNK_DELAY_S = 10, 0.01


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import langgraph.version

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "langgraph": langgraph.version.__version__,
        "loadavg_start": os.getloadavg(),
    }


async def main_async(args: argparse.Namespace) -> int:
    items = {int(x) for x in args.items.split(",")}
    sizes = [int(x) for x in args.sizes.split(",")]
    rng = random.Random(args.seed)
    log = print
    info = machine()
    log(f"machine: {json.dumps(info)}")
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    rows: list[Row] = []
    raw: dict[str, Any] = {"machine": info, "command": command, "args": vars(args)}
    started = time.monotonic()
    with UpstreamProcess(chunks=CHUNKS, chunk_delay_s=CHUNK_DELAY_S) as upstream:
        os.environ["OPENAI_BASE_URL"] = upstream.base_url
        os.environ["OPENAI_API_KEY"] = "bench"
        if items & {1, 2, 3}:

            async def surface(driver: Driver, server: ServerProcess | None) -> None:
                """Items 1-2 and 3 through one surface; raw keys `graph`, `graph_quorum`, ..."""
                nonlocal rows
                if items & {1, 2}:
                    log(f"\n== {driver.name}: overhead and first token")
                    r, raw[driver.name] = await item_overhead(
                        driver,
                        upstream,
                        args.runs,
                        args.scale,
                        sizes,
                        rng,
                        server,
                        log,
                        not (args.quick or args.no_extras),
                    )
                    rows += r
                if 3 in items:
                    log(f"\n== {driver.name}: quorum")
                    r, raw[f"{driver.name}_quorum"] = await item_quorum(
                        driver, upstream, args.runs, args.scale, rng, log
                    )
                    rows += r

            await surface(GraphDriver(), None)
            server = ServerProcess(upstream.base_url)
            try:
                async with httpx.AsyncClient(timeout=120) as client:
                    await surface(HttpDriver(server.base_url, client), server)
            finally:
                server.stop()
        if 5 in items:
            log("\n== graph: early exit and cascade against the full path")
            r, raw["savings"] = await item_savings(
                GraphDriver(), upstream, args.runs, args.scale, rng, log
            )
            rows += r
        if 4 in items:
            log(f"\n== http: {args.concurrency} concurrent runs")
            r, raw["load"] = await item_load(
                upstream, args.concurrency, args.load_call_s, log, args.load_workers
            )
            rows += r
    info["loadavg_end"] = os.getloadavg()
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    text = table(rows)
    log(f"\n{command}\n{text}\n(total {info['elapsed_s']} s)")
    raw["rows"] = [asdict(r) for r in rows]
    raw["table"] = text
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(raw, indent=1, default=str))
    log(f"results: {out}")
    return 0 if all(r.verdict != "FAIL" for r in rows) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fusiongraph latency, streaming and cost bench")
    parser.add_argument("--runs", type=int, default=30, help="runs per measurement (≥30)")
    parser.add_argument("--quick", action="store_true", help="5 runs, 50 concurrent, no extras")
    parser.add_argument("--items", default="1,2,3,4,5", help="which items to run")
    parser.add_argument("--sizes", default="1,3,8", help="panel sizes for item 1")
    parser.add_argument(
        "--scale",
        type=float,
        default=4.0,
        help="multiply items 1-3 latencies (4: a ~4.4 s critical path; 1: the ~1.1 s stress path)",
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--load-call-s", type=float, default=LOAD_CALL_S)
    parser.add_argument(
        "--load-workers", type=int, default=2, help="item 4: server worker processes"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip item 1's extra rows (N=3 without streaming; the largest N, cold)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 5)
        args.concurrency = min(args.concurrency, 50)
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
