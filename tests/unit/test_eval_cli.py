"""`fusiongraph eval`: runs a task file and prints the markdown summary; a bad task name or
file, arm or setting is a clear error with exit code 2."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusiongraph.serve.cli import app
from tests.support.fakes import FakeFactory, Script, judge_json, judge_spec

MODELS = (
    *("--panel", "openai:m1", "--panel", "openai:m2"),
    *("--judge", json.dumps(judge_spec()), "--synthesizer", "openai:synth"),
    *("--tool-mode", "off"),
)


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    rows = [{"id": f"s{i}", "input": f"What is {i} + {i}?", "target": str(2 * i)} for i in (1, 2)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFactory:
    factory = FakeFactory(
        {
            "m1": Script([lambda m: f"Answer: {2 * int(m[-1].content.split()[2])}"]),
            "m2": Script(["Answer: 7"]),
            "judge": Script([judge_json(consensus=["sums"])]),
            "synth": Script(["Answer: 2"]),
        }
    )
    # The compiled default graph (graph/builder.py) binds the factory when it is first imported:
    # import it before the patch, or it would keep this test's fake for every later test.
    importlib.import_module("fusiongraph.graph.builder")
    monkeypatch.setattr("fusiongraph.graph.models.default_model_factory", factory)
    return factory


def test_eval_of_a_task_file_prints_the_summary_and_writes_the_report(
    tasks: Path, fake: FakeFactory, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    args = ["eval", str(tasks), *MODELS, "--arms", "fusion:synthesize,panelist", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# fusiongraph eval: sums" in result.stdout
    assert "| panelist:p1 | 2 | 100%" in result.stdout
    (folder,) = [p for p in out.iterdir() if p.name.startswith("sums-")]
    assert (folder / "report.html").is_file()
    assert len(fake.scripts["m1"].calls) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-suite"], "not a bundled suite"),
        (["missing.jsonl"], "missing.jsonl"),
        (["TASKS", "--arms", "panelist:p7"], "unknown panelist"),
        (["TASKS", "--quorum", "5"], "quorum"),
    ],
)
def test_a_bad_task_name_file_arm_or_setting_exits_2(
    tasks: Path, fake: FakeFactory, args: list[str], message: str, tmp_path: Path
) -> None:
    args = [str(tasks) if a == "TASKS" else a for a in args]
    result = CliRunner().invoke(app, ["eval", *args, *MODELS, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "cannot run the eval" in result.output and message in result.output
    assert sum(len(s.calls) for s in fake.scripts.values()) == 0


def test_several_task_files_make_one_report(tasks: Path, fake: FakeFactory, tmp_path: Path) -> None:
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "m1", "input": "What is 3 + 3?", "target": "6"}) + "\n")
    out = tmp_path / "reports"
    args = ["eval", f"{tasks},{more}", *MODELS, "--arms", "panelist:p1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# fusiongraph eval: sums+more" in result.stdout and "3 items" in result.stdout
    reports = [p.name for p in out.iterdir() if not p.name.startswith(".")]  # .cache beside
    assert len(reports) == 1 and reports[0].startswith("sums+more-")
