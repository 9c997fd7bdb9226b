"""The MCP `deliberate` tool: its arguments, its result and its progress, independent of the
transport (serve/mcp_server.py serves it).

The arguments are derived from the graph's context schema, like the HTTP server's `fusion`
object: every setting a caller may make per call (a new context field appears here without
touching this module), minus the operator's own (`OPERATOR_ONLY`: files, network, MCP servers)
and the synthesis-tool settings that have no meaning for a text answer. A model spec object may
not choose an endpoint or a key.
"""

from __future__ import annotations

import functools
import typing
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from fusiongraph.graph.config import OPERATOR_ONLY, FusionContext
from fusiongraph.graph.deliberation import deliberation_messages, render
from fusiongraph.graph.errors import field_path
from fusiongraph.graph.presets import PRESETS
from fusiongraph.graph.providers import OBJECT_PROVIDER
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.serve.openai_protocol import SPEC_FORBIDDEN, RequestSpec, openapi_schema

TOOL_NAME = "deliberate"
DESCRIPTION = (
    "Ask a panel of independent models (each able to search the web) to deliberate; a judge "
    "compares their answers (consensus, contradictions, unique insights, blind spots) and one "
    "final answer is written from that comparison. Use it for a second opinion on questions "
    "that deserve one: facts you are unsure of, contested or high-stakes questions, recent "
    "events. It is slow (tens of seconds) and costs several model calls: not for look-ups you "
    "can answer yourself. Give `question` (plus optional `context`), or a whole conversation as "
    "`messages`; every other argument is optional and overrides the server's settings."
)
# Context settings a call never makes: the operator's, and the caller-tool settings of synthesis.
NOT_PER_CALL = OPERATOR_ONLY | {"synthesis_tools", "tool_choice"}
_INPUTS = ("question", "context", "messages")
MAX_ITEMS = 8  # per analysis section in the structured result
MAX_ITEM_CHARS = 400


class ArgumentError(ValueError):
    """A call's arguments are wrong: the message names the argument and what to do."""


class ChatTurn(BaseModel):
    """One message of a conversation handed to the panel."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


def _holds_spec(annotation: Any) -> bool:
    if annotation is ModelSpec:
        return True
    return any(_holds_spec(arg) for arg in typing.get_args(annotation))


def _per_call_annotation(name: str, annotation: Any) -> Any:
    """The field's type as a call may set it: presets by name, specs without endpoint or key."""
    if name == "preset":
        return Literal[tuple(PRESETS)] | None
    if _holds_spec(annotation):
        is_list = any(
            typing.get_origin(a) is list for a in (annotation, *typing.get_args(annotation))
        )
        return list[RequestSpec] | None if is_list else RequestSpec | None
    return annotation


# The tool's own inputs, first among its arguments; the context settings follow
# (arguments_model). No docstring: the arguments' JSON schema has no description.
class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(
        default=None, min_length=1, description="The question, self-contained."
    )
    context: str | None = Field(
        default=None, description="Optional background the panel needs (with question)."
    )
    messages: list[ChatTurn] | None = Field(
        default=None,
        min_length=1,
        description="A whole conversation instead of `question`; the last turn is the user's.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, values: Any) -> Any:
        if isinstance(values, dict):
            question, messages = values.get("question"), values.get("messages")
            if (question is None) == (messages is None):
                raise ValueError("give either `question` or `messages`, not both and not neither")
            if messages is not None and values.get("context") is not None:
                raise ValueError("`context` goes with `question`; put background in `messages`")
        return values


@functools.cache
def arguments_model(context_schema: type[BaseModel] = FusionContext) -> type[_Inputs]:
    """The tool's arguments: the question (or messages), then every per-call context setting
    with the context's own type and description."""
    fields: dict[str, Any] = {}
    for name, info in context_schema.model_fields.items():
        if name in NOT_PER_CALL or name in _INPUTS:
            continue
        annotation = _per_call_annotation(name, info.annotation)
        fields[name] = (annotation, Field(default=None, description=info.description))
    return create_model("DeliberateArguments", __base__=_Inputs, **fields)


def input_schema(context_schema: type[BaseModel] = FusionContext) -> dict[str, Any]:
    """The tool's JSON schema, self-contained (no $ref), as MCP clients show it."""
    return openapi_schema(arguments_model(context_schema))


def _check_spec_objects(arguments: dict[str, Any], spec_fields: set[str]) -> None:
    for name in spec_fields & set(arguments):
        value = arguments[name]
        specs = value if isinstance(value, list) else [value]
        for i, spec in enumerate(specs):
            where = f"{name}[{i}]" if isinstance(value, list) else name
            provider = spec.get("provider") if isinstance(spec, dict) else None
            if isinstance(spec, str):
                provider = spec.partition(":")[0]
            if provider == OBJECT_PROVIDER:
                raise ArgumentError(
                    f"{where}: an object: spec names a chat model object of a Python graph; "
                    "a call cannot use one"
                )
            if not isinstance(spec, dict):
                continue
            for key in SPEC_FORBIDDEN:
                if key in spec:
                    raise ArgumentError(
                        f"{where}.{key} cannot be set per call: the operator chooses endpoints and "
                        "keys (fusiongraph mcp --set ...)"
                    )


def parse_arguments(
    arguments: dict[str, Any] | None, context_schema: type[BaseModel] = FusionContext
) -> tuple[list[BaseMessage], dict[str, Any]]:
    """The conversation and the context overrides of one call; ArgumentError names what is wrong."""
    arguments = dict(arguments or {})
    for key in arguments:
        if key in OPERATOR_ONLY:
            raise ArgumentError(
                f"{key} is the operator's setting, not a call's: set it when starting the server "
                f"(fusiongraph mcp --set {key}=...)"
            )
        if key in NOT_PER_CALL:
            raise ArgumentError(f"{key} does not apply to the deliberate tool")
    model = arguments_model(context_schema)
    spec_fields = {
        name
        for name, info in context_schema.model_fields.items()
        if name not in NOT_PER_CALL and _holds_spec(info.annotation)
    }
    _check_spec_objects(arguments, spec_fields)
    try:
        parsed = model.model_validate(arguments)
    except ValidationError as exc:
        raise ArgumentError(_validation_message(exc)) from None
    overrides = parsed.model_dump(exclude_none=True, exclude=set(_INPUTS))
    if parsed.messages is not None:
        messages = [_message(turn) for turn in parsed.messages]
    else:
        assert parsed.question is not None  # _one_input: no messages, so a question
        messages = deliberation_messages(parsed.question, parsed.context)
    return messages, overrides


def _message(turn: ChatTurn) -> BaseMessage:
    kind = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}[turn.role]
    return kind(content=turn.content)


def _validation_message(exc: ValidationError) -> str:
    """Each problem as `argument: what is wrong`, without pydantic's union-member noise."""
    lines = []
    for err in exc.errors()[:5]:
        loc = [
            p for p in err["loc"] if not str(p).startswith(("function-", "str", "dict[", "list["))
        ]
        where = field_path(loc) if loc else "arguments"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown argument")
        else:
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid arguments: " + "; ".join(dict.fromkeys(lines))


# ---------------------------------------------------------------------------- the result


class Stance(BaseModel):
    panelist: str
    stance: str


class Contradiction(BaseModel):
    topic: str
    stances: list[Stance]


class Insight(BaseModel):
    panelist: str
    insight: str


class FailedPanelist(BaseModel):
    panelist: str
    model: str
    reason: str
    message: str


class Models(BaseModel):
    panel: list[str] = Field(description="the panelists that answered, then those that failed")
    judge: str | None
    synthesizer: str | None


class TokenUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class DeliberationResult(BaseModel):
    """The structured content of a deliberation: the answer and a compact analysis."""

    answer: str
    consensus: list[str]
    contradictions: list[Contradiction]
    unique_insights: list[Insight]
    blind_spots: list[str]
    degraded: bool = Field(description="the judge failed: the answer came from the raw answers")
    failed: list[FailedPanelist]
    models: Models
    aggregation: str | None = Field(description="the aggregation strategy applied, if recorded")
    cost_usd: float | None = Field(description="the whole run; null when a price is unknown")
    usage: TokenUsage
    sources: list[str]


def output_schema() -> dict[str, Any]:
    return openapi_schema(DeliberationResult)


def _clip(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_ITEM_CHARS else text[: MAX_ITEM_CHARS - 1] + "…"


def structured_result(message: AIMessage) -> dict[str, Any]:
    """The compact analysis of a finished run, from its `fusion` record."""
    fusion = message.response_metadata.get("fusion") or {}
    analysis = fusion.get("analysis") or {}
    panel = fusion.get("panel") or []
    failed = fusion.get("failed_models") or []
    total = (fusion.get("usage") or {}).get("total") or {}
    aggregation = fusion.get("aggregation")
    result = DeliberationResult(
        answer=message.text,
        consensus=[_clip(c) for c in (analysis.get("consensus") or [])[:MAX_ITEMS]],
        contradictions=[
            Contradiction(
                topic=_clip(c.get("topic", "")),
                stances=[
                    Stance(panelist=str(s.get("panelist", "")), stance=_clip(s.get("stance", "")))
                    for s in c.get("stances") or []
                ],
            )
            for c in (analysis.get("contradictions") or [])[:MAX_ITEMS]
        ],
        unique_insights=[
            Insight(panelist=str(u.get("panelist", "")), insight=_clip(u.get("insight", "")))
            for u in (analysis.get("unique_insights") or [])[:MAX_ITEMS]
        ],
        blind_spots=[_clip(b) for b in (analysis.get("blind_spots") or [])[:MAX_ITEMS]],
        degraded=bool(fusion.get("degraded")),
        failed=[
            FailedPanelist(
                panelist=str(f.get("panelist", "")),
                model=str(f.get("model", "")),
                reason=str(f.get("reason", "")),
                message=_clip(f.get("message", "")),
            )
            for f in failed
        ],
        models=Models(
            panel=[str(p.get("model", "")) for p in [*panel, *failed]],
            judge=(fusion.get("judge") or {}).get("model"),
            synthesizer=(fusion.get("synthesizer") or {}).get("model"),
        ),
        aggregation=aggregation.get("applied") if isinstance(aggregation, dict) else None,
        cost_usd=(fusion.get("cost_usd") or {}).get("total"),
        usage=TokenUsage(
            input_tokens=int(total.get("input_tokens", 0)),
            output_tokens=int(total.get("output_tokens", 0)),
            total_tokens=int(total.get("total_tokens", 0)),
        ),
        sources=list(
            dict.fromkeys(s["url"] for p in panel for s in p.get("sources") or [] if s.get("url"))
        )[:MAX_ITEMS],
    )
    return result.model_dump(mode="json")


def text_result(message: AIMessage) -> str:
    """The text content: the final answer, then the analysis (as the LangChain tool gives it)."""
    return render(message)


# ---------------------------------------------------------------------------- progress


class ProgressCounter:
    """The run's progress events as MCP progress values: one step per event (the panel's starts
    and ends, the judge's, the synthesis'), so the value increases with every notification, as
    MCP requires, and reaches the total when the synthesis finishes. Events this counter does not
    know (a newer node's) add a step to both."""

    FIXED_STEPS = 5  # run_started, judge started/finished, synthesis started/finished

    def __init__(self) -> None:
        self.progress = 0
        self.total: int | None = None

    def step(self, event: dict[str, Any]) -> tuple[int, int | None, str]:
        kind = str(event.get("event", ""))
        if kind == "run_started":
            self.total = 2 * len(event.get("panel") or []) + self.FIXED_STEPS
        known = kind == "run_started" or kind.startswith(("panelist_", "judge_", "synthesis_"))
        if not known and self.total is not None:
            self.total += 1
        self.progress += 1
        if self.total is not None and self.progress > self.total:
            self.total = self.progress
        return self.progress, self.total, describe_event(event)

    def finish(self) -> tuple[int, int, str] | None:
        """The total, when the run skipped steps (cached panelists, a vote that needed no
        judge): the last notification then still says the work is done."""
        if self.total is None or self.progress >= self.total:
            return None
        self.progress = self.total
        return self.progress, self.total, "answer written"


def describe_event(event: dict[str, Any]) -> str:
    """One line a client can show for a progress event."""
    kind = str(event.get("event", ""))
    who = f"{event.get('panelist', '')} ({event.get('model', '')})"
    latency = event.get("latency_s")
    took = f" in {latency:.1f} s" if isinstance(latency, int | float) else ""
    if kind == "run_started":
        panel = event.get("panel") or []
        return f"panel of {len(panel)} asked: {', '.join(map(str, panel))}"
    if kind == "panelist_started":
        return f"{who} is answering"
    if kind == "panelist_finished":
        return f"{who} answered{took} ({event.get('tool_calls', 0)} tool calls)"
    if kind == "panelist_failed":
        return f"{who} failed{took}: {event.get('reason', '')}"
    if kind == "judge_started":
        return f"judge ({event.get('model', '')}) compares {event.get('answers', '?')} answers"
    if kind == "judge_finished":
        return f"judge finished{took}"
    if kind == "synthesis_started":
        return f"synthesizer ({event.get('model', '')}) writes the answer"
    if kind == "synthesis_finished":
        return f"answer written{took}"
    return kind.replace("_", " ") or "working"
