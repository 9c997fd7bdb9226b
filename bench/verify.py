"""verify against synthesize and select on the same code items, on the fake upstream.

    .venv/bin/python -m bench.verify --runs 5

A panel of three where two panelists give the same wrong `median` (no averaging of the middle
pair) and one the right one; the judge (scripted on the fake upstream) writes verify's tests
and, for the other strategies, its usual analysis. Each strategy runs the same item in turn
(one run of each, then the next round), through the graph with the real OpenAI clients over
HTTP, and reports per run:

- calls: the upstream requests the run made (counted in the upstream's records);
- wall: the run's wall time, p50 (p95);
- sandbox wall: the sandbox's time as the run record reports it (`sandbox_s`: the candidates'
  runs, two at a time, added up);
- sandbox CPU: the user + system CPU of the sandboxes' processes, as this process's reaped
  children. Under bubblewrap the candidate runs in a PID namespace whose processes are never
  reaped into this process's account (a busy second shows as a few ms), so the CPU is measured
  on the `verify (process runner)` row: the same harness and work without the namespaces
  (FUSIONGRAPH_SANDBOX=process), what the candidates' Python costs;
- right: the runs whose final answer passes the item's hidden tests (run in the sandbox after
  the run's figures are taken; never shown to any model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from typing import Any

from langchain_core.messages import HumanMessage

from bench.stats import pct
from fusiongraph.graph.answers import extract_code
from fusiongraph.graph.builder import build_graph
from fusiongraph.tools.check_cases import run_tests
from fusiongraph.tools.sandbox import BACKEND_ENV
from tests.support.upstream import Behaviour, FakeUpstream, UpstreamServer

STRATEGIES = ("synthesize", "select", "verify")
ROWS = (*STRATEGIES, "verify (process runner)")
TASK = "Write a Python function median(xs) that returns the median of a list of numbers."
RIGHT = "```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n" + (
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```"
)
WRONG = "```python\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```"
REWRITTEN = RIGHT.replace("s = sorted", "s=sorted")  # a synthesis: the code, rewritten
TESTS = {
    "entry_point": "median",
    "tests": [
        {"args": [[3, 1, 2]], "expected": 2, "reasoning": "odd length: the middle one"},
        {"args": [[4, 1, 3, 2]], "expected": 2.5, "reasoning": "even: the mean of 2 and 3"},
        {"args": [[5]], "expected": 5, "reasoning": "one element"},
        {"args": [[-1, -3]], "expected": -2, "reasoning": "negatives, even length"},
    ],
}
HIDDEN = "assert median([10, 20, 30, 40]) == 25\nassert median([7, 1, 3]) == 3\n"
MODELS = {
    "p1-0.300s": Behaviour(ttft_s=0.3, chunks=1, content=WRONG),
    "p2-0.400s": Behaviour(ttft_s=0.4, chunks=1, content=WRONG),
    "p3-0.500s": Behaviour(ttft_s=0.5, chunks=1, content=RIGHT),
    "judge-0.300s": Behaviour(ttft_s=0.3, chunks=1, content=json.dumps(TESTS)),
    "synth-0.350s": Behaviour(ttft_s=0.35, chunks=1, content=REWRITTEN),
}


def children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def one_run(graph: Any, upstream: FakeUpstream, url: str, row: str) -> dict[str, Any]:
    strategy = row.split()[0]
    if row.endswith("(process runner)"):
        os.environ[BACKEND_ENV] = "process"
    else:
        os.environ.pop(BACKEND_ENV, None)
    spec = lambda name: {"model": name, "base_url": url}  # noqa: E731
    context = {
        "panel": [spec(name) for name in ("p1-0.300s", "p2-0.400s", "p3-0.500s")],
        "judge": spec("judge-0.300s"),
        "synthesizer": spec("synth-0.350s"),
        "tool_mode": "off",
        "aggregation": strategy,
    }
    before_calls, before_cpu = len(upstream.records), children_cpu_s()
    started = time.perf_counter()
    state = await graph.ainvoke({"messages": [HumanMessage(content=TASK)]}, context=context)
    wall = time.perf_counter() - started
    cpu = children_cpu_s() - before_cpu
    final = state["messages"][-1]
    checked = final.response_metadata["fusion"]["aggregation"].get("verify") or {}
    graded = await asyncio.to_thread(run_tests, extract_code(final.text), HIDDEN, "median")
    return {
        "row": row,
        "calls": len(upstream.records) - before_calls,
        "wall_s": wall,
        "sandbox_cpu_s": cpu,
        "sandbox_s": checked.get("sandbox_s", 0.0),
        "right": graded.passed,
    }


async def main(runs: int) -> list[dict[str, Any]]:
    upstream = FakeUpstream(MODELS)
    samples: list[dict[str, Any]] = []
    with UpstreamServer(upstream) as server:
        graph = build_graph()
        for row in ROWS:  # one warm-up run each: clients built, nothing recorded
            await one_run(graph, upstream, server.base_url, row)
        for _ in range(runs):
            for row in ROWS:
                samples.append(await one_run(graph, upstream, server.base_url, row))
    os.environ.pop(BACKEND_ENV, None)
    return samples


def table(samples: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | calls / run | wall p50 (p95) s | sandbox CPU / run s | sandbox wall / run s "
        "| right |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        rows = [s for s in samples if s["row"] == row]
        walls = [r["wall_s"] for r in rows]
        n = len(rows)
        lines.append(
            f"| {row} | {sum(r['calls'] for r in rows) / n:.1f} "
            f"| {pct(walls, 50) or 0.0:.3f} ({pct(walls, 95) or 0.0:.3f}) "
            f"| {sum(r['sandbox_cpu_s'] for r in rows) / n:.3f} "
            f"| {sum(r['sandbox_s'] for r in rows) / n:.3f} "
            f"| {sum(r['right'] for r in rows)}/{n} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per strategy")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    print(table(asyncio.run(main(args.runs))))
