"""The settings replicas run on: `--cache` values, the deployment files, the client prewarm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer.main
import yaml
from langgraph.cache.redis import RedisCache

from fusiongraph.graph import prewarm
from fusiongraph.graph.models import prewarm_clients
from fusiongraph.graph.shared_cache import open_cache, parse_cache_url
from fusiongraph.serve.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "none"),
        ("", "none"),
        ("off", "none"),
        (False, "none"),
        (True, "memory"),
        ("memory", "memory"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://cache.internal:6380/1", "redis"),
    ],
)
def test_cache_values_name_their_backend(value: str | bool | None, kind: str) -> None:
    assert parse_cache_url(value)[0] == kind


def test_an_unknown_cache_is_refused_with_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="memory or redis://"):
        parse_cache_url("memcached://127.0.0.1")


def test_an_unreachable_redis_fails_at_start_up_without_its_password() -> None:
    # RedisCache swallows connection errors: without this check every run would miss silently.
    port = _closed_port()
    with pytest.raises(ValueError, match="cannot reach the Redis cache") as caught:
        open_cache(f"redis://:secret@127.0.0.1:{port}/0")
    assert "secret" not in str(caught.value)


def test_memory_and_none_need_no_server() -> None:
    assert open_cache("memory") is True
    assert open_cache(None) is None


def test_redis_cache_is_langgraphs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.setattr(redis.Redis, "ping", lambda self: True)
    cache = open_cache("redis://127.0.0.1:6379/0")
    assert isinstance(cache, RedisCache)
    assert cache.prefix == "fusiongraph:cache:"


def _serve_envvars() -> set[str]:
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {p.envvar for p in command.params if isinstance(getattr(p, "envvar", None), str)}


def test_compose_replicas_are_configured_through_the_servers_own_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    replicas = [s for s in compose["services"].values() if s.get("build")]
    assert len(replicas) >= 2
    read_by_serve = _serve_envvars() | {"FUSIONGRAPH_PRESET", "FUSIONGRAPH_API_KEYS"}
    for replica in replicas:
        env = replica["environment"]
        assert set(env) <= read_by_serve, set(env) - read_by_serve
        assert env["FUSIONGRAPH_CHECKPOINTER"].startswith("postgresql://")
        assert parse_cache_url(env["FUSIONGRAPH_CACHE"])[0] == "redis"
    assert {"postgres", "redis"} <= set(compose["services"])


def test_the_image_runs_the_serve_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["fusiongraph", "serve", "--host", "0.0.0.0"' in dockerfile
    assert "[durable]" in dockerfile


def test_prewarm_loads_the_client_stack_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prewarm, "_thread", None)
    prewarm.start_client_prewarm(prewarm_clients)
    first = prewarm._thread
    prewarm.start_client_prewarm(prewarm_clients)
    assert prewarm._thread is first is not None
    prewarm.wait_client_prewarm()
    assert not prewarm.prewarm_pending()
    assert "langchain_openai" in sys.modules


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_settings_and_failure_modules_do_not_import_the_openai_sdk() -> None:
    # The SDK (about 0.3 s) loads with the first model, or in the prewarm thread, never at import.
    import subprocess

    code = (
        "import sys; import fusiongraph.graph.config, fusiongraph.nodes.failures, "
        "fusiongraph.serve.cli; print('openai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
