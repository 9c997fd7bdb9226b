"""The OpenAI chat-completions protocol as this server reads and writes it: one pydantic model per
concept (the way vLLM's protocol module does it). The request is validated with these models and
the OpenAPI document is generated from them, so the two cannot drift apart.

The request's `fusion` object is not written here: `fusion_options_model` derives it from the
graph's context schema (graph/config.py), minus the settings a request may not make, so a new
context setting is accepted per request and documented without touching serve/.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from fusiongraph.graph.config import MODEL_FIELDS, OPENAI_PARAMS, OPERATOR_ONLY
from fusiongraph.graph.specs import ModelSpec, ReasoningEffort
from fusiongraph.nodes.analysis import inline_refs

# A model spec object from a request may not choose the endpoint or the key: the server's keys
# would otherwise go wherever the caller points them.
SPEC_FORBIDDEN = ("base_url", "api_key_env")
# Server-side options of the `fusion` object that are not part of the run's context.
REQUEST_OPTIONS: dict[str, Any] = {
    "progress": (bool, Field(default=False, description="progress as SSE comments"))
}


class _Param(BaseModel):
    """OpenAI's objects carry fields we do not act on (refusal, audio, ...): accepted, ignored."""

    model_config = ConfigDict(extra="allow")


class TextPart(_Param):
    type: Literal["text"]
    text: str


class RefusalPart(_Param):
    type: Literal["refusal"]
    refusal: str


class ImageURL(_Param):
    url: str = Field(description="an http(s) URL or a base64 data:image/... URL")
    detail: str | None = None


class ImagePart(_Param):
    """An image in a user message: sent to the panelists that accept images, a text note in
    its place for the other models (nodes/images.py)."""

    type: Literal["image_url"]
    image_url: ImageURL


class MediaPart(_Param):
    """Audio and files: refused with a 400 naming the part."""

    type: Literal["input_audio", "file"]


ContentPart = Annotated[TextPart | RefusalPart | ImagePart | MediaPart, Field(discriminator="type")]
Content = str | Annotated[list[ContentPart], Field(min_length=1)]


class FunctionCall(_Param):
    name: str
    arguments: str = Field(default="{}", description="a JSON object, as a string")


class ToolCall(_Param):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Param):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Param):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Param):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(_Param):
    role: Literal["tool"]
    tool_call_id: str
    content: Content = ""
    name: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
# The tags pydantic writes into an error's location for a discriminated union member.
DISCRIMINATOR_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool", "text", "refusal", "image_url"}
    | {"input_audio", "file"}
)


class FunctionDefinition(_Param):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Param):
    """A caller's tool, bound on the synthesis step."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Param):
    name: str


class NamedToolChoice(_Param):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Param):
    include_usage: bool = False


class ResponseFormat(_Param):
    type: Literal["text"] = "text"


class ChatCompletionRequest(_Param):
    """The parameters we act on; other OpenAI ones (top_p, user, ...) are accepted and ignored.
    Limits (RequestLimits) are checked after validation, each a 400 naming the limit."""

    model: str = Field(min_length=1, description="`fusion`, `fusion-<preset>` or an alias")
    messages: list[Message] = Field(
        description="The conversation must hold a user message and end with a user or tool message."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = Field(default=None, description="bound on the synthesis step")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    temperature: float | None = Field(default=None, description="of the synthesis step")
    max_tokens: int | None = Field(default=None, ge=1, description="of the synthesis step")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="of the panelists and the judge whose spec sets none (fusion.reasoning_effort)",
    )
    n: Literal[1] | None = None
    response_format: ResponseFormat | None = None
    fusion: dict[str, Any] | None = Field(
        default=None, description="Per-request fusion settings (the README's configuration table)"
    )

    @field_validator("response_format", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type", "text") != "text":
            raise ValueError(f"response_format {value['type']!r} is not supported; use tools")
        return value


# A spec object as a request may send it: every ModelSpec field but the endpoint and the key.
_REQUEST_SPEC_FIELDS: dict[str, Any] = {
    name: (info.annotation, info)
    for name, info in ModelSpec.model_fields.items()
    if name not in SPEC_FORBIDDEN
}
RequestModelSpec = create_model(
    "RequestModelSpec", __config__=ConfigDict(extra="forbid"), **_REQUEST_SPEC_FIELDS
)
RequestSpec = Annotated[
    # A model made at import time is a value to mypy, not a type it can check against.
    str | RequestModelSpec,  # type: ignore[valid-type]
    Field(description="provider:model, or a model spec object without base_url/api_key_env"),
]


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema, self-contained (no $ref, no discriminator mapping into $defs)."""
    return _drop_discriminators(inline_refs(model.model_json_schema()))


def openapi_request(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """An endpoint's `openapi_extra`: its JSON request body's schema and an example (the route
    reads the body itself, so FastAPI does not document it)."""
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "content": content}}


def openapi_responses(
    body: type[BaseModel],
    events: type[BaseModel],
    error: type[BaseModel],
    statuses: dict[int, str],
) -> dict[int | str, dict[str, Any]]:
    """An endpoint's documented responses: 200 as JSON or as an SSE stream of `events`, and
    each error status with the API's own error body."""
    error_content = {"application/json": {"schema": openapi_schema(error)}}
    out: dict[int | str, dict[str, Any]] = {
        200: {
            "description": body.__doc__,
            "content": {
                "application/json": {"schema": openapi_schema(body)},
                "text/event-stream": {"schema": openapi_schema(events)},
            },
        }
    }
    out.update({s: {"description": d, "content": error_content} for s, d in statuses.items()})
    return out


def _drop_discriminators(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _drop_discriminators(v) for k, v in schema.items() if k != "discriminator"}
    if isinstance(schema, list):
        return [_drop_discriminators(v) for v in schema]
    return schema


@functools.cache
def fusion_options_model(context_schema: type[BaseModel]) -> type[BaseModel]:
    """The request's `fusion` object: every context setting a request may make (the context's own
    types, bounds and descriptions), plus the server's options."""
    fields: dict[str, Any] = {}
    for name, info in context_schema.model_fields.items():
        if name in OPERATOR_ONLY or name in OPENAI_PARAMS:
            continue
        annotation = info.annotation
        if name == "panel":
            annotation = list[RequestSpec] | None
        elif name in MODEL_FIELDS:
            annotation = RequestSpec | None
        fields[name] = (annotation, Field(default=None, description=info.description))
    return create_model(
        "FusionOptions",
        __config__=ConfigDict(extra="forbid"),
        **fields,
        **REQUEST_OPTIONS,
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


class ChatCompletionResponse(BaseModel):
    """A chat.completion (JSON); with `stream`, chat.completion.chunk events (SSE) ending in
    `data: [DONE]`, a failure after the stream opened being an error event."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    fusion: dict[str, Any] | None = Field(default=None, description="the run's full record")


class StreamEvent(BaseModel):
    data: str = Field(description="a chat.completion.chunk or an error, as JSON; or [DONE]")
