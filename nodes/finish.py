"""The finish node: the final answer a strategy decided, written without a model call.

Early exit, a vote's winner and the judge's selection (nodes/aggregation.py) end here: the
final message is that panelist's answer verbatim, with the run's record. It reaches every
surface like a synthesized one: in `messages` stream mode as the node's output (from node
`finish`), and graph/runner.py turns it into the token stream the chat model and the server
send.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from fusiongraph.graph.state import FusionState, empty_usage, usage_metadata_of
from fusiongraph.nodes.aggregation import decided
from fusiongraph.nodes.metadata import fusion_metadata
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import scope_of


async def finish(state: FusionState) -> dict[str, Any]:
    config = scope_of(state).config
    choice = decided(state)
    if choice is None:  # the routes reach this node only with a decided answer
        raise RuntimeError("finish reached without a decided answer")
    meta = fusion_metadata(state, config, synthesis_usage=empty_usage(), synthesis_latency_s=None)
    meta["usage_estimated"] = False
    total = meta["usage"]["total"]
    final = AIMessage(
        content=choice["content"],
        id=f"fusion-{state.get('run_key', '')}",
        response_metadata={"fusion": meta, "finish_reason": "stop"},
        usage_metadata=usage_metadata_of(total),  # type: ignore[arg-type]
    )
    emit(
        "answer_selected",
        panelist=choice["panelist"],
        reason=choice["reason"],
        final=meta["aggregation"]["final"],
    )
    return {"messages": [final]}
