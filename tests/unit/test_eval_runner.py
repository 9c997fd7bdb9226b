"""The eval engine on scripted models: strategy arms share the panel, panelist arms reuse its
answers, costs are deployment costs, failures are recorded per sample, and the disk cache
resumes an interrupted eval without calling any model twice."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langgraph.cache.sqlite import SqliteCache

from fusiongraph.evals.arms import strategies
from fusiongraph.evals.cache import ResultCache
from fusiongraph.evals.evaluate import arun_eval
from fusiongraph.evals.schema import EvalItem
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

PRICES = {name: {"input": 1.0, "output": 2.0} for name in ("m1", "m2", "m3", "judge", "synth")}


def items(n: int = 4) -> list[EvalItem]:
    return [
        EvalItem(
            id=f"sum-{i}",
            task_type="math",
            messages=[{"role": "user", "content": f"What is {i} + {10 * i}?"}],
            target=str(11 * i),
        )
        for i in range(1, n + 1)
    ]


def question_of(messages: list[BaseMessage]) -> str:
    return next(m.content for m in reversed(messages) if m.type == "human")


def total_of(messages: list[BaseMessage]) -> int:
    a, b = map(int, re.findall(r"\d+", question_of(messages))[:2])
    return a + b


def panelist(wrong_from: int) -> Script:
    """Right on items below `wrong_from`, else one too many."""

    def reply(messages: list[BaseMessage]) -> str:
        total = total_of(messages)
        return f"Adding them up. Answer: {total if total < 11 * wrong_from else total + 1}"

    return Script([reply])


def factory(**overrides: Script) -> FakeFactory:
    scripts = {
        "m1": panelist(wrong_from=99),  # always right
        "m2": panelist(wrong_from=3),  # right on items 1-2
        "m3": panelist(wrong_from=1),  # always wrong
        "judge": Script([judge_json(consensus=["they add the numbers"])]),
        "synth": Script([lambda messages: "The sum. Answer: 0"]),
        **overrides,
    }
    return FakeFactory(scripts)


def context(**extra: Any) -> dict[str, Any]:
    return fake_context(["m1", "m2", "m3"], prices=PRICES, **extra)


async def evaluate(fake: FakeFactory, tmp_path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("context", context())
    return await arun_eval(
        kwargs.pop("tasks", items()),
        out_dir=tmp_path,
        model_factory=fake,
        concurrency=kwargs.pop("concurrency", 1),
        **kwargs,
    )


def calls(fake: FakeFactory) -> dict[str, int]:
    return {name: len(script.calls) for name, script in fake.scripts.items()}


def samples_of(report: Any, arm: str) -> dict[str, dict[str, Any]]:
    return {s["item"]: s for s in report.samples if s["arm"] == arm}


async def test_strategy_arms_share_the_panel_and_panelists_cost_nothing_more(
    tmp_path: Path,
) -> None:
    fake = factory()
    arms = [f"fusion:{s}" for s in strategies()] + ["panelist"]
    report = await evaluate(fake, tmp_path, arms=arms)
    made = calls(fake)
    # every panelist answered each item once, for every strategy and its own arm
    assert made["m1"] == made["m2"] == made["m3"] == 4
    assert len(report.samples) == 4 * (len(strategies()) + 3)
    p2 = samples_of(report, "panelist:p2")
    assert [p2[f"sum-{i}"]["score"]["correct"] for i in range(1, 5)] == [True, True, False, False]
    assert p2["sum-1"]["answer"] == "Adding them up. Answer: 11"
    assert report.task("math").baseline == "panelist:p1"


async def test_every_fusion_arm_costs_its_panel_too(tmp_path: Path) -> None:
    report = await evaluate(factory(), tmp_path, arms=["fusion", "panelist"])
    for item in (s.id for s in items()):
        panel = sum(samples_of(report, f"panelist:p{i}")[item]["cost_usd"] for i in (1, 2, 3))
        panel_tokens = sum(samples_of(report, f"panelist:p{i}")[item]["tokens"] for i in (1, 2, 3))
        for strategy in strategies():
            sample = samples_of(report, f"fusion:{strategy}")[item]
            # the first strategy paid the panel; the others were served it from the cache,
            # and still count it: an arm's cost is what it costs deployed on its own
            assert sample["cost_usd"] >= panel > 0, strategy
            assert sample["tokens"] >= panel_tokens, strategy


async def test_an_interrupted_eval_resumes_without_calling_a_model_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt: dict[str, Any] = {}
    # Slow panel-cache writes, as on a loaded machine: the interrupted eval must still return
    # only once the item it was running has written its panel answers.
    write = SqliteCache.aset

    async def slow_write(self: SqliteCache, pairs: Any) -> None:
        await asyncio.sleep(0.05)
        await write(self, pairs)

    monkeypatch.setattr(SqliteCache, "aset", slow_write)

    def judge(messages: list[BaseMessage]) -> str:
        if "What is 3 + 30?" in str([m.content for m in messages]) and "task" in interrupt:
            interrupt.pop("task").cancel()  # Ctrl-C while the judge reads item 3
        return judge_json(consensus=["they add the numbers"])

    first = factory(judge=Script([judge]))
    task = asyncio.create_task(evaluate(first, tmp_path, arms=["fusion:synthesize", "panelist"]))
    interrupt["task"] = task
    with pytest.raises(asyncio.CancelledError):
        await task
    asked_first = {question_of(c) for c in first.scripts["m1"].calls}
    assert asked_first == {"What is 1 + 10?", "What is 2 + 20?", "What is 3 + 30?"}
    assert ResultCache(tmp_path / ".cache").count("runs") == 2  # items 1 and 2 finished

    resumed = factory()
    report = await evaluate(resumed, tmp_path, arms=["fusion:synthesize", "panelist"])
    for name in ("m1", "m2", "m3"):
        # item 3's panel answers were kept by the panel cache; only item 4 is new
        assert [question_of(c) for c in resumed.scripts[name].calls] == ["What is 4 + 40?"]
    assert len(resumed.scripts["judge"].calls) == 2  # items 3 and 4
    assert report.meta["runs_made"] == 2 and len(report.samples) == 16

    again = factory()
    second = await evaluate(again, tmp_path, arms=["fusion:synthesize", "panelist"])
    assert sum(calls(again).values()) == 0 and second.meta["runs_made"] == 0
    assert second.meta["samples_from_cache"] == 16
    assert [a.to_dict() for a in second.task("math").arms] == [
        a.to_dict() for a in report.task("math").arms
    ]


async def test_failures_are_recorded_per_sample_and_the_eval_goes_on(tmp_path: Path) -> None:
    def flaky(messages: list[BaseMessage]) -> str:
        if "2 + 20" in question_of(messages):
            raise RuntimeError("upstream exploded")
        return f"Answer: {total_of(messages)}"

    report = await evaluate(
        factory(m2=Script([flaky])), tmp_path, arms=["fusion:synthesize", "panelist"]
    )
    p2 = samples_of(report, "panelist:p2")
    assert p2["sum-2"]["answer"] is None and p2["sum-2"]["error"]["reason"]
    assert p2["sum-2"]["score"]["correct"] is False  # no answer counts as wrong
    assert all(p2[f"sum-{i}"]["error"] is None for i in (1, 3, 4))
    assert samples_of(report, "fusion:synthesize")["sum-2"]["error"] is None  # quorum of two


async def test_a_run_past_its_timeout_is_an_error_sample_and_is_not_cached(tmp_path: Path) -> None:
    slow_judge = Script([judge_json(consensus=["x"])], delay_s=5.0)
    report = await evaluate(
        factory(judge=slow_judge),
        tmp_path,
        tasks=items(2),
        arms=["fusion:synthesize", "panelist:p1"],
        item_timeout_s=0.5,
        concurrency=2,
    )
    assert len(report.samples) == 4
    assert all(s["error"]["reason"] == "timeout" for s in report.samples)
    assert ResultCache(tmp_path / ".cache").count("runs") == 0  # tried again next time


async def test_the_report_folder_holds_self_contained_files(tmp_path: Path) -> None:
    report = await evaluate(
        factory(), tmp_path, tasks=items(2), arms=["fusion:synthesize", "panelist"]
    )
    assert report.folder.parent == tmp_path and report.folder.name.startswith("items-")
    assert {p.name for p in report.folder.iterdir()} == {
        "report.md",
        "report.html",
        "samples.jsonl",
        "summary.json",
        "calibration.json",  # the profile a run's `calibration` setting reads
    }
    rows = [json.loads(line) for line in (report.folder / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4
    assert {"item", "arm", "answer", "score", "cost_usd", "latency_s", "tokens"} <= set(rows[0])
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["task_types"][0]["baseline"] == "panelist:p1"
    page = (report.folder / "report.html").read_text()
    assert "<svg" in page and "<style>" in page
    # nothing fetched from elsewhere: no script, stylesheet link, image source or remote url()
    assert not re.search(r"<script|<link|<img|src=|url\(\s*['\"]?(https?:)?//", page)
    text = (report.folder / "report.md").read_text()
    assert text == report.markdown and "| fusion:synthesize |" in text
    assert "not paid for twice" in text


def section(prompt: str, title: str) -> str:
    return prompt.split(f"## {title}\n", 1)[1].split("\n\n## ", 1)[0]


def biased_grader(messages: list[BaseMessage]) -> str:
    """Grades by the word `glucose`; between two good answers it always prefers the first
    shown (position bias, which comparing in both orders must cancel)."""
    prompt = messages[-1].content
    if "## Answer to grade" in prompt:
        good = "glucose" in section(prompt, "Answer to grade")
        return f"VERDICT: {'CORRECT' if good else 'INCORRECT'}\nSCORE: {9 if good else 1}\nok"
    a, b = ("glucose" in section(prompt, f"Answer {x}") for x in "AB")
    return f"WINNER: {'A' if a else 'B' if b else 'TIE'}\nbecause"


async def test_graded_items_are_compared_with_the_best_panelist_in_both_orders(
    tmp_path: Path,
) -> None:
    item = EvalItem(
        id="photo",
        task_type="research",
        messages=[{"role": "user", "content": "How does photosynthesis store energy?"}],
        target="As chemical energy in glucose.",
    )
    grader = Script([biased_grader])
    fake = factory(
        m1=Script(["It stores light as chemical energy in glucose."]),
        m2=Script(["By magic."]),
        m3=Script(["By magic."]),
        synth=Script(["Light becomes chemical energy, kept in glucose."]),
        grader=grader,
    )
    report = await evaluate(
        fake, tmp_path, tasks=[item], arms=["fusion:synthesize", "panelist"], grader="openai:grader"
    )
    outcome = {s["arm"]: s.get("vs_baseline") for s in report.samples}
    assert report.task("research").baseline == "panelist:p1"
    # both answers good: the biased grader picked whichever came first, so the orders cancel
    assert outcome["fusion:synthesize"] == "tie"
    assert outcome["panelist:p2"] == outcome["panelist:p3"] == "loss"
    prompts = [c[-1].content for c in grader.calls]
    grades = [p for p in prompts if "## Answer to grade" in p]
    compares = [p for p in prompts if "## Answer A" in p]
    assert len(grades) == 3  # one per distinct answer: p3's equals p2's
    assert len(compares) == 4  # fusion and p2, each in both orders; p3's pair was cached
    assert report.meta["grader"] == "openai:grader"


async def test_a_disk_error_mid_eval_is_raised_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `fusiongraph eval` turns an OSError into a one-line message, not a traceback of a group
    def full_disk(self: ResultCache, *args: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(ResultCache, "put", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await evaluate(factory(), tmp_path, arms=["fusion:synthesize"])
