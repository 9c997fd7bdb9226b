"""Progress events on LangGraph's `custom` stream mode (panelist started/finished, judge, ...)."""

from __future__ import annotations

import time
from typing import Any

from langgraph.config import get_stream_writer


def emit(event: str, **data: Any) -> None:
    """Send one progress event; silently nothing when the caller is not streaming `custom`."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a graph run
        return
    writer({"event": event, "t": time.time(), **data})
