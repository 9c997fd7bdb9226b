"""Cold start: a fresh process's first `graph.invoke` against its warm runs, same critical path.

    python -m bench.cold_start [--processes 3] [--warm 3] [--critical 3.0]

Each process is new (`python -m bench.cold_start --child URL`): it imports the public API, builds
the graph, waits until the client stack the build loads in the background is ready (reported
as `ready_s`: zero when the process had other work meanwhile, as a server or the CLI has), runs
`graph.invoke` once (the first run), then `--warm` more times with the same models. Every
run's critical path (slowest panelist + judge + synthesis) comes from the fake upstream's
records of that run, so the row compares overheads (wall - critical path), not configured
latencies. Item 1's panel shape (N=3) scaled to a `--critical` second path.
The upstream is its own process (bench/fake_upstream.py); nothing else runs meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.fake_upstream import UpstreamProcess
from bench.plans import JUDGE_S, PANEL_HI_S, QUESTION, SYNTH_S, Sample, join, spread_plan, tag

N = 3


def child(base_url: str, warm: int, critical_s: float) -> None:
    """One fresh process: import, build, first run, warm runs; one JSON line on stdout."""
    import random

    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    started = time.monotonic()
    from fusiongraph import build_graph

    imported = time.monotonic()
    graph = build_graph()
    built = time.monotonic()
    from fusiongraph.graph.prewarm import wait_client_prewarm

    wait_client_prewarm()  # the client stack the build started loading (graph/prewarm.py)
    ready = time.monotonic()
    from langchain_core.messages import HumanMessage

    scale = critical_s / (PANEL_HI_S + JUDGE_S + SYNTH_S)
    plan = spread_plan(N, random.Random(0), scale)
    runs = []
    for _ in range(1 + warm):
        run_tag = tag()
        begin = time.monotonic()
        out = graph.invoke(
            {"messages": [HumanMessage(f"[bench:{run_tag}] {QUESTION}")]}, context=plan.context()
        )
        end = time.monotonic()
        ok = bool(out["messages"][-1].text)
        runs.append({"tag": run_tag, "start": begin, "end": end, "ok": ok})
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "build_s": built - imported,
                "ready_s": ready - built,
                "runs": runs,
            }
        ),
        flush=True,
    )


def measure(processes: int, warm: int, critical_s: float) -> dict[str, Any]:
    """Run `processes` fresh children against one upstream; join each run with its records."""
    first: list[Sample] = []
    warm_runs: list[Sample] = []
    imports: list[dict[str, Any]] = []
    with UpstreamProcess() as upstream:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        for _ in range(processes):
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "bench.cold_start", "--child", upstream.base_url),
                    *("--warm", str(warm), "--critical", str(critical_s)),
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=True,
            )
            report = json.loads(done.stdout.strip().splitlines()[-1])
            imports.append(report)
            records = upstream.records()
            samples = [
                join(Sample(tag=r["tag"], start=r["start"], end=r["end"], ok=r["ok"]), records)
                for r in report["runs"]
            ]
            first.append(samples[0])
            warm_runs.extend(samples[1:])
    return summarise(first, warm_runs, imports)


def summarise(
    first: list[Sample], warm: list[Sample], setups: list[dict[str, Any]]
) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    first_over = [s.overhead_ms for s in first if s.overhead_ms is not None]
    warm_over = [s.overhead_ms for s in warm if s.overhead_ms is not None]
    return {
        "processes": len(first),
        "ok": all(s.ok for s in first + warm),
        "critical_s": med([s.critical_s for s in first + warm if s.critical_s]),
        "first_wall_s": med([s.wall_s for s in first]),
        "warm_wall_s": med([s.wall_s for s in warm]),
        "first_overhead_ms": med(first_over),
        "warm_overhead_ms": med(warm_over),
        "first_minus_warm_ms": med(first_over) - med(warm_over),
        "first_over_warm": med([s.wall_s for s in first]) / med([s.wall_s for s in warm]),
        "first_gaps_ms": gaps(first),
        "warm_gaps_ms": gaps(warm),
        "import_s": med([s["import_s"] for s in setups]),
        "build_s": med([s["build_s"] for s in setups]),
        "ready_s": med([s["ready_s"] for s in setups]),
    }


def gaps(samples: list[Sample]) -> dict[str, float]:
    """Median of each gap of the runs (where the overhead went)."""
    keys = samples[0].gap_ms or {}
    return {
        k: round(statistics.median([(s.gap_ms or {}).get(k, 0.0) for s in samples]), 1)
        for k in keys
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--critical", type=float, default=3.0, help="critical path, seconds")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.warm, args.critical)
        return
    result = measure(args.processes, args.warm, args.critical)
    print(json.dumps(result, indent=2))
    print(
        f"| cold first run, graph, N={N} | {result['critical_s']:.2f} s | first "
        f"{result['first_wall_s']:.3f} s, warm {result['warm_wall_s']:.3f} s "
        f"(x{result['first_over_warm']:.3f}) | overhead first {result['first_overhead_ms']:.0f} ms"
        f", warm {result['warm_overhead_ms']:.0f} ms: first - warm "
        f"{result['first_minus_warm_ms']:.0f} ms | target <= 100 ms |"
    )


if __name__ == "__main__":
    main()
