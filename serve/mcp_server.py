"""fusiongraph as an MCP server: one `deliberate` tool, over stdio or streamable HTTP.

Any MCP client (desktop assistants, IDEs, agents) can ask the panel for a second opinion. A call
runs the graph once: progress events become MCP progress notifications (when the client sent a
progress token), the final answer and its analysis come back as text plus structured content,
and a client that cancels the call (notifications/cancelled) or goes away cancels the run, which
closes its model calls. Bad arguments and failed runs are tool errors (`isError`), never a crash.

Over HTTP, a call is tied to the request that carried it, as on the HTTP APIs: when that
connection closes before the answer, the run is cancelled (`_cancel_on_disconnect`). A body is
read and checked as the HTTP APIs read theirs before the SDK sees it (nesting, numbers past
Python's digit limit, NaN, lone surrogates: a 4xx JSON-RPC error naming the problem, never a 500),
headers are bounded (431), and a session with no request in flight for `session_idle_s` seconds
expires (the SDK's own expiry; its id then answers 404 and the client initializes again).

Built on the SDK's low-level server: the tool's input schema is derived from the graph's context
schema at start-up (serve/mcp_deliberate.py), which the decorator-based FastMCP cannot express.
`fusiongraph mcp` (serve/cli.py) starts it; so does `python -m fusiongraph.serve.mcp_server`.
"""

from __future__ import annotations

import asyncio
import codecs
import hmac
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fusiongraph.graph.config import FusionContext, resolve_config
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.runner import stream_run
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.serve.mcp_deliberate import (
    DESCRIPTION,
    TOOL_NAME,
    ArgumentError,
    ProgressCounter,
    input_schema,
    output_schema,
    parse_arguments,
    structured_result,
    text_result,
)
from fusiongraph.serve.openai_errors import OpenAIError
from fusiongraph.serve.openai_request import RequestLimits, load_json, read_body
from fusiongraph.serve.request_guards import HeaderLimit
from fusiongraph.tools.aio import Pump

if TYPE_CHECKING:
    from langgraph.cache.base import BaseCache

logger = logging.getLogger(__name__)

SERVER_NAME = "fusiongraph"
MCP_PATH = "/mcp"
API_KEYS_ENV = "FUSIONGRAPH_API_KEYS"  # the same keys as the OpenAI-compatible server's
Transport = Literal["stdio", "http"]
ToolResult = types.CallToolResult
# A session with no request in flight for this long expires (the SDK's default; `--session-idle-s`).
SESSION_IDLE_S = 30 * 60.0
Receive = Callable[[], Awaitable[dict[str, Any]]]  # an ASGI receive


class _ClientLeft(Exception):
    """The HTTP request that carried a call was closed before its answer."""


def _version() -> str | None:
    try:
        return version("fusiongraph")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


def _tool_error(text: str) -> ToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def create_mcp_server(
    graph: Any = None,
    *,
    context: dict[str, Any] | None = None,
    cache: bool | BaseCache | None = False,
) -> Server[Any, Any]:
    """The MCP server around `graph` (default: the package's graph, with the panel cache when
    `cache`). `context` holds the operator's settings for every call (preset, models, operator-
    only settings such as mcp_servers); a call's arguments override the rest of it."""
    if graph is None:
        from fusiongraph.graph.builder import build_graph

        graph = build_graph(cache=cache or None)
    context_schema: type[FusionContext] = getattr(graph, "context_schema", None) or FusionContext
    base = dict(context or {})
    context_schema(**base)  # the operator's settings fail at start-up, not on the first call
    server: Server[Any, Any] = Server(SERVER_NAME, version=_version(), instructions=DESCRIPTION)
    tool = types.Tool(
        name=TOOL_NAME,
        title="Deliberate with a panel of models",
        description=DESCRIPTION,
        inputSchema=input_schema(context_schema),
        outputSchema=output_schema(),
        annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=True),
    )

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [tool]

    @server.call_tool(validate_input=False)  # parse_arguments names the argument instead
    async def call_tool(name: str, arguments: dict[str, Any] | None) -> ToolResult:
        if name != TOOL_NAME:
            return _tool_error(f"unknown tool {name!r}; this server has {TOOL_NAME!r}")
        try:
            messages, overrides = parse_arguments(arguments, context_schema)
            run_context = {**base, **overrides}
            resolve_config(context_schema(**run_context))  # settings and keys, before any call
            check_conversation(messages)
        except ArgumentError as exc:
            return _tool_error(str(exc))
        except FusionError as exc:  # FusionConfigError included: it names the setting
            return _tool_error(f"invalid request ({exc.reason}): {exc.message}")
        return await _deliberate(server, graph, messages, run_context)

    return server


async def _deliberate(
    server: Server[Any, Any], graph: Any, messages: list[Any], context: dict[str, Any]
) -> ToolResult:
    """Run the graph once, reporting progress; a cancellation of this call, or (over HTTP) the
    close of the request that carried it, cancels the run."""
    request = server.request_context
    token = request.meta.progressToken if request.meta else None
    http_request = request.request if isinstance(request.request, Request) else None
    counter = ProgressCounter()
    final = None

    async def notify(step: tuple[int, int | None, str] | None) -> None:
        if step is not None and token is not None:
            progress, total, message = step
            await request.session.send_progress_notification(
                token, progress, total, message, related_request_id=str(request.request_id)
            )

    try:
        # The run is its own task: leaving the block (a cancelled call, a closed transport)
        # cancels it and waits, bounded, until its model calls are closed.
        async with Pump(stream_run(graph, messages, context), name="mcp-deliberate") as run:
            watcher = (
                asyncio.create_task(_cancel_on_disconnect(http_request, run))
                if http_request is not None
                else None
            )
            try:
                async for event in run:
                    if event.kind == "progress" and event.progress:
                        await notify(counter.step(event.progress))
                    elif event.kind == "final":
                        final = event.message
                        await notify(counter.finish())
            finally:
                if watcher is not None:
                    watcher.cancel()
    except _ClientLeft:
        logger.info("MCP client disconnected mid-call; run cancelled")
        return _tool_error("cancelled: the client disconnected")
    except FusionConfigError as exc:
        return _tool_error(f"invalid request ({exc.reason}): {exc.message}")
    except FusionError as exc:
        return _tool_error(f"deliberation failed ({exc.reason}): {exc.message}")
    except Exception:
        logger.exception("deliberation failed")
        return _tool_error("deliberation failed: internal error (see the server's log)")
    if final is None:
        return _tool_error("deliberation failed: the run ended without an answer")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text_result(final))],
        structuredContent=structured_result(final),
        isError=False,
    )


async def _cancel_on_disconnect(request: Request, run: Pump[Any]) -> None:
    """End `run` with _ClientLeft when the HTTP request that carried the call is closed. The SDK
    has read the body, so the request's next ASGI message is its disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    if not run.task.done():
        run.abort(_ClientLeft())


# --------------------------------------------------------------------------- transports


async def run_stdio(server: Server[Any, Any]) -> None:
    """Serve one client on this process's stdin/stdout (what desktop assistants spawn)."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options(NotificationOptions()))


def _security(host: str) -> TransportSecuritySettings | None:
    """On a loopback bind, refuse requests whose Host or Origin is not loopback: a web page the
    user visits cannot then reach the server through DNS rebinding (as the SDK's FastMCP does)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def _api_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]


class _Endpoint:
    """The /mcp endpoint: the session manager's, behind the operator's API keys when set
    (`Authorization: Bearer <key>`), with each POST body checked first (`_checked_body`). A
    class, not a function: Starlette hands an instance the raw ASGI call for every method (a
    function would be a GET-only request handler)."""

    def __init__(
        self, manager: StreamableHTTPSessionManager, keys: list[str], limits: RequestLimits
    ) -> None:
        self.manager = manager
        self.keys = keys
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.keys and not self._authorized(scope):
            response = JSONResponse(
                {"error": "missing or incorrect API key: send Authorization: Bearer <key>"},
                status_code=401,
            )
            await response(scope, receive, send)
            return
        if scope.get("method") == "POST":
            receive = await self._checked_body(scope, receive, send)
            if receive is None:
                return
        await self.manager.handle_request(scope, receive, send)

    async def _checked_body(
        self, scope: dict[str, Any], receive: Receive, send: Any
    ) -> Receive | None:
        """The body, read within the SDK's size limit and the body timeout and checked by the HTTP
        APIs' load_json, then handed on (without a leading byte order mark, which load_json
        ignores too); None once a JSON-RPC error has been answered or the client has left."""
        request = Request(scope, receive)
        try:
            body = await read_body(
                request.stream(),
                request.headers.get("content-length"),
                DEFAULT_MAX_REQUEST_BODY_SIZE,
                self.limits.body_timeout_s,
            )
            load_json(body)
        except ClientDisconnect:
            logger.info("MCP client disconnected before its request body arrived")
            return None
        except OpenAIError as exc:
            status = 413 if exc.extra.get("limit") == "max_body_bytes" else exc.status
            code = types.PARSE_ERROR if exc.code == "invalid_json" else types.INVALID_REQUEST
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": exc.message}}
            await JSONResponse(error, status_code=status)(scope, receive, send)
            return None
        body = body.removeprefix(codecs.BOM_UTF8)
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()

        return replay

    def _authorized(self, scope: dict[str, Any]) -> bool:
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        return any(hmac.compare_digest(token.encode(), k.encode()) for k in self.keys)


def streamable_http_app(
    server: Server[Any, Any],
    *,
    host: str = "127.0.0.1",
    session_idle_s: float = SESSION_IDLE_S,
    limits: RequestLimits | None = None,
) -> Starlette:
    """The server as an ASGI app: streamable HTTP at /mcp (SSE streams carry the progress).
    Sessions with no request in flight for `session_idle_s` seconds expire; `limits` (default:
    from the environment, as for `fusiongraph serve`) bound the header and the body's arrival."""
    if not session_idle_s > 0:
        raise ValueError("session_idle_s must be a positive number of seconds")
    limits = limits or RequestLimits.from_env()
    manager = StreamableHTTPSessionManager(
        app=server, security_settings=_security(host), session_idle_timeout=session_idle_s
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    endpoint = _Endpoint(manager, _api_keys(), limits)
    return Starlette(
        routes=[Route(MCP_PATH, endpoint=endpoint)],
        middleware=[Middleware(HeaderLimit, max_bytes=limits.max_header_bytes)],
        lifespan=lifespan,
    )


def serve(
    server: Server[Any, Any],
    transport: Transport = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "warning",
    session_idle_s: float = SESSION_IDLE_S,
) -> None:
    """Serve until stopped: stdio (the client spawned this process) or streamable HTTP."""
    if transport == "stdio":
        anyio.run(run_stdio, server)
        return
    import uvicorn

    from fusiongraph.serve.log_format import log_config

    app = streamable_http_app(server, host=host, session_idle_s=session_idle_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config())


if __name__ == "__main__":  # pragma: no cover
    # `python -m fusiongraph.serve.mcp_server [ARGS]`: the same as `fusiongraph mcp [ARGS]`. Run
    # so, this file is the module `__main__`: the CLI it imports imports this module anew.
    from fusiongraph.serve.cli import app

    app(["mcp", *sys.argv[1:]])
