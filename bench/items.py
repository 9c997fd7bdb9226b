"""The four measurements (README "The measurements"): each returns its table rows and raw data."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import httpx
import psutil

from bench.drivers import Driver, GraphDriver, HttpDriver
from bench.fake_upstream import UpstreamProcess
from bench.plans import LOAD_N, QUORUM_GRACE_S, Plan, Sample, join, quorum_plan, spread_plan
from bench.server import RssSampler, ServerProcess
from bench.stats import (
    TARGET_QUORUM,
    Row,
    gap_summary,
    overhead_rows,
    pct,
    rounded,
    table,
    verdict,
)
from fusiongraph.serve.server import freeze_startup_heap


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
        since = last_id(upstream)
        cpu0 = server.cpu_s() if server else 0.0
        sample = await driver.run(plans(), stream=stream)
        if server:
            sample.cpu_ms = (server.cpu_s() - cpu0) * 1000
        await asyncio.sleep(0.02)  # let the upstream note closed connections
        samples.append(join(sample, upstream.records(since)))
    return samples


def last_id(upstream: UpstreamProcess) -> int:
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
        log(f"  where the overhead went (ms): {json.dumps(rounded(gap_summary(samples)))}")
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
        since = last_id(upstream)
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
    since = last_id(upstream)
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
    upstream: UpstreamProcess,
    concurrency: int,
    call_s: float,
    log: Callable[[str], None],
    workers: int = 1,
) -> tuple[list[Row], dict[str, Any]]:
    """`concurrency` fusion requests at once through a fresh server (N=3, every call call_s) of
    `workers` processes (CPU and RSS: the supervisor's and its workers', summed)."""
    server = ServerProcess(upstream.base_url, workers=workers)
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency)
    try:
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            driver = HttpDriver(server.base_url, client)
            plan = Plan(
                panel=[f"l{i + 1}-{call_s:.3f}s" for i in range(LOAD_N)],
                judge=f"judge-{call_s:.3f}s",
                synthesizer=f"synth-{call_s:.3f}s",
            )
            for _ in range(2):  # warm every worker: concurrent runs reach each of them
                await asyncio.gather(*(driver.run(plan, stream=True) for _ in range(2 * workers)))
            rss_before = server.rss_mb()
            since = last_id(upstream)
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
            f"{workers} worker(s); {len(records)} upstream calls, {disconnected} cut; "
            f"burst took {elapsed:.2f} s",
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
    log(f"  where the overhead went (ms): {json.dumps(rounded(gap_summary(good)))}")
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
