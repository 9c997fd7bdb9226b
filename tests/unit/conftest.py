from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from fusiongraph.nodes import scheduling
from tests.support.fakes import FakeFactory
from tests.support.network import loopback_only
from tests.support.upstream import FakeUpstream, UpstreamServer


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Unit tests stay on this machine: a connection to anything but loopback fails the test,
    even where the code under test catches the refusal (tests/support/network.py)."""
    with loopback_only() as attempts:
        yield
    assert not attempts, f"a unit test tried to leave loopback: {attempts}"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake keys so specs pass the key check; no test here opens a socket to a provider."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    monkeypatch.delenv("FUSIONGRAPH_PRESET", raising=False)


@pytest.fixture(autouse=True)
def _fresh_latency_memory() -> None:
    """Each test starts with no remembered panel latencies (they set the send order)."""
    scheduling.PANEL_LATENCIES.clear()


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    """The benchmark's fake OpenAI-compatible upstream: real HTTP, latency from the model name."""
    with UpstreamServer(FakeUpstream(chunks=3, chunk_delay_s=0.0)) as server:
        yield server


@pytest.fixture
def openai_env(upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Real ChatOpenAI clients of the default factory, pointed at the fake upstream."""
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    return upstream.base_url


# The server tests' usual setup (a module that needs another one defines its own fixture).
@pytest.fixture
def factory() -> FakeFactory:
    from tests.support.server_app import scripts

    return FakeFactory(scripts())


@pytest.fixture
def base_url(factory: FakeFactory) -> Iterator[str]:
    from tests.support.server_app import app_for
    from tests.support.servers import running_server

    with running_server(app_for(factory)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as c:
        yield c
