"""Items x arms: each item's graph runs, the arms read from them, scored, cached on disk.

Per item, the runs go one after the other, so the first fills the graph's panel cache and the
next strategies of that item pay only their judge and synthesis; items run side by side up to
`concurrency`. Every run has a timeout and every failure is recorded on its samples: an eval
never aborts on one item. What succeeded is cached on disk (evals/cache.py), so an interrupted
eval resumes where it stopped and a second report of the same eval calls no model.

Costs are deployment costs: what the arm would cost on its own. A panel answer served from the
panel cache counts the cost, tokens and latency it had when it was paid for (the "ledger"),
so every fusion arm includes its panel; a panelist arm is that panelist's share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import convert_to_messages

from fusiongraph.evals.arms import Arm, RunPlan
from fusiongraph.evals.cache import ResultCache, digest
from fusiongraph.graph.config import resolve_config
from fusiongraph.graph.errors import FusionError
from fusiongraph.nodes.panel import panel_identity

if TYPE_CHECKING:
    from fusiongraph.graph.builder import FusionGraph

DEFAULT_ITEM_TIMEOUT_S = 900.0
SampleHook = Callable[[dict[str, Any]], None]


def item_key(item: Any) -> str:
    """What decides an item's answers and score: all of it (conversation, target, tests...),
    without the fields at their defaults (a field added later keeps the cache valid)."""
    return digest("item", item.model_dump(mode="json", exclude_defaults=True))


def _json_safe(value: Any) -> Any:
    """A FusionError's details as plain JSON data (they may hold pydantic models)."""
    import json

    return json.loads(json.dumps(value, default=str))


async def execute_run(
    graph: FusionGraph, run: RunPlan, item: Any, *, timeout_s: float
) -> dict[str, Any]:
    """One graph run on one item: its answer and record, or its error, never an exception."""
    started = time.perf_counter()
    out: dict[str, Any] = {"answer": None, "error": None, "fusion": {}}
    try:
        async with asyncio.timeout(timeout_s):
            # langgraph's overloads take the context schema only; it coerces a context dict.
            state = await graph.ainvoke(  # type: ignore[call-overload]
                {"messages": convert_to_messages(item.messages)}, context=run.context
            )
        final = state["messages"][-1]
        out["answer"] = final.text
        out["fusion"] = _json_safe(final.response_metadata.get("fusion") or {})
    except TimeoutError:
        out["error"] = {"reason": "timeout", "message": f"no answer within {timeout_s:g} s"}
    except FusionError as exc:
        out["error"] = {"reason": exc.reason, "message": exc.message}
        out["fusion"] = _json_safe(exc.details)
    except Exception as exc:  # an eval records every failure and goes on
        out["error"] = {"reason": "error", "message": f"{type(exc).__name__}: {exc}"}
    out["wall_s"] = round(time.perf_counter() - started, 3)
    return out


@dataclass
class Ledger:
    """What each panel answer cost when it was paid for, by its panel-cache identity."""

    cache: ResultCache
    item: str
    slots: dict[str, dict[str, str]] = field(default_factory=dict)  # run key -> panelist -> slot

    def slot_keys(self, run: RunPlan) -> dict[str, str]:
        if run.key not in self.slots:
            config = resolve_config(run.context)
            self.slots[run.key] = {
                f"p{i + 1}": digest("slot", f"p{i + 1}", panel_identity(config, i))
                for i in range(len(config.panel))
            }
        return self.slots[run.key]

    def record(self, run: RunPlan, result: dict[str, Any]) -> None:
        slots = self.slot_keys(run)
        for entry in result["fusion"].get("panel") or []:
            if not entry.get("cached") and entry["panelist"] in slots:
                self.cache.put(
                    "ledger",
                    digest(slots[entry["panelist"]], self.item),
                    {
                        "cost_usd": entry.get("cost_usd"),
                        "tokens": (entry.get("usage") or {}).get("total_tokens", 0),
                        "latency_s": entry.get("latency_s"),
                    },
                )

    def paid(self, run: RunPlan, entry: dict[str, Any]) -> dict[str, Any]:
        """A panel entry's cost, tokens and latency as deployed (unknown: None)."""
        if not entry.get("cached"):
            return {
                "cost_usd": entry.get("cost_usd"),
                "tokens": (entry.get("usage") or {}).get("total_tokens", 0),
                "latency_s": entry.get("latency_s"),
            }
        slot = self.slot_keys(run).get(entry["panelist"])
        found = self.cache.get("ledger", digest(slot, self.item)) if slot else None
        return found or {"cost_usd": None, "tokens": None, "latency_s": None}


def _sum(values: Sequence[float | int | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(v or 0 for v in values))


def _max(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _tokens(usage: dict[str, Any] | None) -> int:
    return int(((usage or {}).get("total") or {}).get("total_tokens", 0))


def read_final(run: RunPlan, result: dict[str, Any], ledger: Ledger) -> dict[str, Any]:
    """A fusion or self-fusion arm: the run's answer at its deployment cost (cached panel
    answers counted at what they cost when paid; latency: wall time + their panel time)."""
    fusion = result["fusion"]
    cached = [ledger.paid(run, e) for e in fusion.get("panel") or [] if e.get("cached")]
    total = (fusion.get("cost_usd") or {}).get("total")
    # No record (a timeout): what the run used is unknown, not zero.
    cost = _sum([total, *(c["cost_usd"] for c in cached)]) if fusion else None
    tokens = (
        _sum([_tokens(fusion.get("usage")), *(c["tokens"] for c in cached)]) if fusion else None
    )
    extra_latency = _max([c["latency_s"] for c in cached]) or 0.0
    return {
        "answer": result["answer"],
        "error": result["error"],
        "cost_usd": cost,
        "tokens": None if tokens is None else int(tokens),
        "latency_s": round(result["wall_s"] + extra_latency, 3),
        "aggregation": fusion.get("aggregation"),
    }


def read_panelist(
    run: RunPlan, result: dict[str, Any], ledger: Ledger, panelist: str
) -> dict[str, Any]:
    """A panelist arm: the answer it gave inside the fusion run, at its own cost."""
    fusion = result["fusion"]
    for entry in fusion.get("panel") or []:
        if entry["panelist"] == panelist:
            paid = ledger.paid(run, entry)
            return {"answer": entry["content"], "error": None, **paid}
    for failed in fusion.get("failed_models") or []:
        if failed["panelist"] == panelist:
            return {
                "answer": None,
                "error": {"reason": failed.get("reason"), "message": failed.get("message", "")},
                "cost_usd": failed.get("cost_usd"),
                "tokens": None,
                "latency_s": failed.get("latency_s"),
            }
    error = result["error"] or {"reason": "not_run", "message": "no answer in the run's record"}
    return {"answer": None, "error": error, "cost_usd": None, "tokens": None, "latency_s": None}


def read_arm(arm: Arm, result: dict[str, Any], ledger: Ledger) -> dict[str, Any]:
    if arm.read == "panelist":
        assert arm.panelist is not None
        return read_panelist(arm.run, result, ledger, arm.panelist)
    return read_final(arm.run, result, ledger)


@dataclass
class Runner:
    """Runs the arms over the items; `runs_made` counts the graph runs made (not from disk)."""

    graph: FusionGraph
    cache: ResultCache
    score: Callable[..., Any]
    grader: Any = None
    grader_key: str = "none"
    concurrency: int = 2
    item_timeout_s: float = DEFAULT_ITEM_TIMEOUT_S
    on_sample: SampleHook | None = None
    runs_made: int = 0

    async def run(self, items: Sequence[Any], arms: Sequence[Arm]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(max(1, self.concurrency))

        async def one(item: Any) -> list[dict[str, Any]]:
            async with gate:
                return await self.item_samples(item, arms)

        # A TaskGroup, not gather: interrupted, gather returns as soon as the first waiting item
        # is cancelled, while the running ones are still writing their panel answers to the
        # cache; a TaskGroup returns once every item has unwound, so a resumed eval finds them.
        try:
            async with asyncio.TaskGroup() as group:
                per_item = [group.create_task(one(item)) for item in items]
        except ExceptionGroup as failed:  # e.g. a full disk: raised as itself, as callers expect
            raise failed.exceptions[0] from None
        return [sample for task in per_item for sample in task.result()]

    def graded_by(self, item: Any) -> str:
        """The grader's part of a score's key: only a graded item's score depends on it."""
        return self.grader_key if item.effective_scorer == "graded" else "none"

    def sample_key(self, arm: Arm, item: Any) -> str:
        return digest(
            "sample",
            arm.name,
            arm.run.key,
            arm.read,
            arm.panelist,
            item_key(item),
            self.graded_by(item),
        )

    async def item_samples(self, item: Any, arms: Sequence[Arm]) -> list[dict[str, Any]]:
        key = item_key(item)
        ledger = Ledger(self.cache, key)
        samples: dict[str, dict[str, Any]] = {}
        for arm in arms:
            found = self.cache.get("samples", self.sample_key(arm, item))
            if found is not None:
                samples[arm.name] = {**found, "from_cache": True}
                self._done(samples[arm.name])
        results: dict[str, dict[str, Any]] = {}
        for arm in arms:
            if arm.name in samples or arm.run.key in results:
                continue
            results[arm.run.key] = await self.result_of(arm.run, item, key, ledger)
        for arm in arms:
            if arm.name in samples:
                continue
            sample = await self.scored(arm, item, read_arm(arm, results[arm.run.key], ledger))
            if sample["error"] is None and sample["score_error"] is None:
                self.cache.put("samples", self.sample_key(arm, item), sample)
            samples[arm.name] = {**sample, "from_cache": False}
            self._done(samples[arm.name])
        return [samples[arm.name] for arm in arms]

    async def result_of(
        self, run: RunPlan, item: Any, item_digest: str, ledger: Ledger
    ) -> dict[str, Any]:
        run_key = digest(run.key, item_digest)
        result = self.cache.get("runs", run_key)
        if result is None:
            self.runs_made += 1
            result = await execute_run(self.graph, run, item, timeout_s=self.item_timeout_s)
            if result["error"] is None:
                self.cache.put("runs", run_key, result)
        ledger.record(run, result)
        return result

    async def scored(self, arm: Arm, item: Any, read: dict[str, Any]) -> dict[str, Any]:
        sample = {
            "item": item.id,
            "task_type": item.task_type,
            "arm": arm.name,
            "kind": arm.kind,
            **read,
            "score": None,
            "score_error": None,
        }
        if read["answer"] is None:
            reason = (read["error"] or {}).get("reason", "no answer")
            sample["score"] = {
                "correct": False,
                "value": 0.0,
                "extracted": None,
                "explanation": f"no answer ({reason}): counted as wrong",
            }
            return sample
        # Arms that gave the same answer (the local preset's self-fusion is its fusion) share
        # one score: a graded item costs one grader call per distinct answer.
        key = digest("score", item_key(item), read["answer"], self.graded_by(item))
        found = self.cache.get("scores", key)
        if found is None:
            try:
                async with asyncio.timeout(self.item_timeout_s):
                    score = await self.score(item, read["answer"], grader=self.grader)
            except TimeoutError:
                sample["score_error"] = f"not scored within {self.item_timeout_s:g} s"
                return sample
            except Exception as exc:  # a scorer that cannot score this item: recorded
                sample["score_error"] = f"{type(exc).__name__}: {exc}"
                return sample
            if getattr(score, "error", None):  # not a judgement of the answer (no grader...)
                why = f": {score.explanation[:300]}" if score.explanation else ""
                sample["score_error"] = f"{score.error}{why}"
                return sample
            found = score.model_dump(
                mode="json", include={"correct", "value", "extracted", "explanation", "cost_usd"}
            )
            self.cache.put("scores", key, found)
        sample["score"] = {k: v for k, v in found.items() if k != "cost_usd"}
        sample["grader_cost_usd"] = found.get("cost_usd")
        return sample

    def _done(self, sample: dict[str, Any]) -> None:
        if self.on_sample is not None:
            self.on_sample(sample)


async def pairwise(
    samples: list[dict[str, Any]],
    items: dict[str, Any],
    baselines: dict[str, str],
    *,
    compare: Callable[..., Any],
    grader: Any,
    grader_key: str,
    cache: ResultCache,
    timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
) -> None:
    """Win/tie/loss of every arm against the best panelist on graded items: the grader compares
    the two answers in both orders (evals/scorers.py `compare_detailed`), cached like the runs.
    Sets `vs_baseline`; a side without an answer loses to one with an answer; a comparison the
    grader failed leaves it unset (the scores decide) and is tried again next time."""
    by_key = {(s["arm"], s["item"]): s for s in samples}
    for sample in samples:
        item = items[sample["item"]]
        baseline_arm = baselines.get(sample["task_type"])
        if item.effective_scorer != "graded" or baseline_arm is None:
            continue
        base = by_key.get((baseline_arm, sample["item"]))
        if base is None or sample["arm"] == baseline_arm:
            continue
        if sample["answer"] == base["answer"]:  # the same text: a tie, no grader call
            sample["vs_baseline"] = "tie"
            continue
        if sample["answer"] is None or base["answer"] is None:
            ours, theirs = sample["answer"] is not None, base["answer"] is not None
            sample["vs_baseline"] = "win" if ours > theirs else "loss" if theirs > ours else "tie"
            continue
        key = digest("compare", item_key(item), sample["answer"], base["answer"], grader_key)
        found = cache.get("compare", key)
        if found is None:
            try:
                async with asyncio.timeout(timeout_s):
                    result = await compare(item, sample["answer"], base["answer"], grader=grader)
            except Exception as exc:  # TimeoutError too: the scores decide, tried again later
                sample["compare_error"] = f"{type(exc).__name__}: {exc}"
                continue
            if getattr(result, "error", None):  # the grader failed: no outcome, not cached
                sample["compare_error"] = result.error
                continue
            found = {"outcome": getattr(result, "outcome", result)}
            cache.put("compare", key, found)
        sample["vs_baseline"] = found["outcome"]
