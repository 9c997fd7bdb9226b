"""The OpenAI Responses API (`POST /v1/responses`) as this server reads and writes it.

Requests are validated with these models and the OpenAPI document is generated from them.
Input is a string or a list of items: messages (input_text / output_text / input_image parts),
function_call and function_call_output items (the conversation's tool turns) and reasoning items
(dropped: no panelist continues another model's reasoning). Only function tools exist here; the
built-in tools (web search, file search, ...) are the panel's business, not the caller's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from fusiongraph.graph.specs import ReasoningEffort


class _Param(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputText(_Param):
    type: Literal["input_text", "output_text"]
    text: str


class InputRefusal(_Param):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Param):
    """An image (`image_url`, a URL or a data URL); it goes where chat-completions images go."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None


class InputMedia(_Param):
    """Files and audio: refused with a 400 naming the part."""

    type: Literal["input_file", "input_audio"]


InputPart = Annotated[
    InputText | InputRefusal | InputImage | InputMedia, Field(discriminator="type")
]


class MessageItem(_Param):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | Annotated[list[InputPart], Field(min_length=1)]


class FunctionCallItem(_Param):
    """A function call the model made in an earlier turn."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = Field(default="{}", description="a JSON object, as a string")


class FunctionCallOutputItem(_Param):
    """The caller's result of that call."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputText]


class ReasoningItem(_Param):
    type: Literal["reasoning"]


def _item_kind(value: Any) -> str:
    """An input item's kind: its `type`, a message when it has none (EasyInputMessage)."""
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]
# The tags pydantic writes into an error's location for the discriminated unions above.
RESPONSES_TAGS = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "input_text"}
    | {"output_text", "refusal", "input_image", "input_file", "input_audio"}
)


class FunctionTool(_Param):
    """A caller's tool, bound on the synthesis step."""

    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionToolChoice(_Param):
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormat(_Param):
    type: Literal["text"] = "text"


class TextConfig(_Param):
    format: TextFormat | None = None


class ReasoningConfig(_Param):
    """`effort` becomes the run's reasoning_effort (panelists and judge); `summary` is ignored."""

    effort: ReasoningEffort | None = None


class ResponsesRequest(_Param):
    """The parameters we act on; other ones (top_p, user, truncation, ...) are accepted and
    ignored. `previous_response_id` needs a server with a checkpointer (the thread of that
    response continues); `store` is accepted, a checkpointed server stores every run."""

    model: str = Field(min_length=1, description="`fusion`, `fusion-<preset>` or an alias")
    input: str | list[InputItem] = Field(
        description="The conversation must hold a user message and end with a user message or "
        "a function_call_output."
    )
    instructions: str | None = Field(default=None, description="a system message, first")
    tools: list[FunctionTool] | None = Field(default=None, description="bound on the synthesis")
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1, description="of the synthesis")
    temperature: float | None = Field(default=None, description="of the synthesis step")
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = Field(default=None, description='only {"format": {"type": "text"}}')
    reasoning: ReasoningConfig | None = Field(
        default=None, description="effort: of the panelists and the judge (fusion.reasoning_effort)"
    )
    fusion: dict[str, Any] | None = Field(
        default=None, description="Per-request fusion settings (the README's configuration table)"
    )


class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    """A response (JSON); with `stream`, its events (SSE): response.created,
    response.in_progress, response.output_item.added, response.content_part.added,
    response.output_text.delta / .done, response.function_call_arguments.delta / .done,
    response.content_part.done, response.output_item.done, then response.completed, or
    response.failed when the run fails after the stream opened."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]]
    usage: ResponseUsage | None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    fusion: dict[str, Any] | None = Field(default=None, description="the run's full record")


class ResponsesStreamEvent(BaseModel):
    event: str = Field(description="the event's type")
    data: str = Field(description="the event as JSON, with its type and sequence_number")
