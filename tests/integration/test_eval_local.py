"""One tiny real eval on the bundled local model (llama.cpp serving SmolLM2-135M): two math
items, the fusion arm and its first panelist. SmolLM2 is weak, so the assertions are about the
pipeline: every sample answered and scored, free models cost $0 (not unknown), the report
written, and a second eval of the same items served from the cache without a model call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusiongraph.evals import run_eval

pytestmark = pytest.mark.integration

ARMS = ["fusion:synthesize", "panelist:p1"]


def test_a_tiny_local_eval_runs_scores_reports_and_caches(tmp_path: Path) -> None:
    report = run_eval("math", context={"preset": "local"}, arms=ARMS, limit=2, out_dir=tmp_path)
    assert report.meta["runs_made"] == 2 and len(report.samples) == 4
    for sample in report.samples:
        assert sample["error"] is None, sample["error"]
        assert sample["answer"].strip()
        assert sample["score"] is not None and sample["score_error"] is None
        assert sample["cost_usd"] == 0.0  # the local model is free: $0, not unknown
        assert sample["tokens"] > 0 and sample["latency_s"] > 0
    fusion = [s for s in report.samples if s["arm"] == "fusion:synthesize"]
    panelist = [s for s in report.samples if s["arm"] == "panelist:p1"]
    # the fusion arm pays the panelist's answer and more; the panelist arm is its share
    assert all(f["tokens"] > p["tokens"] for f, p in zip(fusion, panelist, strict=True))
    math = report.task("math")
    assert math.baseline == "panelist:p1"
    assert {a.arm for a in math.arms} == set(ARMS)
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["runs_made"] == 2
    assert "<svg" in (report.folder / "report.html").read_text()

    again = run_eval("math", context={"preset": "local"}, arms=ARMS, limit=2, out_dir=tmp_path)
    assert again.meta["runs_made"] == 0 and again.meta["samples_from_cache"] == 4
    assert [s["answer"] for s in again.samples] == [s["answer"] for s in report.samples]
