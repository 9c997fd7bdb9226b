"""Name why an upstream call failed, so each failed panelist carries a typed reason."""

from __future__ import annotations

import json
import sys

import httpx
from langchain_core.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from fusiongraph.graph.models import ResponseTooLarge
from fusiongraph.graph.state import PanelError
from fusiongraph.nodes.scheduling import PanelDeadline


class NamedFailure(Exception):
    """A failure whose reason is already known (e.g. a judge whose every attempt failed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# langchain-core's provider-neutral errors (langchain-openai and langchain-anthropic raise their
# subclasses), in the order they are tried: a timeout is also a connection error to the SDK.
_MODEL_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (ModelTimeoutError, "timeout"),
    (ModelRateLimitError, "rate_limited"),
    (ModelAuthenticationError, "auth"),
    (ModelPermissionDeniedError, "auth"),
    (ModelAPIError, "upstream_error"),
    (ModelConnectionError, "connection_error"),
)


def _sdk_error(exc: BaseException, name: str) -> bool:
    """Whether `exc` is the openai SDK's error `name`, for calls that reach us unwrapped.

    Read from `sys.modules`: importing the SDK costs about 0.3 s, and a process that never
    imported it cannot hold one of its errors, so this module does not pay for it at import.
    """
    openai = sys.modules.get("openai")
    return openai is not None and isinstance(exc, getattr(openai, name))


def failure_reason(exc: BaseException) -> str:
    """timeout | deadline | straggler | rate_limited | auth | bad_request | recursion |
    upstream_error | connection_error | invalid_response | empty | response_too_large | error.

    By type: our own cut-offs, langchain-core's model errors (and the openai SDK's, for calls
    that reach us unwrapped), timeouts and transport errors; by HTTP status for any other SDK
    error that carries one.
    """
    if isinstance(exc, PanelDeadline | NamedFailure):
        return exc.reason
    if isinstance(exc, ResponseTooLarge):
        return "response_too_large"
    if isinstance(exc, json.JSONDecodeError):
        return "invalid_response"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    status = getattr(exc, "status_code", None)
    if getattr(exc, "code", None) == "recursion" and status == 400:
        return "recursion"  # a fusion server refused our inner call
    # In langchain-core's order, the SDK's timeout after its own and its connection error last
    # (a timeout is also a connection error to the SDK).
    if isinstance(exc, ModelTimeoutError) or _sdk_error(exc, "APITimeoutError"):
        return "timeout"
    for kind, reason in _MODEL_ERRORS:
        if isinstance(exc, kind):
            return reason
    if _sdk_error(exc, "APIConnectionError"):
        return "connection_error"
    if isinstance(status, int):
        if status == 429:
            return "rate_limited"
        if status in (401, 403):
            return "auth"
        if status >= 500:
            return "upstream_error"
        if status < 400:  # a 2xx whose body the SDK could not read as a completion
            return "invalid_response"
        return "bad_request"
    if isinstance(exc, httpx.TransportError):
        return "connection_error"
    return "error"


def describe(exc: BaseException, limit: int = 500) -> str:
    text = str(exc) or type(exc).__name__
    return text[:limit]


def _retried(status: int) -> bool:
    """The statuses the SDK retries (graph/models.py): a call cut after one was retrying it."""
    return status in (408, 409, 429) or status >= 500


def cut_error(reason: str, message: str, last_status: int | None) -> PanelError:
    """The error of a call cut off by a clock (`reason`: timeout, deadline, straggler). When the
    last response it got was an HTTP error the SDK was retrying, the upstream was failing, not
    slow: report that (`rate_limited` for 429, else `upstream_error`)."""
    if last_status is None or not _retried(last_status):
        return {"reason": reason, "message": message}
    return {
        "reason": "rate_limited" if last_status == 429 else "upstream_error",
        "message": f"{message}, while retrying after HTTP {last_status}",
    }
