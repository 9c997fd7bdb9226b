"""/healthz says the process answers; /readyz says whether a run can work right now: every
offered model resolves (keys present), the local model is up when the default needs it."""

from __future__ import annotations

import httpx
import pytest

from fusiongraph.graph.builder import build_graph
from fusiongraph.local_model.settings import PORT_ENV
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory, fake_context
from tests.support.servers import free_port, running_server


def ready(default_preset: str, **aliases: dict) -> httpx.Response:
    app = create_app(
        build_graph(FakeFactory({})),
        api_keys=["k"],  # probes need no key
        default_preset=default_preset,
        aliases=aliases,
    )
    with running_server(app) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        return httpx.get(f"{url}/readyz", timeout=10)


def test_ready_when_every_model_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    response = ready("quality", **{"fusion-mine": fake_context(["m1"])})
    assert response.status_code == 200
    assert response.json()["models"] == {"fusion": {"ok": True}, "fusion-mine": {"ok": True}}


def test_not_ready_when_a_key_is_missing() -> None:  # conftest unsets OPENROUTER_API_KEY
    response = ready("quality")
    assert response.status_code == 503
    assert "OPENROUTER_API_KEY" in response.json()["models"]["fusion"]["error"]


def test_not_ready_while_the_local_model_the_default_needs_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PORT_ENV, str(free_port()))  # nothing serves there
    response = ready("local")
    assert response.status_code == 503
    assert response.json()["local_model"].startswith("down")
