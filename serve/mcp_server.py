"""fusiongraph as an MCP server: one `deliberate` tool, over stdio or streamable HTTP.

Any MCP client (desktop assistants, IDEs, agents) can ask the panel for a second opinion. A call
runs the graph once: progress events become MCP progress notifications (when the client sent a
progress token), the final answer and its analysis come back as text plus structured content,
and a client that cancels the call (notifications/cancelled) or goes away cancels the run, which
closes its model calls. Bad arguments and failed runs are tool errors (`isError`), never a crash.

Built on the SDK's low-level server: the tool's input schema is derived from the graph's context
schema at start-up (serve/mcp_deliberate.py), which the decorator-based FastMCP cannot express.
`fusiongraph mcp` (serve/cli.py) starts it; so does `python -m fusiongraph.serve.mcp_server`.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel
from starlette.applications import Starlette
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
from fusiongraph.tools.aio import Pump

logger = logging.getLogger(__name__)

SERVER_NAME = "fusiongraph"
MCP_PATH = "/mcp"
API_KEYS_ENV = "FUSIONGRAPH_API_KEYS"  # the same keys as the OpenAI-compatible server's
Transport = Literal["stdio", "http"]
ToolResult = types.CallToolResult


def _version() -> str | None:
    try:
        return version("fusiongraph")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


def _tool_error(text: str) -> ToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def create_mcp_server(
    graph: Any = None, *, context: dict[str, Any] | None = None, cache: bool = False
) -> Server[Any, Any]:
    """The MCP server around `graph` (default: the package's graph, with the panel cache when
    `cache`). `context` holds the operator's settings for every call (preset, models, operator-
    only settings such as mcp_servers); a call's arguments override the rest of it."""
    if graph is None:
        from fusiongraph.graph.builder import build_graph

        graph = build_graph(cache=cache or None)
    context_schema: type[BaseModel] = getattr(graph, "context_schema", None) or FusionContext
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
    """Run the graph once, reporting progress; a cancellation of this call cancels the run."""
    request = server.request_context
    token = request.meta.progressToken if request.meta else None
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
            async for event in run:
                if event.kind == "progress" and event.progress:
                    await notify(counter.step(event.progress))
                elif event.kind == "final":
                    final = event.message
                    await notify(counter.finish())
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
    (`Authorization: Bearer <key>`). A class, not a function: Starlette hands an instance the
    raw ASGI call for every method (a function would be a GET-only request handler)."""

    def __init__(self, manager: StreamableHTTPSessionManager, keys: list[str]) -> None:
        self.manager = manager
        self.keys = keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.keys and not self._authorized(scope):
            response = JSONResponse(
                {"error": "missing or incorrect API key: send Authorization: Bearer <key>"},
                status_code=401,
            )
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        return any(hmac.compare_digest(token.encode(), k.encode()) for k in self.keys)


def streamable_http_app(server: Server[Any, Any], *, host: str = "127.0.0.1") -> Starlette:
    """The server as an ASGI app: streamable HTTP at /mcp (SSE streams carry the progress)."""
    manager = StreamableHTTPSessionManager(app=server, security_settings=_security(host))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    endpoint = _Endpoint(manager, _api_keys())
    return Starlette(routes=[Route(MCP_PATH, endpoint=endpoint)], lifespan=lifespan)


def serve(
    server: Server[Any, Any],
    transport: Transport = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "warning",
) -> None:
    """Serve until stopped: stdio (the client spawned this process) or streamable HTTP."""
    if transport == "stdio":
        anyio.run(run_stdio, server)
        return
    import uvicorn

    uvicorn.run(streamable_http_app(server, host=host), host=host, port=port, log_level=log_level)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - `python -m` entry
    """`python -m fusiongraph.serve.mcp_server [ARGS]`: the same as `fusiongraph mcp [ARGS]`."""
    from fusiongraph.serve.cli import app

    app(["mcp", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    main()
