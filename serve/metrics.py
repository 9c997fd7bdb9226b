"""Prometheus metrics of the server's runs, all read from each run's record.

Every number a dashboard needs is already in the `fusion` record of a finished run (or in the
`details` of its FusionError): outcome, strategy, each node's latency, each panelist's failure
reason, tokens and cost per model, quorum and deadline cut-offs, cache hits. Reading it once, at
the end of the run, keeps the nodes free of metrics code and makes the metrics agree with what
the client was told. Progress events are not used: they only flow when a client asks for them.

With several workers (`fusiongraph serve --workers N`) prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor before the workers start) keeps each worker's
values in files, and /metrics sums every worker's.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Runs last seconds to minutes; nodes from tens of milliseconds (a cache hit) up.
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
NODE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
# Failure reasons that mean a clock cut the panelist rather than the upstream failing it.
CUTOFF_REASONS = {"straggler": "quorum", "deadline": "deadline"}


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class RunMetrics:
    """The server's metrics on their own registry (one per app, so tests start from zero)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        # In multiprocess mode the values live in per-process files and are collected from
        # there; registering them too would expose this worker's values twice.
        registry = None if self.multiprocess else CollectorRegistry()
        self._registry = registry
        self.runs = Counter(
            "fusion_runs",
            "Finished runs by outcome (ok, replayed, cancelled, shutdown, a FusionError reason) "
            "and the aggregation strategy applied.",
            ["outcome", "strategy"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "fusion_run_duration_seconds",
            "Wall time of a run, by outcome.",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "fusion_runs_in_flight",
            "Runs in progress.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.node_seconds = Histogram(
            "fusion_node_latency_seconds",
            "Latency of each panelist, the judge and the synthesizer, by model.",
            ["node", "model"],
            buckets=NODE_BUCKETS,
            registry=registry,
        )
        self.panelist_failures = Counter(
            "fusion_panelist_failures",
            "Panelists that failed or were cut, by reason and model.",
            ["reason", "model"],
            registry=registry,
        )
        self.tokens = Counter(
            "fusion_tokens",
            "Tokens used, by model and kind (input, output).",
            ["model", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "fusion_cost_usd",
            "Cost in USD by model (calls of unknown price are not counted; see "
            "fusion_unpriced_calls_total).",
            ["model"],
            registry=registry,
        )
        self.unpriced = Counter(
            "fusion_unpriced_calls",
            "Node calls whose cost is unknown (no price for the model), by model.",
            ["model"],
            registry=registry,
        )
        self.cutoffs = Counter(
            "fusion_cutoffs",
            "Panelists cut by a clock: quorum (the straggler grace ran out) or deadline.",
            ["kind"],
            registry=registry,
        )
        self.cache_hits = Counter(
            "fusion_panel_cache_hits",
            "Panel answers served from the panel cache, by model.",
            ["model"],
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes: every worker's values summed in multiprocess mode."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self._registry is not None
        return generate_latest(self._registry)

    def run_started(self) -> float:
        self.in_flight.inc()
        return time.monotonic()

    def run_ended(self, started: float, outcome: str, record: dict[str, Any] | None) -> None:
        """Count one run; `record` is its `fusion` record (None: a replay, or none was made)."""
        self.in_flight.dec()
        aggregation = (record or {}).get("aggregation") or {}
        strategy = aggregation.get("applied") or aggregation.get("requested") or "none"
        self.runs.labels(outcome, strategy).inc()
        self.run_seconds.labels(outcome).observe(time.monotonic() - started)
        if record:
            self._record(record)

    def _record(self, record: dict[str, Any]) -> None:
        for entry in record.get("panel") or []:
            model = str(entry.get("model"))
            if entry.get("cached"):
                self.cache_hits.labels(model).inc()
            else:
                self._latency("panelist", model, entry.get("latency_s"))
                self._spent(model, entry.get("usage"), entry.get("cost_usd"))
        for entry in record.get("failed_models") or []:
            model, reason = str(entry.get("model")), str(entry.get("reason"))
            self.panelist_failures.labels(reason, model).inc()
            if reason in CUTOFF_REASONS:
                self.cutoffs.labels(CUTOFF_REASONS[reason]).inc()
            self._spent(model, None, entry.get("cost_usd"))
        usage, cost = record.get("usage") or {}, record.get("cost_usd") or {}
        judge = record.get("judge") or {}
        if judge.get("model") and judge.get("latency_s") is not None:
            model = str(judge["model"])
            self._latency("judge", model, judge.get("latency_s"))
            self._spent(model, usage.get("judge"), cost.get("judge"))
        synthesizer = record.get("synthesizer") or {}
        if synthesizer.get("model") and synthesizer.get("latency_s") is not None:
            model = str(synthesizer["model"])
            self._latency("synthesis", model, synthesizer.get("latency_s"))
            self._spent(model, usage.get("synthesis"), cost.get("synthesis"))

    def _latency(self, node: str, model: str, seconds: Any) -> None:
        if isinstance(seconds, int | float):
            self.node_seconds.labels(node, model).observe(float(seconds))

    def _spent(self, model: str, usage: Any, cost: Any) -> None:
        """What a node paid (a cached answer paid nothing and is not counted)."""
        if isinstance(usage, dict):
            for kind in ("input", "output"):
                tokens = usage.get(f"{kind}_tokens") or 0
                if tokens:
                    self.tokens.labels(model, kind).inc(tokens)
        if isinstance(cost, int | float):
            if cost > 0:
                self.cost.labels(model).inc(float(cost))
        else:
            self.unpriced.labels(model).inc()


def mark_worker_dead(pid: int | None = None) -> None:
    """A worker that exits takes its live gauges (in-flight runs) out of the sum."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid or os.getpid())
