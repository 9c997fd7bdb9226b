"""Server logs that text from outside cannot forge: an upstream's error body, a model's output
or a request's field reaches the log through exception messages, so every control character in
a message or a traceback is shown escaped (`\\x1b`, never an escape sequence the operator's
terminal would run; a newline inside a message never starts a fake log line). uvicorn's own
formatter does the rest (level prefix, colours), and fusiongraph's loggers share its handler."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_TRACEBACK_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class EscapingFormatter(DefaultFormatter):
    """uvicorn's default formatter, with the record's message and traceback escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)
        record.message = _CONTROL.sub(_shown, record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _TRACEBACK_CONTROL.sub(_shown, super().formatException(ei))


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with the escaping formatter, fusiongraph's loggers included."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"]["()"] = f"{__name__}.EscapingFormatter"
    config["loggers"]["fusiongraph"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config
