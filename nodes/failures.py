"""Name why an upstream call failed, so each failed panelist carries a typed reason."""

from __future__ import annotations

import asyncio

import httpx

from fusiongraph.nodes.panel_clock import PanelDeadline


def failure_reason(exc: BaseException) -> str:
    """timeout | deadline | rate_limited | auth | bad_request | upstream_error | connection_error
    | error. Works on openai/anthropic SDK errors without importing them (status_code duck-typing).
    """
    if isinstance(exc, PanelDeadline):
        return "deadline"
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
        return "bad_request"
    if isinstance(exc, httpx.TransportError) or "Connection" in name:
        return "connection_error"
    return "error"


def describe(exc: BaseException, limit: int = 500) -> str:
    text = str(exc) or type(exc).__name__
    return text[:limit]
