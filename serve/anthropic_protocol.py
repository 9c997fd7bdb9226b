"""The Anthropic Messages API (`POST /v1/messages`) as this server reads and writes it.

As with the OpenAI protocol module, requests are validated with these models and the OpenAPI
document is generated from them. Parameters Anthropic defines that a fusion run cannot act on
(top_k, top_p, stop_sequences, thinking, ...) are accepted and ignored, like OpenAI's; content a
run cannot carry (documents, server tools) is refused with a 400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Param(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Param):
    type: Literal["text"]
    text: str


class ImageBlock(_Param):
    """An image (`source`: base64 data or a URL); it goes where chat-completions images go."""

    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlock(_Param):
    """Documents, search results and other block kinds a run cannot read: refused with a 400."""

    type: Literal["document", "search_result", "container_upload"]


class ToolUseBlock(_Param):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Param):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False


class ThinkingBlock(_Param):
    """A previous turn's reasoning: dropped, no panelist continues another model's thinking."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]
# The tags pydantic writes into an error's location for the discriminated unions above.
ANTHROPIC_TAGS = frozenset(
    {"user", "assistant", "text", "image", "tool_use", "tool_result", "thinking"}
    | {"redacted_thinking", "document", "search_result", "container_upload"}
)


class MessageParam(_Param):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[ContentBlock], Field(min_length=1)]


class ToolParam(_Param):
    """A caller's (client) tool, bound on the synthesis step."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(_Param):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, description="the tool to call, with type `tool`")
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(_Param):
    """The parameters we act on. `max_tokens` is required, as Anthropic requires it; it bounds
    the synthesis step (the server's max_tokens limit applies)."""

    model: str = Field(min_length=1, description="`fusion`, `fusion-<preset>` or an alias")
    max_tokens: int = Field(ge=1, description="of the synthesis step")
    messages: list[MessageParam] = Field(
        description="The conversation must hold a user message and end with a user message."
    )
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1, description="of the synthesis")
    tools: list[ToolParam] | None = Field(default=None, description="bound on the synthesis step")
    tool_choice: ToolChoice | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = Field(default=None, description="accepted, not used")
    fusion: dict[str, Any] | None = Field(
        default=None, description="Per-request fusion settings (the README's configuration table)"
    )


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class ResponseTextBlock(BaseModel):
    type: Literal["text"]
    text: str


class ResponseToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class MessageResponse(BaseModel):
    """A message (JSON); with `stream`, its events (SSE): message_start, content_block_start,
    content_block_delta (text_delta, input_json_delta), content_block_stop, message_delta (with
    the fusion record), message_stop, and ping; a failure after the stream opened is an `error`
    event."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Annotated[ResponseTextBlock | ResponseToolUseBlock, Field(discriminator="type")]]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage
    fusion: dict[str, Any] | None = Field(default=None, description="the run's full record")


ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
]


class AnthropicErrorDetail(BaseModel):
    type: ErrorType
    message: str
    fusion: dict[str, Any] | None = Field(default=None, description="a failed run's record")


class AnthropicErrorResponse(BaseModel):
    """Every error of /v1/messages, in Anthropic's shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicStreamEvent(BaseModel):
    event: str = Field(description="the event's type (message_start, ..., ping, error)")
    data: str = Field(description="the event as JSON, its `type` repeated")
