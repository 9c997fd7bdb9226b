"""The PostgreSQL server behind the durable-run tests.

Order: FUSIONGRAPH_TEST_POSTGRES_URL (what .ci/run exports), else a server that
`scripts/ci_postgres.sh start` already runs (.pg/url), else this process starts one with that
script (installing PostgreSQL if it is missing and we may) and stops it when pytest exits.
When none can be had, the tests fail under CI (CI=true) and skip with the reason elsewhere: a
CI run must never pass by silently skipping the PostgreSQL tests.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from pathlib import Path
from typing import NoReturn

import pytest

URL_ENV = "FUSIONGRAPH_TEST_POSTGRES_URL"
# Set by `scripts/ci_postgres.sh run` when its start failed: do not try again.
ERROR_ENV = "FUSIONGRAPH_TEST_POSTGRES_ERROR"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci_postgres.sh"

_lock = threading.Lock()
_url: str | None = None
_error: str | None = None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason} (run scripts/ci_postgres.sh start, or set {URL_ENV})")


def _check(url: str) -> str | None:
    """None when a connection works, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("select 1")
    except Exception as exc:
        return f"cannot connect to {url.split('@')[-1]}: {exc}"
    return None


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _stop_started() -> None:
    _script("stop", timeout=120)


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
    atexit.register(_stop_started)
    return started.stdout.strip().splitlines()[-1]


def postgres_url() -> str:
    """A reachable PostgreSQL URL for this test session (found or started once), or fail/skip."""
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
