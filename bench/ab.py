"""Two checkouts side by side: `bench.run` on each in turn (A B A B ...), then one table.

    python -m bench.ab BEFORE_TREE AFTER_TREE [--pairs 2] -- --items 1,2,4 --scale 1 --runs 10
    python -m bench.ab . . --after-env FUSIONGRAPH_PUBLIC_APIS_ONLY=1 -- --items 1 --scale 1

Each tree is a checkout of this repository (`git worktree add /tmp/before <commit>`). Its code
runs from an overlay directory whose `fusiongraph` package maps onto that tree's folders, so one
virtual environment serves both and the editable install of the main checkout is not used; each
arm's package path is checked before it runs. Each arm runs its own tree's `bench.run` with the
arguments after `--`; taking turns spreads the machine's drift over both arms. The samples of an
arm's runs are pooled: the table shows percentiles over all of them, and the JSON goes to
bench/results/ab-*.json. `--before-env`/`--after-env KEY=VALUE` set a variable for one arm only
(the same tree twice compares a switch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR
from bench.stats import pct

SUBPACKAGES = ("graph", "nodes", "tools", "local_model", "serve", "evals")


def overlay(tree: Path, into: Path) -> Path:
    """A directory that looks like `tree` but whose `fusiongraph` package is `tree`'s code."""
    into.mkdir(parents=True)
    for entry in tree.iterdir():
        if entry.name not in ("fusiongraph", "fusiongraph.egg-info", ".git"):
            (into / entry.name).symlink_to(entry)
    package = into / "fusiongraph"
    package.mkdir()
    (package / "__init__.py").symlink_to(tree / "fusiongraph" / "__init__.py")
    for name in SUBPACKAGES:
        (package / name).symlink_to(tree / name)
    probe = subprocess.run(
        [sys.executable, "-c", "import fusiongraph.graph.builder as m; print(m.__file__)"],
        cwd=into,
        env=_env(),
        capture_output=True,
        text=True,
    )
    found = probe.stdout.strip()
    if probe.returncode or not Path(found).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{tree}: fusiongraph does not import from it: {found}{probe.stderr}")
    return into


def _env(extra: list[str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | dict(item.split("=", 1) for item in extra or [])


def commit(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_arm(where: Path, bench_args: list[str], env: list[str]) -> dict[str, Any]:
    """One `bench.run` in `where` (with `env`'s KEY=VALUE set); its JSON results."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *bench_args],
        cwd=where,
        env=_env(env),
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("results: ")]
    if not lines:
        tail = proc.stdout[-3000:] + proc.stderr[-3000:]
        raise RuntimeError(f"bench.run failed in {where}: {tail}")
    return json.loads(Path(lines[-1].removeprefix("results: ")).read_text())


def _p(values: Iterable[float | None]) -> str:
    data = [v for v in values if v is not None]
    if not data:
        return "-"
    return f"{pct(data, 50):.1f} / {pct(data, 95):.1f}"


def _mean(values: Iterable[float | None]) -> str:
    data = [v for v in values if v is not None]
    return f"{statistics.fmean(data):.1f}" if data else "-"


def measures(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Pooled over an arm's runs: item 1 and 2 per surface and N, item 4's load and CPU."""
    out: dict[str, str] = {}
    keys = [k for k in runs[0] if k in ("graph", "http")]
    for surface in keys:
        for label in runs[0][surface]:
            samples = [s for run in runs for s in run[surface][label]["samples"] if s["ok"]]
            cpu = [run[surface][label]["cpu_ms_per_run"] for run in runs]
            out[f"1 {label}: overhead ms p50 / p95"] = _p(s["overhead_ms"] for s in samples)
            out[f"2 {label}: TTFT − upstream ms p50 / p95"] = _p(s["ttft_over_ms"] for s in samples)
            who = "graph + client" if surface == "graph" else "server"
            out[f"4 {label}: CPU ms per run ({who})"] = _mean(cpu)
    if "load" in runs[0]:
        loads = [run["load"] for run in runs]
        samples = [s for load in loads for s in load["samples"] if s["ok"]]
        total = sum(len(load["samples"]) for load in loads)
        out["4 load: succeeded"] = f"{len(samples)}/{total}"
        out["4 load: wall / critical path p50 / p95"] = (
            f"{pct([s['overhead'] for s in samples], 50):.3f} / "
            f"{pct([s['overhead'] for s in samples], 95):.3f}"
            if samples
            else "-"
        )
        out["4 load: server CPU ms per run"] = _mean(x["server_cpu_ms_per_run"] for x in loads)
        out["4 load: server peak RSS MB"] = _mean(x["peak_rss_mb"] for x in loads)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description="bench.run on two checkouts, taking turns")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=2, help="runs of each arm, alternating")
    for arm in ("before", "after"):
        parser.add_argument(f"--{arm}-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv[:split])
    bench_args = argv[split + 1 :]
    arms = {"before": args.before, "after": args.after}
    envs = {"before": args.before_env, "after": args.after_env}
    commits = {name: commit(tree) for name, tree in arms.items()}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        where = {name: overlay(tree, Path(scratch) / name) for name, tree in arms.items()}
        for pair in range(args.pairs):
            for name in arms:
                print(f"pair {pair + 1}/{args.pairs}: {name} ({commits[name]})", flush=True)
                results[name].append(run_arm(where[name], bench_args, envs[name]))
    table = {name: measures(runs) for name, runs in results.items()}
    flags = [f"--{name}-env {item}" for name in arms for item in envs[name]]
    head = ["python -m bench.ab", str(args.before), str(args.after), f"--pairs {args.pairs}"]
    command = " ".join([*head, *flags, "--", *bench_args])
    lines = [
        command,
        f"before {commits['before']}, after {commits['after']}; {args.pairs} runs each, "
        f"alternating; {time.monotonic() - started:.0f} s",
        "",
        f"| measure | before ({commits['before']}) | after ({commits['after']}) |",
        "|---|---|---|",
    ]
    for key in table["before"]:
        lines.append(f"| {key} | {table['before'][key]} | {table['after'].get(key, '-')} |")
    text = "\n".join(lines)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"ab-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"commits": commits, "table": table, "text": text}, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
