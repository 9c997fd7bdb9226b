"""Typed errors: every way a fusion run can fail has a reason a caller can branch on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

FailureReason = Literal[
    "invalid_config",
    "invalid_input",
    "all_panelists_failed",
    "judge_and_synthesis_failed",
    "synthesis_failed",
    "rate_limited",
    "budget_exceeded",
    "deadline",
    "recursion",
]


def field_path(parts: Sequence[str | int]) -> str:
    """A location as users write it: `panel[0].model`, `messages[2].role`."""
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


class FusionError(Exception):
    """A fusion run that could not produce an answer, with a machine-readable reason.

    `details` keeps whatever the run had already paid for (panel answers, failures), so nothing
    is lost when the run as a whole fails.
    """

    def __init__(self, reason: FailureReason, message: str, **details: Any) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, **self.details}


class FusionConfigError(FusionError, ValueError):
    """A configuration that cannot run; `field` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("invalid_config", f"{field}: {message}", field=field)
        self.field = field


class ThreadNotFound(LookupError):
    """The thread belongs to another API key (or, to that key, does not exist)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r} for this API key")
        self.thread_id = thread_id


class ThreadConflict(Exception):
    """The thread holds an unfinished run of a different request."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} holds an unfinished run of a different request: send that "
            "request again to resume it, or use a new thread id"
        )
        self.thread_id = thread_id
