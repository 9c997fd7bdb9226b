"""The Redis server behind the shared panel-cache tests (like tests/integration/postgres.py).

Order: FUSIONGRAPH_TEST_REDIS_URL (what `scripts/ci_redis.sh run` exports), else an instance
that `scripts/ci_redis.sh start` already runs (.redis/url), else this process starts one with
that script (installing Debian's redis-server if it is missing and we may) and stops it when
pytest exits. When none can be had, the tests fail under CI (CI=true) and skip elsewhere.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from pathlib import Path
from typing import NoReturn

import pytest

from tests.integration.postgres import in_ci

URL_ENV = "FUSIONGRAPH_TEST_REDIS_URL"
ERROR_ENV = "FUSIONGRAPH_TEST_REDIS_ERROR"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci_redis.sh"

_lock = threading.Lock()
_url: str | None = None
_error: str | None = None


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"Redis is required under CI: {reason}", pytrace=False)
    pytest.skip(f"no Redis: {reason} (run scripts/ci_redis.sh start, or set {URL_ENV})")


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _find_or_start() -> str:
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return url
    if os.environ.get(ERROR_ENV):
        raise RuntimeError(os.environ[ERROR_ENV])
    running = _script("url", timeout=60)
    if running.returncode == 0 and running.stdout.strip():
        return running.stdout.strip().splitlines()[-1]
    started = _script("start")
    if started.returncode != 0 or not started.stdout.strip():
        raise RuntimeError(f"{SCRIPT.name} start failed: {started.stderr.strip()[-2000:]}")
    atexit.register(lambda: _script("stop", timeout=60))
    return started.stdout.strip().splitlines()[-1]


def _check(url: str) -> str | None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"cannot reach {url}: {exc}"
    return None


def redis_url() -> str:
    """A reachable Redis URL for this test session (found or started once), or fail/skip."""
    global _url, _error
    with _lock:
        if _url is None and _error is None:
            try:
                url = _find_or_start()
            except Exception as exc:
                _error = str(exc)
            else:
                _error = _check(url)
                _url = None if _error else url
    if _url is None:
        unavailable(_error or "unknown reason")
    return _url
