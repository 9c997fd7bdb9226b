"""`fusiongraph serve` on one process or on N worker processes sharing one socket.

uvicorn's own process model (`uvicorn.run(import string, factory=True, workers=N)`): a
supervisor binds the socket, spawns N workers that each build the app from the same settings,
restarts a worker that dies, and on SIGTERM passes the signal to every worker and waits for
them. gunicorn would add a second server, its config and its own signal handling for the same
job (its uvicorn worker class now lives in a separate package); uvicorn's supervisor is already
installed and is what `fusiongraph serve` ran on before.

Per worker: the send order's answer times, the model clients, an in-memory panel cache (a hit
only when the same worker serves the repeat; use a shared cache for replicas) and an in-memory
checkpointer, which is why `--workers > 1` refuses `--checkpointer memory` (a retry would land
on a worker that never saw the thread). SQLite and PostgreSQL checkpointers are shared. The
metrics are summed across workers (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI

from fusiongraph.graph.persistence import parse_checkpointer_url
from fusiongraph.serve.metrics import MULTIPROC_ENV
from fusiongraph.serve.shutdown import DEFAULT_GRACE_S, quiet_exit_after_signal

SETTINGS_ENV = "FUSIONGRAPH_SERVE_SETTINGS"
SUPERVISOR_ENV = "FUSIONGRAPH_SERVE_SUPERVISOR"
APP_FACTORY = "fusiongraph.serve.workers:app_from_env"
# uvicorn's own wait covers the grace plus the time aborted runs take to send their error.
SHUTDOWN_MARGIN_S = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass
class ServeSettings:
    """What every worker builds its app from (the CLI's options, as plain data)."""

    aliases: dict[str, dict[str, Any]] | None = None
    default_preset: str | None = None
    context: dict[str, Any] | None = None  # FusionContext settings under every model served
    checkpointer_url: str | None = None
    cache: bool | str | None = False
    evals_dir: str | None = None
    grace_s: float = DEFAULT_GRACE_S

    def app(self) -> FastAPI:
        from fusiongraph.serve.server import create_app

        return create_app(
            aliases=self.aliases,
            default_preset=self.default_preset,
            context=self.context,
            checkpointer_url=self.checkpointer_url,
            cache=self.cache,
            evals_dir=self.evals_dir,
            grace_s=self.grace_s,
            start_local_model=True,  # /readyz must be able to turn ready on its own
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(**json.loads(os.environ.get(SETTINGS_ENV) or "{}"))


def default_workers() -> int:
    """One per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int, settings: ServeSettings) -> None:
    """Refuse what cannot work across processes (before any worker starts)."""
    kind, _ = parse_checkpointer_url(settings.checkpointer_url)
    if workers > 1 and kind == "memory":
        raise ValueError(
            "--checkpointer memory lives in one process: with --workers > 1 a thread's retry "
            "may reach another worker; use sqlite:///file.db or postgresql://..., or --workers 1"
        )


def _die_with_supervisor() -> None:
    """A worker whose supervisor is killed (SIGKILL: no chance to stop it) dies too, instead of
    finishing runs for a server that is gone (Linux; elsewhere uvicorn's pipe ping notices)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != supervisor:  # it died before the line above took effect
        os._exit(1)


def app_from_env() -> FastAPI:
    """The app factory uvicorn calls in each worker."""
    _die_with_supervisor()
    return ServeSettings.from_env().app()


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers' metric files (kept when the operator
    set one), removed when the server stops."""
    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="fusiongraph-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def run_server(
    settings: ServeSettings, *, host: str, port: int, workers: int, log_level: str
) -> None:
    """Serve until SIGTERM/SIGINT, drain within the grace, return (exit status 0)."""
    import uvicorn

    from fusiongraph.serve.log_format import log_config

    check_workers(workers, settings)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "log_config": log_config(),
        "timeout_graceful_shutdown": settings.grace_s + SHUTDOWN_MARGIN_S,
    }
    quiet_exit_after_signal()
    if workers <= 1:
        uvicorn.run(settings.app(), **options)  # a bad setting fails here, before binding
        return
    from fusiongraph.serve.server import check_settings

    check_settings(settings.aliases, settings.default_preset, settings.context)
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    with _multiprocess_metrics():
        uvicorn.run(APP_FACTORY, factory=True, workers=workers, **options)
