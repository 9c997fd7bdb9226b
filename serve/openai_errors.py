"""OpenAI-style error bodies and the HTTP status of every way a request or a fusion run can fail.

Clients written for OpenAI branch on the status code and on `error.code`, and the official SDKs
raise a typed exception per status, so every failure leaves the server as
`{"error": {"message", "type", "param", "code"}}` with a meaningful status — never a stack trace.

Status mapping of `FusionError.reason`:

- invalid_config, invalid_input, budget_exceeded, recursion -> 400 (the request cannot run as
  sent; for invalid_config `param` names the offending setting)
- rate_limited -> 429: every panelist was rate limited upstream, nothing was answered; a plain
  429 tells clients to back off and retry, which is exactly right (the SDKs do so by default)
- all_panelists_failed, judge_and_synthesis_failed, synthesis_failed -> 502 (bad upstream), or
  504 when the cause was the run's deadline or timeouts
- deadline -> 504
These 502/504 answers carry `x-should-retry: false`: each upstream call was already retried
inside the run, and re-running a whole deliberation automatically multiplies its cost.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fusiongraph.graph.errors import FusionConfigError, FusionError, field_path

logger = logging.getLogger("fusiongraph.serve")

FUSION_STATUS: dict[str, int] = {
    "invalid_config": 400,
    "invalid_input": 400,
    "budget_exceeded": 400,
    "recursion": 400,
    "rate_limited": 429,
    "all_panelists_failed": 502,
    "judge_and_synthesis_failed": 502,
    "synthesis_failed": 502,
    "deadline": 504,
}
_TIMEOUT_REASONS = {"deadline", "timeout"}


class OpenAIError(Exception):
    """An error that leaves the server as an OpenAI-style body with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or default_type(status)
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
            **self.extra,
        }
        return {"error": jsonable_encoder(error)}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def default_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def bad_request(
    message: str, param: str | None = None, code: str = "invalid_request"
) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def _timed_out(exc: FusionError) -> bool:
    """Did an upstream failure come from the deadline (504) rather than a broken upstream (502)?"""
    cause = exc.__cause__
    if isinstance(cause, TimeoutError):
        return True
    failed = exc.details.get("failed_models") or []
    return (
        bool(failed)
        and exc.reason == "all_panelists_failed"
        and all(f.get("reason") in _TIMEOUT_REASONS for f in failed)
    )


def from_fusion_error(exc: FusionError) -> OpenAIError:
    """Map a typed fusion failure onto status, code and param; keep its details for the caller."""
    status = FUSION_STATUS.get(exc.reason, 500)
    if status == 502 and _timed_out(exc):
        status = 504
    param = None
    if isinstance(exc, FusionConfigError):
        param = exc.field
    elif exc.reason == "invalid_input":
        param = "messages"
    elif exc.reason == "budget_exceeded":
        param = "fusion.max_cost_usd"
    headers = {"x-should-retry": "false"} if status in (502, 504) else {}
    return OpenAIError(
        status,
        exc.message,
        param=param,
        code=exc.reason,
        extra={"fusion": exc.to_dict()},
        headers=headers,
    )


def internal_error() -> OpenAIError:
    return OpenAIError(
        500, "internal server error; the server log has the details", code="internal_error"
    )


def _param_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return field_path(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Every error path answers in OpenAI's shape (FastAPI's 422s become 400s)."""

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(FusionError)
    async def _fusion_error(request: Request, exc: FusionError) -> JSONResponse:
        return from_fusion_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = _param_of(first.get("loc", ()))
        message = first.get("msg", "invalid request")
        return bad_request(f"{param}: {message}" if param else message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return OpenAIError(
            exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {})
        ).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error().response()
