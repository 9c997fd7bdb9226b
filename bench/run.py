"""Latency, streaming and cost of a fusion run, as ratios measured in one run of this script.

    python -m bench.run [--runs 30] [--quick] [--items 1,2,3,4] [--scale 4]

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

Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from langchain_core.messages import HumanMessage

from bench.fake_upstream import RequestRecord, UpstreamProcess
from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.runner import stream_run
from fusiongraph.serve.server import freeze_startup_heap

QUESTION = "Why does water boil at a lower temperature at high altitude?"
RESULTS_DIR = Path(__file__).parent / "results"
CHUNKS, CHUNK_DELAY_S = 10, 0.01

# Items 1-2 at --scale 1: panelists spread over [0.25, 0.45] s (shuffled each run), judge 0.30 s,
# synthesis 0.35 s (streamed: 10 chunks 10 ms apart). Critical path ~1.1 s: a stress path, far
# shorter than any real fusion run. The default --scale 4 (~4.4 s: panelists 1.0-1.8 s, judge
# 1.2 s, synthesis 1.4 s) is still short for hosted models that answer with web search (5-30 s
# per panelist), so the ratios it reports are conservative.
PANEL_LO_S, PANEL_HI_S, JUDGE_S, SYNTH_S = 0.25, 0.45, 0.30, 0.35
# Item 3: N=3, one never answers, quorum 2, grace 0.1 s.
QUORUM_PANEL_S, QUORUM_GRACE_S = (0.25, 0.40), 0.10
# Item 4.
LOAD_N, LOAD_CALL_S = 3, 1.0

TARGET_OVERHEAD_P50, TARGET_OVERHEAD_P95 = 1.01, 1.03
TARGET_TTFT_P95_MS = 50.0
TARGET_QUORUM = 1.03


# --------------------------------------------------------------------------- plans and samples


@dataclass
class Plan:
    """The models of one run (names encode their latency for the fake upstream)."""

    panel: list[str]
    judge: str
    synthesizer: str
    extra: dict[str, Any] = field(default_factory=dict)  # quorum, grace, ...

    def context(self) -> dict[str, Any]:
        return {
            "panel": [f"openai:{m}" for m in self.panel],
            "judge": f"openai:{self.judge}",
            "synthesizer": f"openai:{self.synthesizer}",
            "tool_mode": "off",
            **self.extra,
        }


def spread_plan(n: int, rng: random.Random, scale: float, cold: bool = False) -> Plan:
    """N panelists whose latencies spread over [PANEL_LO_S, PANEL_HI_S], in a new order each run.

    A model is its latency (`m-1.800s` always takes 1.8 s), as in a deployment where the same
    models answer every request and the configured order says nothing about their speed. `cold`
    gives every run models no process has seen (a fresh prefix), so nothing learnt from earlier
    runs (the send order, nodes/send_order.py; the built clients) can help: a process's first run.
    """
    if n == 1:
        lats = [PANEL_HI_S]
    else:
        step = (PANEL_HI_S - PANEL_LO_S) / (n - 1)
        lats = [PANEL_LO_S + i * step for i in range(n)]
    rng.shuffle(lats)
    prefix = f"cold{uuid.uuid4().hex[:8]}" if cold else "m"
    return Plan(
        panel=[f"{prefix}-{lat * scale:.3f}s" for lat in lats],
        judge=f"judge-{JUDGE_S * scale:.3f}s",
        synthesizer=f"synth-{SYNTH_S * scale:.3f}s",
    )


def quorum_plan(rng: random.Random, scale: float, bounded: bool) -> Plan:
    panel = [f"q{i + 1}-{lat * scale:.3f}s" for i, lat in enumerate(QUORUM_PANEL_S)]
    panel.append("q3-never")
    rng.shuffle(panel)
    extra = {"quorum": 2, "straggler_grace_s": QUORUM_GRACE_S} if bounded else {}
    return Plan(
        panel=panel,
        judge=f"judge-{JUDGE_S * scale:.3f}s",
        synthesizer=f"synth-{SYNTH_S * scale:.3f}s",
        extra=extra,
    )


@dataclass
class Sample:
    """One fusion run as the caller saw it (monotonic seconds), joined with the upstream's view."""

    tag: str
    start: float
    end: float
    first_token: float | None = None
    ok: bool = False
    error: str | None = None
    cpu_ms: float | None = None  # this process's CPU over the run (graph surface only)
    wall_s: float = 0.0
    critical_s: float | None = None
    overhead: float | None = None
    overhead_ms: float | None = None
    ttft_over_ms: float | None = None  # client TTFT - upstream TTFT (panel + judge + synth ttft)
    delivery_ms: float | None = None  # first token at the client - first chunk sent upstream
    gap_ms: dict[str, float] = field(default_factory=dict)  # where the overhead went


def tag() -> str:
    return uuid.uuid4().hex[:12]


def join(sample: Sample, records: Sequence[RequestRecord]) -> Sample:
    """Fill in the critical path from the upstream's records of this run."""
    sample.wall_s = sample.end - sample.start
    mine = [r for r in records if r.tag == sample.tag]
    panel = [r for r in mine if r.role == "panel" and not r.disconnected and r.done]
    judges = [r for r in mine if r.role == "judge" and r.done]
    synths = [r for r in mine if r.role == "synthesis" and r.done]
    if not (panel and judges and synths):
        return sample
    slowest = max(panel, key=lambda r: r.done or 0.0)
    judge, synth = judges[-1], synths[-1]
    panel_s = max(r.duration or 0.0 for r in panel)
    sample.critical_s = panel_s + (judge.duration or 0.0) + (synth.duration or 0.0)
    sample.overhead = sample.wall_s / sample.critical_s
    sample.overhead_ms = (sample.wall_s - sample.critical_s) * 1000
    first_panel = min(r.arrival for r in mine if r.role == "panel")
    sample.gap_ms = {
        "to_first_panel_request": (first_panel - sample.start) * 1000,
        "slowest_panel_request_late": (
            max(r.arrival for r in mine if r.role == "panel") - first_panel
        )
        * 1000,
        "panel_done_to_judge": (judge.arrival - (slowest.done or 0.0)) * 1000,
        "judge_done_to_synthesis": (synth.arrival - (judge.done or 0.0)) * 1000,
        "synthesis_done_to_end": (sample.end - (synth.done or 0.0)) * 1000,
    }
    if sample.first_token is not None and synth.ttft is not None:
        upstream_ttft = panel_s + (judge.duration or 0.0) + synth.ttft
        sample.ttft_over_ms = (sample.first_token - sample.start - upstream_ttft) * 1000
        sample.delivery_ms = (sample.first_token - (synth.first_chunk or 0.0)) * 1000
    return sample


# --------------------------------------------------------------------------------- drivers


class GraphDriver:
    """Runs the compiled graph in this process (real ChatOpenAI clients via the default factory)."""

    name = "graph"

    def __init__(self) -> None:
        self.graph = build_graph()

    async def run(self, plan: Plan, *, stream: bool, timeout_s: float = 60.0) -> Sample:
        run_tag = tag()
        messages = [HumanMessage(content=f"[bench:{run_tag}] {QUESTION}")]
        context = plan.context()
        sample = Sample(tag=run_tag, start=0.0, end=0.0)
        cpu0 = time.process_time()
        sample.start = time.monotonic()
        try:
            final = await asyncio.wait_for(self._run(messages, context, stream, sample), timeout_s)
            sample.ok = bool(final.text)
        except Exception as exc:  # a failed run is a result to report, not a crash
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
        sample.end = time.monotonic()
        sample.cpu_ms = (time.process_time() - cpu0) * 1000
        return sample

    async def _run(
        self, messages: list[Any], context: dict[str, Any], stream: bool, sample: Sample
    ) -> Any:
        if not stream:
            out = await self.graph.ainvoke({"messages": messages}, context=context)
            return out["messages"][-1]
        final = None
        async for event in stream_run(self.graph, messages, context):
            if event.kind == "token" and sample.first_token is None and event.chunk is not None:
                if event.chunk.text:
                    sample.first_token = time.monotonic()
            elif event.kind == "final":
                final = event.message
        return final


class HttpDriver:
    """Calls the real OpenAI-compatible server with httpx, like any OpenAI client would."""

    name = "http"

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.url = f"{base_url}/chat/completions"
        self.client = client

    def body(self, plan: Plan, run_tag: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "fusion",
            "messages": [{"role": "user", "content": f"[bench:{run_tag}] {QUESTION}"}],
            "stream": stream,
            "fusion": plan.context(),
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def run(self, plan: Plan, *, stream: bool, timeout_s: float = 60.0) -> Sample:
        run_tag = tag()
        body = self.body(plan, run_tag, stream)
        sample = Sample(tag=run_tag, start=time.monotonic(), end=0.0)
        try:
            await asyncio.wait_for(self._run(body, stream, sample), timeout_s)
        except Exception as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
        sample.end = time.monotonic()
        return sample

    async def _run(self, body: dict[str, Any], stream: bool, sample: Sample) -> None:
        if not stream:
            response = await self.client.post(self.url, json=body)
            data = response.json()
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {str(data)[:200]}"
                return
            sample.ok = bool(data["choices"][0]["message"]["content"])
            return
        text, done = [], False
        async with self.client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    sample.error = str(chunk["error"])[:200]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if sample.first_token is None:
                            sample.first_token = time.monotonic()
                        text.append(content)
        sample.ok = done and bool(text) and sample.error is None


# -------------------------------------------------------------------------------- the server


class ServerProcess:
    """`fusiongraph serve` in a subprocess, so its RSS and CPU are its own."""

    def __init__(self, upstream_url: str, extra_args: Sequence[str] = ()) -> None:
        self.port = _free_port()
        RESULTS_DIR.mkdir(exist_ok=True)
        self.log_path = RESULTS_DIR / f"server-{self.port}.log"
        self.log = self.log_path.open("w")
        env = {
            **os.environ,
            "OPENAI_BASE_URL": upstream_url,
            "OPENAI_API_KEY": "bench",
            "FUSIONGRAPH_API_KEYS": "",
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
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
                self.peak_mb = max(self.peak_mb, self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                return
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile with linear interpolation (q in 0..100)."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Row:
    """One line of the results table."""

    item: str
    surface: str
    n: int
    metric: str
    p50: float | None
    p95: float | None
    target: str
    verdict: str
    runs: int
    note: str = ""


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "succeeded":
        return f"{value:.0f}"
    in_ms = "ms" in metric.replace(",", " ").split() or metric.startswith("MB")
    return f"{value:.1f}" if in_ms else f"{value:.3f}"


def table(rows: Sequence[Row]) -> str:
    head = "| item | surface | N | metric | p50 | p95 | target | result | runs | note |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r.item} | {r.surface} | {r.n} | {r.metric} | {_fmt(r.p50, r.metric)} | "
            f"{_fmt(r.p95, r.metric)} | {r.target} | {r.verdict} | {r.runs} | {r.note} |"
        )
    return "\n".join(lines)


def overhead_rows(
    item: str, surface: str, n: int, samples: list[Sample], targeted: bool = True
) -> list[Row]:
    """The overhead and first-token rows of one measurement; `targeted=False` reports the values
    without a verdict (the cold rows: no target is set for a process's first run)."""
    good = [s for s in samples if s.ok and s.overhead is not None]
    failed = len(samples) - len(good)
    ratios = [s.overhead for s in good if s.overhead is not None]
    ms = [s.overhead_ms for s in good if s.overhead_ms is not None]
    p50, p95 = pct(ratios, 50), pct(ratios, 95)
    ok = None if p50 is None else (p50 <= TARGET_OVERHEAD_P50 and p95 <= TARGET_OVERHEAD_P95)
    crit = pct([s.critical_s for s in good if s.critical_s], 50)
    note = f"+{pct(ms, 50):.1f}/{pct(ms, 95):.1f} ms over a {crit:.2f} s path" if ms else ""
    if failed:
        note += f"; {failed} failed"
        ok = False
    rows = [
        Row(
            item,
            surface,
            n,
            "wall / critical path",
            p50,
            p95,
            f"≤{TARGET_OVERHEAD_P50} p50, ≤{TARGET_OVERHEAD_P95} p95" if targeted else "(report)",
            verdict(ok if targeted else None),
            len(samples),
            note,
        )
    ]
    ttft = [s.ttft_over_ms for s in good if s.ttft_over_ms is not None]
    if ttft:
        p95t = pct(ttft, 95)
        delivery = [s.delivery_ms for s in good if s.delivery_ms is not None]
        rows.append(
            Row(
                "2 first token",
                surface,
                n,
                "TTFT − upstream TTFT, ms",
                pct(ttft, 50),
                p95t,
                f"≤{TARGET_TTFT_P95_MS:.0f} ms p95" if targeted else "(report)",
                verdict(p95t is not None and p95t <= TARGET_TTFT_P95_MS if targeted else None),
                len(ttft),
                f"first-chunk delivery {pct(delivery, 50):.1f}/{pct(delivery, 95):.1f} ms",
            )
        )
    return rows


def gap_summary(samples: list[Sample]) -> dict[str, dict[str, float | None]]:
    keys = sorted({k for s in samples for k in s.gap_ms})
    return {
        k: {
            "p50": pct([s.gap_ms[k] for s in samples if k in s.gap_ms], 50),
            "p95": pct([s.gap_ms[k] for s in samples if k in s.gap_ms], 95),
        }
        for k in keys
    }


# ------------------------------------------------------------------------------------ items


Driver = GraphDriver | HttpDriver


async def measure(
    driver: Driver,
    upstream: UpstreamProcess,
    plans: Callable[[], Plan],
    runs: int,
    *,
    stream: bool,
    warmup: int = 2,
    server: ServerProcess | None = None,
) -> list[Sample]:
    """Sequential runs, each joined with the upstream's records of it (and, given the server,
    with the server process's CPU time over the run)."""
    for _ in range(warmup):
        await driver.run(plans(), stream=stream)
    if isinstance(driver, GraphDriver):
        # This process embeds the graph: do what the README advises a long-lived embedder to do
        # (the server does it at start-up), so a full GC pass does not re-scan the whole heap.
        freeze_startup_heap()
    samples = []
    for _ in range(runs):
        since = _last_id(upstream)
        cpu0 = server.cpu_s() if server else 0.0
        sample = await driver.run(plans(), stream=stream)
        if server:
            sample.cpu_ms = (server.cpu_s() - cpu0) * 1000
        await asyncio.sleep(0.02)  # let the upstream note closed connections
        samples.append(join(sample, upstream.records(since)))
    return samples


def _last_id(upstream: UpstreamProcess) -> int:
    records = upstream.records(0)
    return records[-1].id if records else 0


async def item_overhead(
    driver: Driver,
    upstream: UpstreamProcess,
    runs: int,
    scale: float,
    sizes: Sequence[int],
    rng: random.Random,
    server: ServerProcess | None,
    log: Callable[[str], None],
    extras: bool,
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    variants = [(n, True, False) for n in sizes]
    if extras:
        variants.append((3, False, False))
        variants.append((max(sizes), True, True))
    for n, stream, cold in variants:
        label = driver.name + ("" if stream else " (no stream)") + (" (cold)" if cold else "")
        samples = await measure(
            driver,
            upstream,
            lambda n=n, cold=cold: spread_plan(n, rng, scale, cold),
            runs,
            stream=stream,
            server=server,
        )
        cpus = [s.cpu_ms for s in samples if s.cpu_ms is not None]
        cpu_per_run = sum(cpus) / len(cpus) if cpus else None  # mean: psutil ticks are 10 ms
        new = overhead_rows("1 overhead", label, n, samples, targeted=not cold)
        rows += new
        rows.append(
            Row(
                "4 cpu",
                label,
                n,
                "CPU ms per fusion run",
                cpu_per_run,
                None,
                "(report)",
                "n/a",
                runs,
                "server process, mean of sequential runs"
                if server
                else "this process (graph + client), mean",
            )
        )
        raw[f"{label} N={n}"] = {
            "samples": [asdict(s) for s in samples],
            "gaps_ms": gap_summary(samples),
            "cpu_ms_per_run": cpu_per_run,
        }
        log(table(new))
        log(f"  where the overhead went (ms): {json.dumps(_round(gap_summary(samples)))}")
    return rows, raw


async def item_quorum(
    driver: Driver,
    upstream: UpstreamProcess,
    runs: int,
    scale: float,
    rng: random.Random,
    log: Callable[[str], None],
) -> tuple[list[Row], dict[str, Any]]:
    """One panelist never answers; quorum 2 of 3 with a grace; vs no quorum and no deadline."""
    for _ in range(2):
        await driver.run(quorum_plan(rng, scale, bounded=True), stream=True)
    samples, ratios, cancelled, cancel_lag = [], [], 0, []
    for _ in range(runs):
        since = _last_id(upstream)
        sample = await driver.run(quorum_plan(rng, scale, bounded=True), stream=True)
        await asyncio.sleep(0.05)
        records = [r for r in upstream.records(since) if r.tag == sample.tag]
        sample.wall_s = sample.end - sample.start
        answered = sorted(
            (r for r in records if r.role == "panel" and "never" not in r.model and r.done),
            key=lambda r: r.done or 0.0,
        )
        never = [r for r in records if "never" in r.model]
        judge = [r for r in records if r.role == "judge" and r.done]
        synth = [r for r in records if r.role == "synthesis" and r.done]
        if sample.ok and len(answered) == 2 and judge and synth:
            second = max(r.duration or 0.0 for r in answered)
            bound = second + QUORUM_GRACE_S + (judge[-1].duration or 0) + (synth[-1].duration or 0)
            sample.critical_s = bound
            sample.overhead = sample.wall_s / bound
            ratios.append(sample.overhead)
        if never and never[0].disconnected:
            cancelled += 1
            cutoff = (answered[-1].done or 0.0) + QUORUM_GRACE_S if answered else None
            if cutoff is not None and never[0].done is not None:
                cancel_lag.append((never[0].done - cutoff) * 1000)
        samples.append(sample)
    failed = sum(1 for s in samples if not s.ok)
    p50, p95 = pct(ratios, 50), pct(ratios, 95)
    ok = p95 is not None and p95 <= TARGET_QUORUM and not failed and cancelled == runs
    rows = [
        Row(
            "3 quorum N−1",
            driver.name,
            3,
            "wall / (2nd-slowest+grace+judge+synth)",
            p50,
            p95,
            f"≤{TARGET_QUORUM}",
            verdict(ok),
            runs,
            f"max {max(ratios):.3f}; straggler cancelled {cancelled}/{runs}, "
            f"{pct(cancel_lag, 50):.1f}/{pct(cancel_lag, 95):.1f} ms after cutoff"
            + (f"; {failed} failed" if failed else "")
            if ratios and cancel_lag
            else f"{failed} failed",
        )
    ]
    # The same panel without quorum or deadline: it waits for the straggler (panel_timeout_s,
    # 120 s by default). Give it 3x the bounded time, then cancel and check the upstream saw it.
    bound_s = pct([s.critical_s for s in samples if s.critical_s], 50) or 1.0
    limit = 3 * bound_s
    since = _last_id(upstream)
    sample = await driver.run(quorum_plan(rng, scale, bounded=False), stream=True, timeout_s=limit)
    await asyncio.sleep(0.3)
    never = [r for r in upstream.records(since) if r.tag == sample.tag and "never" in r.model]
    unbounded_cancelled = bool(never and never[0].disconnected)
    rows.append(
        Row(
            "3 no quorum/deadline",
            driver.name,
            3,
            "finished?",
            None,
            None,
            "(unbounded)",
            "n/a",
            1,
            f"{'finished' if sample.ok else 'still waiting'} after "
            f"{sample.end - sample.start:.2f} s (limit 3× the bounded wall); "
            f"cancel reached the upstream: {unbounded_cancelled}",
        )
    )
    log(table(rows))
    raw = {
        "samples": [asdict(s) for s in samples],
        "cancel_lag_ms": cancel_lag,
        "unbounded": asdict(sample),
        "unbounded_cancel_reached_upstream": unbounded_cancelled,
    }
    return rows, raw


async def item_load(
    upstream: UpstreamProcess, concurrency: int, call_s: float, log: Callable[[str], None]
) -> tuple[list[Row], dict[str, Any]]:
    """`concurrency` fusion requests at once through a fresh server (N=3, every call call_s)."""
    server = ServerProcess(upstream.base_url)
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency)
    try:
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            driver = HttpDriver(server.base_url, client)
            plan = Plan(
                panel=[f"l{i + 1}-{call_s:.3f}s" for i in range(LOAD_N)],
                judge=f"judge-{call_s:.3f}s",
                synthesizer=f"synth-{call_s:.3f}s",
            )
            for _ in range(2):
                await driver.run(plan, stream=True)
            rss_before = server.rss_mb()
            since = _last_id(upstream)
            upstream_ps = psutil.Process(upstream.pid)
            up_cpu0 = sum(upstream_ps.cpu_times()[:2])
            me_cpu0 = time.process_time()
            cpu0 = server.cpu_s()
            t0 = time.monotonic()
            with RssSampler(server.ps) as rss:
                samples = await asyncio.gather(
                    *(driver.run(plan, stream=True, timeout_s=300) for _ in range(concurrency))
                )
            elapsed = time.monotonic() - t0
            cpu_ms = (server.cpu_s() - cpu0) * 1000 / concurrency
            up_cpu_ms = (sum(upstream_ps.cpu_times()[:2]) - up_cpu0) * 1000 / concurrency
            me_cpu_ms = (time.process_time() - me_cpu0) * 1000 / concurrency
            await asyncio.sleep(0.2)
            records = upstream.records(since)
    finally:
        server.stop()
    joined = [join(s, records) for s in samples]
    good = [s for s in joined if s.ok]
    ratios = [s.overhead for s in good if s.overhead is not None]
    disconnected = sum(1 for r in records if r.disconnected)
    all_ok = len(good) == concurrency
    p95 = pct(ratios, 95)
    ms = [s.overhead_ms for s in good if s.overhead_ms is not None]
    rows = [
        Row(
            "4 load",
            "http",
            LOAD_N,
            "succeeded",
            float(len(good)),
            None,
            f"{concurrency}/{concurrency}",
            verdict(all_ok),
            concurrency,
            f"{len(records)} upstream calls, {disconnected} cut; burst took {elapsed:.2f} s",
        ),
        Row(
            "4 load",
            "http",
            LOAD_N,
            "wall / critical path",
            pct(ratios, 50),
            p95,
            "(report)",
            "n/a",
            len(ratios),
            f"+{pct(ms, 50):.0f}/{pct(ms, 95):.0f} ms; TTFT−upstream "
            f"{pct([s.ttft_over_ms for s in good if s.ttft_over_ms is not None], 95) or 0:.0f}"
            " ms p95"
            if ms
            else "",
        ),
        Row(
            "4 load",
            "http",
            LOAD_N,
            "MB peak RSS (server)",
            rss.peak_mb,
            None,
            "(report)",
            "n/a",
            concurrency,
            f"{rss_before:.0f} MB before the burst (warm)",
        ),
        Row(
            "4 load",
            "http",
            LOAD_N,
            "CPU ms per fusion run",
            cpu_ms,
            None,
            "(report)",
            "n/a",
            concurrency,
            f"server; upstream {up_cpu_ms:.1f} ms, client {me_cpu_ms:.1f} ms per run",
        ),
    ]
    log(table(rows))
    log(f"  where the overhead went (ms): {json.dumps(_round(gap_summary(good)))}")
    raw = {
        "samples": [asdict(s) for s in joined],
        "gaps_ms": gap_summary(good),
        "errors": sorted({s.error or "" for s in joined if not s.ok})[:10],
        "peak_rss_mb": rss.peak_mb,
        "rss_before_mb": rss_before,
        "server_cpu_ms_per_run": cpu_ms,
        "upstream_cpu_ms_per_run": up_cpu_ms,
        "client_cpu_ms_per_run": me_cpu_ms,
        "elapsed_s": elapsed,
    }
    return rows, raw


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


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


# -------------------------------------------------------------------------------------- main


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
            graph = GraphDriver()
            if items & {1, 2}:
                log("\n== graph: overhead and first token")
                r, raw["graph"] = await item_overhead(
                    graph,
                    upstream,
                    args.runs,
                    args.scale,
                    sizes,
                    rng,
                    None,
                    log,
                    not (args.quick or args.no_extras),
                )
                rows += r
            if 3 in items:
                log("\n== graph: quorum")
                r, raw["graph_quorum"] = await item_quorum(
                    graph, upstream, args.runs, args.scale, rng, log
                )
                rows += r
            server = ServerProcess(upstream.base_url)
            try:
                async with httpx.AsyncClient(timeout=120) as client:
                    http = HttpDriver(server.base_url, client)
                    if items & {1, 2}:
                        log("\n== http: overhead and first token")
                        r, raw["http"] = await item_overhead(
                            http,
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
                        log("\n== http: quorum")
                        r, raw["http_quorum"] = await item_quorum(
                            http, upstream, args.runs, args.scale, rng, log
                        )
                        rows += r
            finally:
                server.stop()
        if 4 in items:
            log(f"\n== http: {args.concurrency} concurrent runs")
            r, raw["load"] = await item_load(upstream, args.concurrency, args.load_call_s, log)
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
    parser.add_argument("--items", default="1,2,3,4", help="which items to run")
    parser.add_argument("--sizes", default="1,3,8", help="panel sizes for item 1")
    parser.add_argument(
        "--scale",
        type=float,
        default=4.0,
        help="multiply items 1-3 latencies (4: a ~4.4 s critical path; 1: the ~1.1 s stress path)",
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--load-call-s", type=float, default=LOAD_CALL_S)
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
