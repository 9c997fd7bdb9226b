"""The browser tests' setup: Debian's chromium driven by Playwright for Python (no browser
download: scripts/ci_chromium.sh installs the package), the real server app on a real graph
whose models are the fake upstream, both on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import create_app
from tests.support.network import loopback_only
from tests.support.servers import running_server
from tests.support.upstream import FakeUpstream, UpstreamServer

API_KEY = "playground-test-key"
MODEL = "fusion-fake"
# Four panelists on the fake upstream (latency in the name); p4 never answers and is cut at
# panel_timeout_s, so every run shows a failed panelist with its reason.
PANEL = ["openai:alpha-0.3s", "openai:beta-0.6s", "openai:gamma-0.9s", "openai:delta-never"]
ALIAS = {
    "panel": PANEL,
    "judge": "openai:judge-0.3s",
    "synthesizer": "openai:writer-0.9s",  # 8 pieces 80 ms apart (the upstream below)
    "panel_timeout_s": 1.5,
}
# Three panelists whose answers end "Answer: 42." twice and "Answer: 41." once (the upstream's
# `-ans<X>-` names): a vote has a winner.
VOTE_MODEL = "fusion-vote"
VOTE_ALIAS = {
    "panel": ["openai:a-ans42-0.2s", "openai:b-ans42-0.3s", "openai:c-ans41-0.4s"],
    "judge": "openai:judge-0.3s",
    "synthesizer": "openai:writer-0.9s",
}
# Every answer of this alias (both panelists' and the synthesis) is what a test scripts on the
# upstream (`Behaviour(content=...)` for HOSTILE_UPSTREAM_MODELS): hostile model output.
HOSTILE_MODEL = "fusion-hostile"
HOSTILE_UPSTREAM_MODELS = ("hostile-panel-a", "hostile-panel-b", "hostile-writer")
HOSTILE_ALIAS = {
    "panel": ["openai:hostile-panel-a", "openai:hostile-panel-b"],
    "judge": "openai:judge-0.3s",
    "synthesizer": "openai:hostile-writer",
}
ARTIFACTS = Path(__file__).with_name("artifacts")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("FUSIONGRAPH_TEST_CHROMIUM"),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """The browser tests stay on this machine, like the unit tests."""
    with loopback_only() as attempts:
        yield
    assert not attempts, f"a browser test tried to leave loopback: {attempts}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots kept after the run (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    return ARTIFACTS


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    # Synthesis streams in 8 pieces 80 ms apart: the page shows the answer growing.
    with UpstreamServer(FakeUpstream(chunks=8, chunk_delay_s=0.08)) as server:
        yield server


@pytest.fixture(scope="module")
def evals_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="fusiongraph-evals-"))
    root = base / "fusion-evals"
    report = root / "demo-20261201-120000"
    report.mkdir(parents=True)
    (report / "report.html").write_text(
        "<!doctype html><title>demo</title><h1>Demo eval report</h1><p>fusion wins 3 of 4</p>"
    )
    (report / "summary.json").write_text('{"arms": ["fusion", "single"]}')
    (root / "unfinished-20261201-130000").mkdir()
    (base / "secret.txt").write_text("outside the evals folder")
    yield root
    shutil.rmtree(base, ignore_errors=True)


# Module scope: the environment it sets is restored before other test folders run.
@pytest.fixture(scope="module")
def server(upstream: UpstreamServer, evals_dir: Path) -> Iterator[str]:
    """The real app (auth required, a checkpointer, eval reports) on the fake upstream."""
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    os.environ["OPENAI_BASE_URL"] = upstream.base_url
    os.environ["OPENAI_API_KEY"] = "upstream-key"
    app = create_app(
        build_graph(checkpointer=InMemorySaver()),
        api_keys=[API_KEY],
        aliases={MODEL: ALIAS, VOTE_MODEL: VOTE_ALIAS, HOSTILE_MODEL: HOSTILE_ALIAS},
        evals_dir=str(evals_dir),
    )
    try:
        with running_server(app) as url:
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def browser_context() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        reason = os.environ.get("FUSIONGRAPH_TEST_CHROMIUM_ERROR", "chromium is not installed")
        pytest.skip(f"{reason}; run scripts/ci_chromium.sh install")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="fusiongraph-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
