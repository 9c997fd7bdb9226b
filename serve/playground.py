"""The web playground: a static page at `/` that runs fusion through the server's own API and
shows the deliberation (panel, analysis, timeline, cost), plus the few JSON endpoints it needs.

The page and its assets are public (they hold no data); everything under /playground/api/ takes
the same API key as /v1 (`FUSIONGRAPH_API_KEYS`), as a header only: the page keeps the key in
the tab's sessionStorage and fetches eval files itself, so no cookie ever carries it. The
settings form is built in the browser from the graph's context schema, so a new setting appears
without touching this module. Eval reports (`fusiongraph eval` folders) are served read-only
from one folder, never outside it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import webbrowser
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from pydantic import BaseModel
from starlette.middleware.gzip import GZipMiddleware

from fusiongraph.graph.presets import PRESETS
from fusiongraph.graph.threads import OWNER_KEY, owner_of
from fusiongraph.serve.openai_errors import OpenAIError

if TYPE_CHECKING:
    from fusiongraph.graph.builder import FusionGraph

STATIC_DIR = Path(__file__).with_name("playground")
EVALS_DIR_ENV = "FUSIONGRAPH_EVALS_DIR"
DEFAULT_EVALS_DIR = "fusion-evals"
# How many checkpoints are scanned to list threads, and how many threads are listed.
THREAD_SCAN = 2000
THREAD_LIMIT = 50
# A summary.json larger than this is listed without its content.
SUMMARY_MAX_BYTES = 256_000

# The page runs only its own scripts; model output is sanitised before it is shown, and this
# keeps anything that slips through from loading or sending elsewhere.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# An eval file opened at its own URL runs in an opaque origin: it cannot call the API. (The page
# shows reports in a sandboxed frame from the text it fetched.)
REPORT_CSP = "sandbox allow-scripts; default-src 'self' 'unsafe-inline' data:; connect-src 'none'"

Authorize = Callable[[Request], str | None]


def evals_root(evals_dir: str | Path | None = None) -> Path:
    """The folder whose subfolders are eval reports: the argument, FUSIONGRAPH_EVALS_DIR, or
    ./fusion-evals."""
    return Path(evals_dir or os.environ.get(EVALS_DIR_ENV) or DEFAULT_EVALS_DIR).resolve()


def _spec_label(spec: Any) -> str:
    """A spec as the page shows and sends it: `provider:model`, or its JSON object."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and set(spec) <= {"provider", "model"} and "provider" in spec:
        return f"{spec['provider']}:{spec['model']}"
    return json.dumps(spec, separators=(",", ":"))


def presets_view() -> dict[str, dict[str, Any]]:
    """Each preset's description and the models it runs (the page's model suggestions)."""
    return {
        name: {
            "description": preset.get("description", ""),
            "cost": preset.get("cost", ""),
            "panel": [_spec_label(s) for s in preset.get("panel", [])],
            "judge": _spec_label(preset.get("judge")) if preset.get("judge") else None,
            "synthesizer": _spec_label(preset.get("synthesizer"))
            if preset.get("synthesizer")
            else None,
        }
        for name, preset in PRESETS.items()
    }


def _text(message: AnyMessage) -> str:
    return message.text if hasattr(message, "text") else str(message.content)


def conversation_of(messages: list[AnyMessage]) -> list[dict[str, Any]]:
    """A thread's messages as the page's turns: user text, assistant text and its run record."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            turns.append({"role": "user", "content": _text(message)})
        elif isinstance(message, AIMessage) and not message.tool_calls:
            fusion = (message.response_metadata or {}).get("fusion")
            turns.append({"role": "assistant", "content": _text(message), "fusion": fusion})
    return turns


class EvalFolder(BaseModel):
    """One eval's output folder as the page lists it."""

    name: str
    modified: str
    has_report: bool
    files: list[str]
    summary: dict[str, Any] | None = None


def list_evals(root: Path) -> list[EvalFolder]:
    """Eval folders, newest first; a folder without report.html is listed but not openable."""
    if not root.is_dir():
        return []
    folders = []
    for path in root.iterdir():
        if not path.is_dir() or path.name.startswith("."):
            continue
        summary = None
        summary_path = path / "summary.json"
        if summary_path.is_file() and summary_path.stat().st_size <= SUMMARY_MAX_BYTES:
            try:
                loaded = json.loads(summary_path.read_text(encoding="utf-8"))
                summary = loaded if isinstance(loaded, dict) else None
            except (OSError, ValueError):
                summary = None
        folders.append(
            EvalFolder(
                name=path.name,
                modified=datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
                has_report=(path / "report.html").is_file(),
                files=sorted(p.name for p in path.iterdir() if p.is_file()),
                summary=summary,
            )
        )
    return sorted(folders, key=lambda f: f.modified, reverse=True)


def eval_file(root: Path, name: str, file: str) -> Path:
    """The file `name/file` inside `root`, or a 404: no `..`, no absolute path, no symlink that
    leads outside, nothing but regular files."""
    not_found = OpenAIError(404, "no such eval report file", code="not_found")
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise not_found
    folder = (root / name).resolve()
    target = (folder / file).resolve()
    if folder.parent != root or not target.is_relative_to(folder) or not target.is_file():
        raise not_found
    return target


async def list_threads(graph: FusionGraph, api_key: str | None) -> list[dict[str, Any]]:
    """The caller's threads in the checkpointer, newest first: id, first question, turns, time."""
    saver = graph.checkpointer
    if saver is None or saver is True or saver is False:
        return []
    owner = owner_of(api_key)
    latest: dict[str, str] = {}
    async for item in saver.alist(None, filter={OWNER_KEY: owner}, limit=THREAD_SCAN):
        thread_id = item.config["configurable"]["thread_id"]
        if thread_id not in latest:
            latest[thread_id] = item.checkpoint.get("ts", "")
    threads = []
    for thread_id, ts in sorted(latest.items(), key=lambda kv: kv[1], reverse=True)[:THREAD_LIMIT]:
        state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        turns = conversation_of(state.values.get("messages") or [])
        first = next((t["content"] for t in turns if t["role"] == "user"), "")
        threads.append(
            {
                "thread_id": thread_id,
                "title": first[:120],
                "turns": sum(1 for t in turns if t["role"] == "user"),
                "updated": ts,
                "unfinished": bool(state.next),
            }
        )
    return threads


async def thread_detail(graph: FusionGraph, thread_id: str, api_key: str | None) -> dict[str, Any]:
    """One thread's conversation with each answer's run record; another key's thread is a 404."""
    missing = OpenAIError(404, f"no thread {thread_id!r} for this API key", code="thread_not_found")
    if graph.checkpointer in (None, True, False):
        raise missing
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    if not state.values or (state.metadata or {}).get(OWNER_KEY, "") != owner_of(api_key):
        raise missing
    return {
        "thread_id": thread_id,
        "messages": conversation_of(state.values.get("messages") or []),
        "unfinished": bool(state.next),
    }


def install_playground(
    app: FastAPI,
    *,
    graph: Callable[[], FusionGraph],
    authorize: Authorize,
    context_schema: type[BaseModel],
    auth_required: bool,
    evals_dir: str | Path | None = None,
) -> None:
    """Add the page (`/`), its assets (/playground/static) and its API (/playground/api)."""
    root = evals_root(evals_dir)
    # Compressed on the wire (about a third of the bytes); only the static files, so the API's
    # JSON and SSE are untouched.
    assets = GZipMiddleware(StaticFiles(directory=STATIC_DIR), minimum_size=1024)
    app.mount("/playground/static", assets, name="playground-static")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/playground/api/info", include_in_schema=False)
    async def info(request: Request) -> dict[str, Any]:
        """What the page builds its pickers from: the settings schema, presets, features."""
        authorize(request)
        current = graph()
        return {
            "settings_schema": context_schema.model_json_schema(),
            "presets": presets_view(),
            "durable": current.checkpointer not in (None, True, False),
            "evals_dir": str(root),
            "auth_required": auth_required,
        }

    @app.get("/playground/api/threads", include_in_schema=False)
    async def threads(request: Request) -> dict[str, Any]:
        api_key = authorize(request)
        return {"data": await list_threads(graph(), api_key)}

    @app.get("/playground/api/threads/{thread_id}", include_in_schema=False)
    async def thread(thread_id: str, request: Request) -> dict[str, Any]:
        api_key = authorize(request)
        return await thread_detail(graph(), thread_id, api_key)

    @app.get("/playground/api/evals", include_in_schema=False)
    async def evals(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"data": [f.model_dump() for f in list_evals(root)]}

    @app.get("/playground/api/evals/{name}/{file:path}", include_in_schema=False)
    async def eval_report_file(name: str, file: str, request: Request) -> Response:
        authorize(request)
        path = eval_file(root, name, file)
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if path.suffix in {".html", ".htm", ".svg"}:
            headers["Content-Security-Policy"] = REPORT_CSP
        media = "text/plain; charset=utf-8" if path.suffix in {".jsonl", ".md"} else None
        return FileResponse(path, headers=headers, media_type=media)


def open_when_ready(url: str, *, timeout_s: float = 30.0) -> threading.Thread:
    """Open `url` in the browser once the server answers /health (from a daemon thread, so the
    server can start in the foreground)."""

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url.rstrip('/')}/health", timeout=1.0).status_code == 200:
                    webbrowser.open(url)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=wait_then_open, name="open-playground", daemon=True)
    thread.start()
    return thread
