"""Graph state. Plain TypedDicts so every checkpointer can store them without custom types."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, get_args

from langchain_core.messages import AnyMessage
from langgraph.channels import UntrackedValue
from langgraph.graph import add_messages
from typing_extensions import TypedDict

# The run's live coordination (its plan, start turn and panel clocks: nodes/scheduling.py's
# RunScope). An untracked value: LangGraph never checkpoints it, also where a Send payload
# carries it, so it goes when the run ends, finished or cancelled.
RunScopeValue = Annotated[Any, UntrackedValue(object)]


class Usage(TypedDict, total=False):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    reasoning_tokens: int  # of output_tokens, the model's hidden reasoning (where reported)
    reported_cost_usd: float  # what the provider billed, when it says (OpenRouter's usage.cost)


class Source(TypedDict):
    url: str
    title: str


class PanelError(TypedDict):
    reason: str  # timeout | deadline | rate_limited | auth | upstream_error | empty | error
    message: str


class PanelResult(TypedDict):
    """One panelist's outcome; `error` is None on success."""

    panelist: str  # stable id: p1, p2, ...
    model: str
    content: str
    sources: list[Source]
    usage: Usage
    latency_s: float
    tool_calls: int
    error: PanelError | None
    cached: NotRequired[bool]  # served by the panel-answer cache: no call made, nothing paid
    images: NotRequired[int]  # images it was sent (0: none, or a note in place of each)


class PanelTask(TypedDict):
    """The payload `Send` hands each panelist branch."""

    panelist: str
    index: int
    run_key: str
    started_at: float
    messages: list[AnyMessage]
    plan: dict[str, Any]  # the run's plan, as in FusionState
    run: NotRequired[RunScopeValue]  # the run's scope, as in FusionState (not in a resumed run)
    # The wave whose clock this branch shares (a cascade's rest has its own) and its quorum.
    wave: NotRequired[str]
    quorum: NotRequired[int | None]
    # The resolved model spec and tool settings (nodes.panel.panel_identity): the cache key.
    spec: NotRequired[dict[str, Any]]
    tools: NotRequired[dict[str, Any]]


def panel_index(result: PanelResult) -> int:
    """The panelist's position in the configured panel (p1 is 0)."""
    return int(result["panelist"].removeprefix("p")) - 1


def reduce_panel(current: list[PanelResult] | None, update: list[PanelResult] | None):
    """Add panel results, kept in panel order (p1, p2, ...) whatever order the branches ran in;
    `None` clears them, so each new turn on a thread starts empty."""
    if update is None:
        return []
    return sorted([*(current or []), *update], key=panel_index)


class FusionInput(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class FusionOutput(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class FusionState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    run_key: str
    started_at: float  # wall clock (time.time) when dispatch ran, for the run deadline
    # The run's FusionConfig as plain data, resolved once by dispatch: a resumed run reads it
    # back (graph.config.config_of); a live run's nodes use the scope's FusionConfig.
    plan: dict[str, Any]
    run: RunScopeValue  # what the run coordinates while it runs (nodes/scheduling.RunScope)
    panel: Annotated[list[PanelResult], reduce_panel]
    analysis: dict[str, Any] | None
    judge: dict[str, Any]  # {"ok", "error", "usage", "latency_s", "order"}
    # How the run aggregates and what it decided, as plain data (nodes/aggregation.py).
    aggregation: dict[str, Any]


TokenKey = Literal["input_tokens", "output_tokens", "total_tokens", "reasoning_tokens"]
TOKEN_KEYS: tuple[TokenKey, ...] = get_args(TokenKey)


def empty_usage() -> Usage:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "reasoning_tokens": 0}


def add_usage(a: Usage, b: Usage) -> Usage:
    out: Usage = {}
    for k in TOKEN_KEYS:
        out[k] = a.get(k, 0) + b.get(k, 0)
    reported = a.get("reported_cost_usd", 0.0) + b.get("reported_cost_usd", 0.0)
    if reported:
        out["reported_cost_usd"] = reported
    return out


def usage_of(message: Any) -> Usage:
    """Token usage of an AIMessage, zero when the provider did not report it."""
    meta = getattr(message, "usage_metadata", None) or {}
    i, o = int(meta.get("input_tokens", 0) or 0), int(meta.get("output_tokens", 0) or 0)
    # OpenAI's completion_tokens_details.reasoning_tokens, as langchain-core reports it.
    reasoning = (meta.get("output_token_details") or {}).get("reasoning", 0)
    usage: Usage = {
        "input_tokens": i,
        "output_tokens": o,
        "total_tokens": int(meta.get("total_tokens") or i + o),
        "reasoning_tokens": int(reasoning or 0),
    }
    token_usage = (getattr(message, "response_metadata", None) or {}).get("token_usage") or {}
    if isinstance(token_usage, dict) and token_usage.get("cost"):
        usage["reported_cost_usd"] = float(token_usage["cost"])
    return usage


def estimate_usage(prompt: list[Any], reply: Any) -> Usage:
    """About four characters a token: for endpoints that report no usage (streamed llama.cpp)."""
    i = sum(len(str(m.content)) for m in prompt) // 4
    o = max(1, len(str(reply.content)) // 4)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o, "reasoning_tokens": 0}


def usage_metadata_of(total: Usage) -> dict[str, Any]:
    """A run's totals as LangChain's usage_metadata on its final message (reasoning tokens in
    output_token_details, where the chat model, the server's usage and Responses read them)."""
    meta: dict[str, Any] = {
        "input_tokens": total["input_tokens"],
        "output_tokens": total["output_tokens"],
        "total_tokens": total["total_tokens"],
    }
    if total.get("reasoning_tokens"):
        meta["output_token_details"] = {"reasoning": total["reasoning_tokens"]}
    return meta
