"""`run_eval`: load the items, build the arms, run them, score, compare, write the report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fusiongraph.evals.arms import Arm, build_arms, run_plan
from fusiongraph.evals.cache import ResultCache, digest
from fusiongraph.evals.calibration import (
    CALIBRATED_ARM,
    DEFAULT_SPLIT,
    fit_profile,
    split_items,
    write_profile,
)
from fusiongraph.evals.report import write_report
from fusiongraph.evals.runner import DEFAULT_ITEM_TIMEOUT_S, Runner, pairwise
from fusiongraph.evals.stats import TaskStats, best_panelist, summarise
from fusiongraph.graph.calibration import CalibrationProfile, load_profile
from fusiongraph.graph.config import resolve_config

DEFAULT_OUT_DIR = "fusion-evals"
CALIBRATION_FILE = "calibration.json"
FIT_FILE = "calibration-fit.json"


def decisions(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per task type, what calibrated auto did on its held-out items: the arm it chose, or that
    it did not use the profile (then auto's rules applied), with how often."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["arm"] != CALIBRATED_ARM:
            continue
        record = (row.get("aggregation") or {}).get("calibrated") or {}
        what = record.get("chosen") or ("profile not used" if record else "no record (an error)")
        counts = out.setdefault(row["task_type"], {})
        counts[what] = counts.get(what, 0) + 1
    return out


def stable_profile_path(profile: CalibrationProfile, root: Path) -> Path:
    """Where the fitted profile is written for the calibrated arm's runs: named by its content
    (its date left out), so the same fit is the same run key and a second eval reuses its runs."""
    body = profile.model_dump(mode="json", exclude={"created"})
    path = root / "calibration" / f"{digest('calibration', body)}.json"
    if not path.exists():
        write_profile(profile, path)
    return path.resolve()


@dataclass
class EvalReport:
    """What an eval produced: its folder, the per-task statistics, every sample, the markdown."""

    name: str
    folder: Path
    markdown: str
    tasks: list[TaskStats]
    samples: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def task(self, task_type: str) -> TaskStats:
        return next(t for t in self.tasks if t.task_type == task_type)


def task_parts(tasks: str | Path) -> list[str]:
    """`math,choice` names several suites (or files): one eval, one table per task type."""
    text = str(tasks)
    if isinstance(tasks, Path) or "," not in text or Path(text).exists():
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


def eval_name(tasks: Any) -> str:
    """The report folder's name: the suites' names, the task files' stems, or `items`."""
    if isinstance(tasks, str | Path):
        parts = task_parts(tasks)
        return "+".join(Path(p).stem if p.endswith((".jsonl", ".csv")) else p for p in parts)
    return "items"


def load(tasks: Any, limit: int | None, seed: int) -> list[Any]:
    """The items; `limit` applies to each suite or file named (a seeded sample of each)."""
    if isinstance(tasks, str | Path):
        from fusiongraph.evals.items import load_items

        return [
            item for part in task_parts(tasks) for item in load_items(part, limit=limit, seed=seed)
        ]
    items = list(tasks)
    return items[:limit] if limit else items


def make_grader(grader: Any, items: Sequence[Any], context: dict[str, Any], factory: Any) -> Any:
    """The grader of graded items: the one given (a spec or a Grader), else the run's judge
    model (at most 300 tokens a reply unless its spec says) when some item needs one."""
    from fusiongraph.evals.scorers import Grader

    if isinstance(grader, Grader):
        return grader
    if grader is None:
        if not any(item.effective_scorer == "graded" for item in items):
            return None
        from fusiongraph.graph.config import resolve_config

        judge = resolve_config(context).judge
        # A verdict is two lines and a sentence: a small model must not ramble to its limit.
        grader = judge if judge.max_tokens else judge.model_copy(update={"max_tokens": 300})
    return Grader(grader) if factory is None else Grader(grader, model_factory=factory)


def _grader_name(grader: Any) -> str | None:
    return None if grader is None else grader.spec.name


def arm_notes(plan: Sequence[Arm]) -> list[dict[str, Any]]:
    """Each arm and what it is; an arm whose run has the same plan as an earlier arm's says so
    (it is that run's answer, not a second run)."""
    out: list[dict[str, Any]] = []
    first: dict[tuple[str, str], str] = {}
    for arm in plan:
        note = arm.note
        earlier = first.setdefault((arm.run.key, arm.read), arm.name)
        if earlier != arm.name and arm.read == "final":
            note = f"{note}; the same plan as `{earlier}`, so the same run"
        out.append({"name": arm.name, "kind": arm.kind, "note": note})
    return out


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, advanced once per finished sample."""
    if not enabled:
        yield lambda sample: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("eval", total=total)

        def advance(sample: dict[str, Any]) -> None:
            where = "cached" if sample.get("from_cache") else "ran"
            bar.update(task, advance=1, description=f"{sample['arm']} ({where})")

        yield advance


async def arun_eval(
    tasks: str | Path | Sequence[Any],
    *,
    context: dict[str, Any] | None = None,
    arms: Sequence[str] | None = None,
    limit: int | None = None,
    concurrency: int = 2,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    grader: Any = None,
    samples: int | None = None,
    seed: int = 0,
    item_timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
    model_factory: Any = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    calibrate_split: float = DEFAULT_SPLIT,
) -> EvalReport:
    """Run an eval (see `run_eval`) from async code."""
    from langgraph.cache.sqlite import SqliteCache

    from fusiongraph.evals import scorers
    from fusiongraph.graph.builder import build_graph
    from fusiongraph.graph.models import default_model_factory

    started = time.perf_counter()
    context = dict(context or {})
    name = eval_name(tasks)
    items = load(tasks, limit, seed)
    if not items:
        raise ValueError(f"{name}: no items to evaluate")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{name}: the item id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)
    plan: list[Arm] = build_arms(context, list(arms) if arms else None, samples=samples)
    calibrated = next((arm for arm in plan if arm.name == CALIBRATED_ARM), None)
    fit_items, held_items = items, list[Any]()
    if calibrated is not None:
        if not any(arm.kind == "panelist" for arm in plan):
            raise ValueError(
                f"{CALIBRATED_ARM} is fitted on the panelist arms' results: name them too "
                "(e.g. --arms fusion,panelist,fusion:calibrated)"
            )
        fit_items, held_items = split_items(items, calibrate_split, seed)
        plan = [arm for arm in plan if arm is not calibrated]
    the_grader = make_grader(grader, items, context, model_factory)
    grader_key = (
        "none"
        if the_grader is None
        else digest(the_grader.spec.model_dump(mode="json", exclude_defaults=True))
    )
    cache = ResultCache(cache_dir or Path(out_dir) / ".cache")
    panel_answers: SqliteCache[Any] = SqliteCache(path=str(cache.panel_cache_path()))
    graph = build_graph(
        model_factory or default_model_factory, cache=panel_answers, cache_ttl_s=None
    )
    total = len(items) * len(plan) + len(held_items)
    with progress_bar(total, progress) as advance:
        runner = Runner(
            graph=graph,
            cache=cache,
            score=scorers.score,
            grader=the_grader,
            grader_key=grader_key,
            concurrency=concurrency,
            item_timeout_s=item_timeout_s,
            on_sample=advance,
        )
        rows = await runner.run(items, plan)
        held_out: list[TaskStats] | None = None
        fit_profile_path: Path | None = None
        if calibrated is not None:
            fit_ids = {item.id for item in fit_items}
            fitted = fit_profile(
                [r for r in rows if r["item"] in fit_ids],
                resolve_config(context),
                name=f"{name} (fit split)",
                grader=_grader_name(the_grader),
                seed=seed,
            )
            if fitted is None:
                raise ValueError(f"{CALIBRATED_ARM}: no panelist arm scored on the fit split")
            fit_profile_path = stable_profile_path(fitted, cache.root)
            arm = replace(
                calibrated,
                run=run_plan({**calibrated.run.context, "calibration": str(fit_profile_path)}),
            )
            rows += await runner.run(held_items, [arm])
            plan.append(arm)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_type.setdefault(row["task_type"], []).append(row)
    baselines = {t: b for t, r in by_type.items() if (b := best_panelist(r)) is not None}
    if the_grader is not None:
        await pairwise(
            rows,
            {item.id: item for item in items},
            baselines,
            compare=scorers.compare_detailed,
            grader=the_grader,
            grader_key=grader_key,
            cache=cache,
            timeout_s=item_timeout_s,
        )
    main_rows = [r for r in rows if r["arm"] != CALIBRATED_ARM]
    tasks_stats = summarise(main_rows, seed=seed)
    if calibrated is not None:
        held_ids = {item.id for item in held_items}
        # Against the best member on the held-out items: W/T/L from the scores there.
        held_rows = [
            {k: v for k, v in r.items() if k != "vs_baseline"}
            for r in rows
            if r["item"] in held_ids
        ]
        held_out = summarise(held_rows, seed=seed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out_dir) / f"{name}-{stamp}"
    config = resolve_config(context)
    meta = {
        "name": name,
        "created": stamp,
        "items": len(items),
        "samples": len(rows),
        "samples_from_cache": sum(1 for r in rows if r.get("from_cache")),
        "runs_made": runner.runs_made,
        "wall_s": round(time.perf_counter() - started, 1),
        "grader": _grader_name(the_grader),
        "context": context,
        "settings": {
            **config.settings_used(),
            "panel": [s.name for s in config.panel],
            "judge": config.judge.name,
            "synthesizer": config.synthesizer.name,
        },
        "arms": arm_notes(plan),
        "cache_dir": str(cache.root),
    }
    profile = fit_profile(main_rows, config, name=name, grader=_grader_name(the_grader), seed=seed)
    calibration: dict[str, Any] = {}
    if profile is not None:
        write_profile(profile, folder / CALIBRATION_FILE)
        calibration["profile"] = CALIBRATION_FILE
    if calibrated is not None and fit_profile_path is not None:
        write_profile(load_profile(str(fit_profile_path)), folder / FIT_FILE)
        calibration |= {
            "arm": CALIBRATED_ARM,
            "split": calibrate_split,
            "seed": seed,
            "fit_profile": FIT_FILE,
            "fit_items": sorted(item.id for item in fit_items),
            "held_out_items": sorted(item.id for item in held_items),
            "decisions": decisions(rows),
        }
    if calibration:
        meta["calibration"] = calibration
    text = write_report(folder, meta, tasks_stats, rows, held_out=held_out)
    return EvalReport(name, folder, text, tasks_stats, rows, meta)


def run_eval(
    tasks: str | Path | Sequence[Any],
    *,
    context: dict[str, Any] | None = None,
    arms: Sequence[str] | None = None,
    limit: int | None = None,
    concurrency: int = 2,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    grader: Any = None,
    **options: Any,
) -> EvalReport:
    """Compare fusion with its own panelists, self-consistency and self-fusion on `tasks` (a
    bundled suite name, a .jsonl/.csv file, or EvalItems), per task type; write report.md,
    report.html, samples.jsonl and summary.json to `out_dir/<name>-<timestamp>/`.

    `context`: the fusion settings every arm starts from (as for `graph.invoke`). `arms`: their
    names (default: all; see evals/arms.py; `fusion:calibrated` is fitted on `calibrate_split`
    of each task type's items and judged on the rest). `grader`: a model spec (or Grader) for
    graded items (default: the judge's model). Beside the report, calibration.json: the
    profile a run's `calibration` setting reads (evals/calibration.py). Results are cached
    under `out_dir/.cache`, so an interrupted eval resumes and a second report calls no model.
    `options` as for `arun_eval` (samples, seed, item_timeout_s, model_factory, cache_dir,
    progress, calibrate_split).
    """
    from fusiongraph.tools.aio import run_coroutine

    return run_coroutine(
        arun_eval(
            tasks,
            context=context,
            arms=arms,
            limit=limit,
            concurrency=concurrency,
            out_dir=out_dir,
            grader=grader,
            **options,
        )
    )
