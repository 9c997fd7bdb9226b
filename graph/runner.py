"""Run the fusion graph once and collect what every surface shows: progress, tokens, result.

The CLI, the chat model and the HTTP server all drive the graph through `stream_run`, so the
streaming and progress behaviour is the same everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import StreamMode

from fusiongraph.graph.config import FusionContext

if TYPE_CHECKING:
    from fusiongraph.graph.builder import FusionGraph

# The nodes that write a run's final message: the synthesizer, or `finish` when a strategy
# decided the answer without a model call (nodes/aggregation.py).
FINAL_NODES = ("synthesis", "finish")


@dataclass
class RunEvent:
    """One thing that happened: a progress event, a synthesis token chunk, or the final message."""

    kind: Literal["progress", "token", "final"]
    progress: dict[str, Any] | None = None
    chunk: AIMessageChunk | None = None
    message: AIMessage | None = None


async def stream_run(
    graph: FusionGraph,
    messages: Sequence[BaseMessage] | None,
    context: FusionContext | dict[str, Any],
    config: RunnableConfig | None = None,
    *,
    progress: bool = True,
) -> AsyncIterator[RunEvent]:
    """Stream one run: progress (custom mode, unless `progress` is off: nobody watches it),
    synthesis tokens (messages mode), then the result. `messages=None` resumes the unfinished
    run of the checkpointed thread in `config`."""
    final: AIMessage | None = None
    final_node = ""
    inputs = None if messages is None else {"messages": list(messages)}
    modes: list[StreamMode] = (
        ["custom", "messages", "updates"] if progress else ["messages", "updates"]
    )
    mode: str
    data: Any  # with a list of modes, astream yields (mode, data) pairs
    # langgraph types the input and context as the schemas; at run time it coerces a context
    # dict into the schema, and add_messages takes any message (RemoveMessage too).
    stream = graph.astream(inputs, config=config, context=context, stream_mode=modes)  # type: ignore[arg-type]
    async for mode, data in stream:
        if mode == "custom":
            yield RunEvent("progress", progress=data)
        elif mode == "messages":
            chunk, meta = data
            if meta.get("langgraph_node") == "synthesis" and isinstance(chunk, AIMessageChunk):
                yield RunEvent("token", chunk=chunk)
        elif mode == "updates" and isinstance(data, dict):
            for node in FINAL_NODES:
                if isinstance(data.get(node), dict) and data[node].get("messages"):
                    final, final_node = data[node]["messages"][-1], node
    if final is None:
        raise RuntimeError("the graph ended without a final message")
    if final_node == "finish" and final.content:
        # A final no model wrote (early exit, a vote, a selection: nodes/synthesis.finish) still
        # reaches the caller as content, the way a synthesis stream would.
        yield RunEvent("token", chunk=AIMessageChunk(content=final.content, id=final.id))
    yield RunEvent("final", message=final)
