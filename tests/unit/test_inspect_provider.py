"""fusiongraph as an inspect-ai model provider (evals/inspect_provider.py) and the bundled suites
as inspect tasks (evals/inspect_tasks.py), end to end on the fake OpenAI-compatible upstream.

A real inspect evaluation (`inspect_ai.eval`, logs in tmp_path, no display) runs a fusion
configuration whose panel, judge and synthesizer are ChatOpenAI clients of the fake upstream:
its samples are scored by inspect, carry usage and cost, and the fusion record rides in the
output metadata. `fusion/<name>/p<N>` calls one panelist alone. A bad `-M` setting fails when
the model is created, naming the setting. The `inspect` CLI finds the provider through the
entry point alone (a subprocess with no import of ours, run outside the checkout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.log import EvalLog
from inspect_ai.model import GenerateConfig, get_model
from inspect_ai.scorer import includes
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import tool

from tests.support.upstream import SYNTHESIS_TEXT, UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
PANEL = ["openai:p1-0.01s", "openai:p2-0.01s"]
PRICE = {"input": 1.0, "output": 2.0}  # USD per million tokens, for every model of the run
SETTINGS: dict[str, Any] = {
    "panel": PANEL,
    "judge": "openai:judge",
    "synthesizer": "openai:synth",
    "tool_mode": "off",
    "prices": {name: PRICE for name in ("p1-0.01s", "p2-0.01s", "judge", "synth")},
}


def boiling_task(**task: Any) -> Task:
    """Two samples the fake upstream's fixed answer gets right and wrong, respectively."""
    return Task(
        dataset=[
            Sample(
                id="altitude", input="Why does water boil sooner at altitude?", target="pressure"
            ),
            Sample(id="fruit", input="Name a yellow fruit.", target="banana"),
        ],
        solver=task.pop("solver", generate()),
        scorer=includes(),
        **task,
    )


def run(task: Task | str, model: str, tmp_path: Path, **kwargs: Any) -> EvalLog:
    (log,) = inspect_eval(
        task, model=model, log_dir=str(tmp_path / "logs"), display="none", **kwargs
    )
    assert log.status == "success", log.error
    return log


def cost(usage: dict[str, int]) -> float:
    return (usage["input_tokens"] * PRICE["input"] + usage["output_tokens"] * PRICE["output"]) / 1e6


def test_an_inspect_task_scores_fusion_runs_with_usage_and_the_fusion_record(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    since = len(upstream.app.records)
    log = run(boiling_task(), "fusion/custom", tmp_path, model_args=SETTINGS)
    assert log.results is not None
    assert log.results.scores[0].metrics["accuracy"].value == 0.5
    samples = {s.id: s for s in log.samples or []}
    assert samples["altitude"].scores["includes"].value == "C"
    assert samples["fruit"].scores["includes"].value == "I"
    for sample in samples.values():
        output = sample.output
        assert output.completion == SYNTHESIS_TEXT
        record = output.metadata["fusion"]
        assert [p["model"] for p in record["panel"]] == PANEL
        assert all(
            p["content"].startswith(f"[{p['model'].split(':')[1]}]") for p in record["panel"]
        )
        assert record["analysis"]["consensus"]  # the judge's structured analysis
        total = record["usage"]["total"]
        assert output.usage.total_tokens == total["total_tokens"] > 0
        assert output.usage.input_tokens == total["input_tokens"]
        assert output.usage.total_cost == pytest.approx(record["cost_usd"]["total"])
        assert output.usage.total_cost == pytest.approx(cost(total), rel=1e-6)
    roles = sorted(r.role for r in upstream.app.records_since(since))
    assert roles == ["judge"] * 2 + ["panel"] * 4 + ["synthesis"] * 2
    usage = log.stats.model_usage["fusion/custom"]
    assert usage.total_tokens == sum(s.output.usage.total_tokens for s in samples.values())


def test_a_panelist_alone_is_one_direct_call_of_its_spec(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    since = len(upstream.app.records)
    task = Task(
        dataset=[
            Sample(id="q", input="Why does water boil sooner at altitude?", target="[p2-0.01s]")
        ],
        solver=generate(),
        scorer=includes(),
    )
    log = run(task, "fusion/custom/p2", tmp_path, model_args=SETTINGS)
    (sample,) = log.samples or []
    assert sample.scores["includes"].value == "C"  # the fake upstream names the model it plays
    panelist = sample.output.metadata["fusion_panelist"]
    assert panelist["panelist"] == "p2" and panelist["model"] == "openai:p2-0.01s"
    assert sample.output.usage.total_tokens == panelist["usage"]["total_tokens"] > 0
    assert sample.output.usage.total_cost == pytest.approx(cost(panelist["usage"]), rel=1e-6)
    (record,) = upstream.app.records_since(since)
    assert (record.model, record.role) == ("p2-0.01s", "panel")


@tool
def lookup():
    async def execute(term: str) -> str:
        """Look a term up.

        Args:
            term: what to look up
        """
        return term

    return execute


def test_generate_config_and_tools_reach_the_synthesis_step(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    since = len(upstream.app.records)
    task = boiling_task(solver=[use_tools(lookup(), tool_choice="any"), generate()])
    log = run(task, "fusion/custom", tmp_path, model_args=SETTINGS, temperature=0.1, max_tokens=77)
    sample = (log.samples or [])[0]
    settings = sample.output.metadata["fusion"]["settings"]
    assert (settings["temperature"], settings["max_tokens"]) == (0.1, 77)
    synthesis = [r for r in upstream.app.records_since(since) if r.role == "synthesis"]
    assert synthesis
    for record in synthesis:
        assert [t["function"]["name"] for t in record.options["tools"]] == ["lookup"]
        assert record.options["tool_choice"] == "required"
    panel = [r for r in upstream.app.records_since(since) if r.role == "panel"]
    assert panel and all(
        "tools" not in r.options for r in panel
    )  # the caller's tools: synthesis only


def test_model_args_choose_the_aggregation_strategy(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    since = len(upstream.app.records)
    agreeing = ["openai:p1-ans42-0.01s", "openai:p2-ans42-0.01s"]
    task = Task(dataset=[Sample(input="What is 6 times 7?", target="42")], scorer=includes())
    args = {**SETTINGS, "panel": agreeing, "aggregation": "vote"}
    log = run(task, "fusion/custom", tmp_path, model_args=args)
    (sample,) = log.samples or []
    assert sample.scores["includes"].value == "C"
    aggregation = sample.output.metadata["fusion"]["aggregation"]
    assert (aggregation["requested"], aggregation["applied"]) == ("vote", "vote")
    # The panel agreed: the vote answered, and no judge or synthesizer was called.
    assert [r.role for r in upstream.app.records_since(since)] == ["panel", "panel"]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("fusion/custom", {**SETTINGS, "aggregation": "bogus"}, "aggregation"),
        ("fusion/custom", {**SETTINGS, "panle": PANEL}, "panle: unknown setting"),
        ("fusion/custom", {**SETTINGS, "quorum": 5}, "quorum: 5 exceeds the panel size 2"),
        ("fusion/custom", {**SETTINGS, "max_tool_calls": 99}, "max_tool_calls"),
        ("fusion/custom", {**SETTINGS, "judge": "nope:model"}, "unknown provider 'nope'"),
        ("fusion/custom", {"judge": "openai:judge"}, "fusion/custom needs a panel"),
        ("fusion/custom/p3", SETTINGS, "has p1, p2"),
        ("fusion/custom/x", SETTINGS, "fusion/<preset or alias>/p<N>"),
        ("fusion/nosuch", {}, "unknown fusion model fusion/nosuch"),
        ("fusion/local", {"preset": "quality"}, "the model name names the preset"),
        ("fusion/quality", {}, "OPENROUTER_API_KEY"),
    ],
)
def test_a_bad_model_name_or_setting_fails_when_the_model_is_created(
    name: str, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="fusion/") as caught:
        get_model(name, memoize=False, **args)
    assert message in str(caught.value)


def test_a_bad_setting_stops_the_eval_before_any_call(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    since = len(upstream.app.records)
    with pytest.raises(ValueError, match="panle: unknown setting"):
        inspect_eval(
            boiling_task(),
            model="fusion/custom",
            model_args={**SETTINGS, "panle": PANEL},
            log_dir=str(tmp_path / "logs"),
            display="none",
        )
    assert upstream.app.records_since(since) == []


def test_an_alias_file_names_a_configuration(
    openai_env: str, upstream: UpstreamServer, tmp_path: Path
) -> None:
    aliases = tmp_path / "aliases.json"
    aliases.write_text(json.dumps({"duo": SETTINGS}))
    model = get_model("fusion/duo", memoize=False, aliases=str(aliases))
    assert [s.name for s in model.api.fusion.panel] == PANEL
    assert get_model("fusion/duo/p1", memoize=False, aliases=str(aliases)).api.panelist_index == 0
    with pytest.raises(ValueError, match="cannot read the alias file"):
        get_model("fusion/duo", memoize=False, aliases=str(tmp_path / "missing.json"))


def test_the_local_preset_runs_one_sample_at_a_time() -> None:
    # llama.cpp answers one request at a time: parallel samples would only queue their calls.
    local = get_model("fusion/local", memoize=False)
    assert local.api.max_connections() == 1
    assert local.config.max_connections == 1  # what inspect's adaptive concurrency obeys
    chosen = get_model("fusion/local", memoize=False, config=GenerateConfig(max_connections=3))
    assert chosen.config.max_connections == 3  # --max-connections wins
    assert get_model("fusion/local/p1", memoize=False).config.max_connections == 1
    remote = get_model("fusion/custom", memoize=False, **SETTINGS)
    assert remote.api.max_connections() > 1 and remote.config.max_connections is None


def test_the_inspect_cli_finds_the_provider_through_the_entry_point(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """`inspect eval task.py --model fusion/custom -M ...` in a fresh process, run outside the
    checkout: nothing but the installed entry point tells inspect what `fusion` is."""
    (tmp_path / "task.py").write_text(
        "from inspect_ai import Task, task\n"
        "from inspect_ai.dataset import Sample\n"
        "from inspect_ai.scorer import includes\n"
        "from inspect_ai.solver import generate\n\n"
        "@task\n"
        "def boiling():\n"
        "    sample = Sample(input='Why does water boil sooner at altitude?', target='pressure')\n"
        "    return Task(dataset=[sample], solver=generate(), scorer=includes())\n"
    )
    env = {
        **os.environ,
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "test-key",
        "INSPECT_DISPLAY": "none",
    }
    env.pop("PYTHONPATH", None)
    inspect_cli = Path(sys.executable).with_name("inspect")
    command = [
        str(inspect_cli),
        "eval",
        "task.py",
        "--model",
        "fusion/custom",
        "-M",
        "panel=" + ",".join(PANEL),
        "-M",
        "judge=openai:judge",
        "-M",
        "synthesizer=openai:synth",
        "-M",
        "tool_mode=off",
        "--log-dir",
        "logs",
        "--log-format",
        "json",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = (tmp_path / "logs").glob("*.json")
    log = json.loads(path.read_text())
    assert log["status"] == "success"
    assert log["eval"]["model"] == "fusion/custom"
    (sample,) = log["samples"]
    assert sample["scores"]["includes"]["value"] == "C"
    assert [p["model"] for p in sample["output"]["metadata"]["fusion"]["panel"]] == PANEL
