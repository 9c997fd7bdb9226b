"""Name why an upstream call failed, so each failed panelist carries a typed reason."""

from __future__ import annotations

import asyncio
import json

import httpx

from fusiongraph.graph.models import ResponseTooLarge
from fusiongraph.nodes.panel_clock import PanelDeadline


class NamedFailure(Exception):
    """A failure whose reason is already known (e.g. a judge whose every attempt failed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def failure_reason(exc: BaseException) -> str:
    """timeout | deadline | straggler | rate_limited | auth | bad_request | recursion |
    upstream_error | connection_error | invalid_response | empty | response_too_large | error.
    Works on openai/anthropic SDK errors without importing them (status_code duck-typing).
    """
    if isinstance(exc, PanelDeadline | NamedFailure):
        return exc.reason
    if isinstance(exc, ResponseTooLarge):
        return "response_too_large"
    if isinstance(exc, json.JSONDecodeError):
        return "invalid_response"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return "timeout"
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return "rate_limited"
        if status in (401, 403):
            return "auth"
        if status >= 500:
            return "upstream_error"
        if status < 400:  # a 2xx whose body the SDK could not read as a completion
            return "invalid_response"
        if getattr(exc, "code", None) == "recursion":  # a fusion server refused our inner call
            return "recursion"
        return "bad_request"
    if isinstance(exc, httpx.TransportError) or "Connection" in name:
        return "connection_error"
    return "error"


def describe(exc: BaseException, limit: int = 500) -> str:
    text = str(exc) or type(exc).__name__
    return text[:limit]


def _retried(status: int) -> bool:
    """The statuses the SDK retries (graph/models.py): a call cut after one was retrying it."""
    return status in (408, 409, 429) or status >= 500


def cut_error(reason: str, message: str, last_status: int | None) -> dict[str, str]:
    """The error of a call cut off by a clock (`reason`: timeout, deadline, straggler). When the
    last response it got was an HTTP error the SDK was retrying, the upstream was failing, not
    slow: report that (`rate_limited` for 429, else `upstream_error`)."""
    if last_status is None or not _retried(last_status):
        return {"reason": reason, "message": message}
    return {
        "reason": "rate_limited" if last_status == 429 else "upstream_error",
        "message": f"{message}, while retrying after HTTP {last_status}",
    }
