"""The PostgreSQL and Redis servers behind the durable-run, replica and shared-cache tests.

Order, for each: FUSIONGRAPH_TEST_<NAME>_URL (what `scripts/ci_<name>.sh run` exports), else a
server that `scripts/ci_<name>.sh start` already runs (.pg/url, .redis/url), else this process
starts one with that script (installing the Debian package if it is missing and we may) and
stops it when pytest exits. When none can be had, the tests fail under CI (CI=true) and skip with
the reason elsewhere: a CI run must never pass by silently skipping them.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class ScriptServer:
    """One server per test session, found or started once by its scripts/ci_<name>.sh."""

    def __init__(self, what: str, name: str, check: Callable[[str], str | None]) -> None:
        self.what = what
        self.script = SCRIPTS / f"ci_{name}.sh"
        self.url_env = f"FUSIONGRAPH_TEST_{name.upper()}_URL"
        # Set by `scripts/ci_<name>.sh run` when its start failed: do not try again.
        self.error_env = f"FUSIONGRAPH_TEST_{name.upper()}_ERROR"
        self.check = check
        self._lock = threading.Lock()
        self._url: str | None = None
        self._error: str | None = None

    def _run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _find_or_start(self) -> str:
        url = os.environ.get(self.url_env, "").strip()
        if url:
            return url
        if os.environ.get(self.error_env):
            raise RuntimeError(os.environ[self.error_env])
        running = self._run("url", timeout=60)
        if running.returncode == 0 and running.stdout.strip():
            return running.stdout.strip().splitlines()[-1]
        started = self._run("start")
        if started.returncode != 0 or not started.stdout.strip():
            raise RuntimeError(f"{self.script.name} start failed: {started.stderr.strip()[-2000:]}")
        atexit.register(self._run, "stop", timeout=120)
        return started.stdout.strip().splitlines()[-1]

    def url(self) -> str:
        """A reachable URL for this test session, or fail (under CI) or skip."""
        with self._lock:
            if self._url is None and self._error is None:
                try:
                    url = self._find_or_start()
                except Exception as exc:
                    self._error = str(exc)
                else:
                    self._error = self.check(url)
                    self._url = None if self._error else url
        if self._url is None:
            reason = self._error or "unknown reason"
            if in_ci():
                pytest.fail(f"{self.what} is required under CI: {reason}", pytrace=False)
            pytest.skip(
                f"no {self.what}: {reason} (run scripts/{self.script.name} start, "
                f"or set {self.url_env})"
            )
        return self._url


def _check_postgres(url: str) -> str | None:
    """None when a connection works, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("select 1")
    except Exception as exc:
        return f"cannot connect to {url.split('@')[-1]}: {exc}"
    return None


def _check_redis(url: str) -> str | None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"cannot reach {url}: {exc}"
    return None


postgres_url = ScriptServer("PostgreSQL", "postgres", _check_postgres).url
redis_url = ScriptServer("Redis", "redis", _check_redis).url
