"""The `fusiongraph` command line, run as a user would (a subprocess), against real HTTP upstreams.

Hosted models are reached through the benchmark's fake OpenAI-compatible upstream on 127.0.0.1
(OPENROUTER_BASE_URL points there), so every call goes through the real ChatOpenAI clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.upstream import UpstreamServer

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "fusiongraph.serve.cli"]
ASK = ("ask", "Why is the sky blue?", "--preset", "quality", "--tool-mode", "off")


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def cli_env(upstream: UpstreamServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TAVILY_"))}
    env.update(OPENROUTER_API_KEY="test-key", OPENROUTER_BASE_URL=upstream.base_url, COLUMNS="120")
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_ask_json_prints_panel_analysis_and_answer(upstream: UpstreamServer) -> None:
    out = run_cli(
        *ASK,
        "--json",
        env=cli_env(upstream),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"].strip()
    fusion = result["fusion"]
    assert len(fusion["panel"]) == 3 and fusion["failed_models"] == []
    assert set(fusion["analysis"]) == {
        "consensus",
        "contradictions",
        "partial_coverage",
        "unique_insights",
        "blind_spots",
        "dropped",  # what named a panelist the judge was never shown
    }
    assert fusion["cost_usd"]["total"] > 0  # preset models have default prices


def test_ask_shows_sections_in_rich_output(upstream: UpstreamServer) -> None:
    out = run_cli(
        *ASK,
        env=cli_env(upstream),
    )
    assert out.returncode == 0, out.stderr
    for title in (
        "p1",
        "consensus",
        "contradictions",
        "partial coverage",
        "unique insights",
        "blind spots",
        "final answer",
    ):
        assert title in out.stdout, title


def test_ask_bad_configuration_exits_2_naming_the_field(upstream: UpstreamServer) -> None:
    out = run_cli("ask", "hi", "--panel", "nope:model", env=cli_env(upstream))
    assert out.returncode == 2
    assert "panel[0]" in out.stderr and "Traceback" not in out.stderr


def test_ask_with_checkpointer_prints_a_resumable_thread(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    out = run_cli(
        *ASK,
        "--checkpointer",
        f"sqlite:///{db}",
        "--thread",
        "t-1",
        "--json",
        env=cli_env(upstream),
    )
    assert out.returncode == 0, out.stderr
    assert "thread: t-1" in out.stderr and db.exists()


def test_presets_and_help() -> None:
    out = subprocess.run(
        [*CLI, "presets"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    for name in ("local", "quality", "budget", "claude-opus-4.8", "smollm2-135m"):
        assert name in out.stdout
    for command in (["--help"], ["ask", "--help"], ["serve", "--help"], ["local", "--help"]):
        assert subprocess.run([*CLI, *command], capture_output=True, check=False).returncode == 0
