"""Shaping the caller's conversation for the models inside a fusion run."""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from fusiongraph.graph.errors import FusionError
from fusiongraph.nodes.images import check_images


def text_of(message: BaseMessage) -> str:
    """The plain text of a message, whatever its content blocks."""
    return message.text if isinstance(message.text, str) else str(message.content)


def is_utf8(text: str) -> bool:
    """False for text holding a lone surrogate (JSON's `"\\ud800"` escape): UTF-8 cannot encode
    it, so every upstream request carrying it fails."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def last_user_text(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return text_of(message)
    return ""


def check_conversation(messages: Sequence[BaseMessage]) -> None:
    """Refuse input no model can answer, before any call is made."""
    if not messages:
        raise FusionError("invalid_input", "messages is empty; send at least one user message")
    if not any(isinstance(m, HumanMessage) for m in messages):
        raise FusionError("invalid_input", "the conversation has no user message")
    if not isinstance(messages[-1], HumanMessage | ToolMessage):
        raise FusionError(
            "invalid_input", "the last message must come from the user (or be a tool result)"
        )
    # Images are checked and bounded; audio, video and files refused (nodes/images.py).
    check_images(messages)
    for index, message in enumerate(messages):
        _check_text(index, message)


def _check_text(index: int, message: BaseMessage) -> None:
    """Text no encoder can send fails here, naming the message, not upstream."""
    if not is_utf8(text_of(message)):
        raise FusionError(
            "invalid_input",
            f"message {index} holds text that is not valid Unicode (a lone surrogate such as "
            "\\ud800); no model can be sent it",
        )


def flatten_tool_history(messages: Sequence[AnyMessage]) -> list[AnyMessage]:
    """Render the caller's tool calls and results as plain text.

    Panelists and the judge never hold the caller's tools, and some endpoints (llama.cpp among
    them) reject tool roles they cannot template; as text the history stays intact for them.
    """
    out: list[AnyMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = "; ".join(
                f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})"
                for c in message.tool_calls
            )
            text = text_of(message)
            out.append(AIMessage(content=f"{text}\n[called tools: {calls}]".strip()))
        elif isinstance(message, ToolMessage):
            out.append(
                HumanMessage(content=f"[result of tool {message.name or ''}]: {text_of(message)}")
            )
        else:
            out.append(message)
    return out


def with_system(messages: Sequence[AnyMessage], instructions: str) -> list[AnyMessage]:
    """Prepend our instructions, merged with the caller's system messages into one.

    One leading system message is the only shape every chat template accepts.
    """
    caller_system = [text_of(m) for m in messages if isinstance(m, SystemMessage)]
    rest = [m for m in messages if not isinstance(m, SystemMessage)]
    parts = [instructions]
    if caller_system:
        parts.append("Instructions from the caller:\n" + "\n\n".join(caller_system))
    return [SystemMessage(content="\n\n".join(parts)), *rest]
