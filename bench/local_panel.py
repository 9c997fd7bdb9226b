"""What the `local-panel` preset costs on this machine: disk, memory, and tokens/s per model.

    .venv/bin/python -m bench.local_panel            # starts (or reuses) the server, measures

Starts the local model server with the preset's models (as `fusiongraph local start --preset
local-panel` does), then reads the size of each GGUF it serves, the resident memory of the server
process with every model loaded (psutil), and each model's generation speed on one short prompt
(completion tokens over the wall time of a non-streaming call; prompt processing included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import psutil

from fusiongraph.local_model.catalog import SPLIT_MODELS
from fusiongraph.local_model.launcher import ensure_local_server, server_status
from fusiongraph.local_model.settings import LOCAL_MODEL_ALIAS, config_path

PROMPT = "Write a Python function is_palindrome(s) that ignores case and spaces."


def measure(max_tokens: int, runs: int) -> dict[str, object]:
    base_url = ensure_local_server(timeout_s=300, models=list(SPLIT_MODELS))
    config = json.loads(config_path().read_text(encoding="utf-8"))
    disk = {m["model_alias"]: Path(m["model"]).stat().st_size for m in config["models"]}
    speeds: dict[str, list[float]] = {}
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for alias in (LOCAL_MODEL_ALIAS, *SPLIT_MODELS):
            for _ in range(runs):
                started = time.perf_counter()
                response = client.post(
                    "/chat/completions",
                    json={
                        "model": alias,
                        "messages": [{"role": "user", "content": PROMPT}],
                        "max_tokens": max_tokens,
                        "temperature": 0,
                    },
                )
                response.raise_for_status()
                tokens = response.json()["usage"]["completion_tokens"]
                speeds.setdefault(alias, []).append(tokens / (time.perf_counter() - started))
    pid = server_status().pid
    rss = psutil.Process(pid).memory_info().rss if pid else None
    return {
        "disk_bytes": disk,
        "server_rss_bytes": rss,
        "tokens_per_s": {alias: round(max(v), 1) for alias, v in speeds.items()},
        "max_tokens": max_tokens,
        "cpus": len(psutil.Process().cpu_affinity() or []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2, help="calls per model (the best counts)")
    args = parser.parse_args()
    print(json.dumps(measure(args.max_tokens, args.runs), indent=2))


if __name__ == "__main__":
    main()
