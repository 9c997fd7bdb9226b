"""Name why an upstream call failed, so each failed panelist carries a typed reason."""

from __future__ import annotations

import asyncio
import json

import httpx

from fusiongraph.graph.models import ResponseTooLarge
from fusiongraph.nodes.panel_clock import PanelDeadline


def failure_reason(exc: BaseException) -> str:
    """timeout | deadline | rate_limited | auth | bad_request | recursion | upstream_error |
    connection_error | invalid_response | response_too_large | error. Works on openai/anthropic
    SDK errors without importing them (status_code duck-typing).
    """
    if isinstance(exc, PanelDeadline):
        return "deadline"
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
