"""What every HTTP request meets before a route: a bound on its header, and a quiet end for a
client that leaves while its body is still arriving.

uvicorn on httptools (the `standard` extra) takes request headers of any size; h11's own bound
(`h11_max_incomplete_event_size`) holds only on h11 and answers 400. `HeaderLimit` holds on
either, with the status RFC 6585 gives for it: 431. A client that announces a body and closes the
connection before sending it all is not a server error: Starlette raises `ClientDisconnect`, and
`client_disconnected` logs one line (no traceback) and ends the request.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fusiongraph.serve.runs import CLIENT_CLOSED

logger = logging.getLogger("fusiongraph.serve")


def header_bytes(scope: Scope) -> int:
    """The request line and header fields as they came on the wire (names, values, separators)."""
    line = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(
        scope.get("query_string", b"")
    )
    fields = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
    return line + fields


class HeaderLimit:
    """Answer 431 to a request whose header (request line included) exceeds `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (size := header_bytes(scope)) > self.max_bytes:
            logger.info("request header of %d bytes refused (limit %d)", size, self.max_bytes)
            response = JSONResponse(
                {
                    "error": {
                        "message": f"the request header ({size} bytes) is over the server's "
                        f"limit max_header_bytes = {self.max_bytes}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "request_header_too_large",
                        "limit": "max_header_bytes",
                        "limit_value": self.max_bytes,
                    }
                },
                status_code=431,
                headers={"connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def client_disconnected(request: Request, exc: Exception) -> Response:
    """An exception handler for `ClientDisconnect`: one log line; nobody reads the answer."""
    logger.info(
        "client disconnected before its request body arrived: %s %s",
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_CLOSED)


def install_request_guards(app: Any, max_header_bytes: int) -> None:
    """Both guards on a Starlette (or FastAPI) app."""
    app.add_middleware(HeaderLimit, max_bytes=max_header_bytes)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
