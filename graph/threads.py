"""What a request on a checkpointed thread means: a fresh run, a resume, a replay or a new turn.

Thread ids are chosen by clients, so an id alone proves nothing: a run stores, in its checkpoint
metadata, a digest of the request that started it and a digest of the API key that made it.
- same request, run unfinished -> resume it (finished panelists are not called again);
- same request, run finished -> replay its stored answer (a retry never pays twice);
- another request, run finished -> a new turn on the thread (never the old answer);
- another request, run unfinished -> ThreadConflict (a 409): it is neither a retry of that run
  nor a follow-up to an answer that does not exist yet;
- another owner's thread -> ThreadNotFound (a 404), whatever it holds.
The server and the CLI both decide through `plan_thread`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.graph.state import CompiledStateGraph

from fusiongraph.graph.errors import ThreadConflict, ThreadNotFound

REQUEST_KEY = "fusion_request"  # checkpoint metadata: digest of the request that started the run
OWNER_KEY = "fusion_owner"  # checkpoint metadata: digest of the API key that made the thread

Action = Literal["fresh", "resume", "replay", "new_turn"]


def digest(value: Any) -> str:
    """A stable digest of any JSON-like value (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def owner_of(api_key: str | None) -> str:
    """Who a thread belongs to: a digest of the caller's API key ("" when there is no auth)."""
    return digest(["owner", api_key]) if api_key else ""


@dataclass
class ThreadPlan:
    """How to run one request on the graph; `config` is what ainvoke/astream take."""

    action: Action = "fresh"
    thread_id: str | None = None
    config: RunnableConfig | None = None
    replay: AIMessage | None = field(default=None, repr=False)

    def inputs(
        self, messages: list[AnyMessage], *, whole_conversation: bool
    ) -> Sequence[BaseMessage] | None:
        """The messages to run: none to resume. On a new turn, messages that are the whole
        conversation (OpenAI clients resend it) replace the thread's history; otherwise (the CLI
        sends one question) they follow it."""
        if self.action == "resume":
            return None
        if self.action == "new_turn" and whole_conversation:
            return [RemoveMessage(id=REMOVE_ALL_MESSAGES), *messages]
        return messages


async def plan_thread(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread_id: str | None,
    *,
    request: str,
    owner: str = "",
) -> ThreadPlan:
    """Decide how `request` (a `digest`) meets the thread; without a checkpointer, every run is
    fresh and stands alone. No thread id: a new thread is made up (returned to the caller)."""
    if graph.checkpointer is None:
        return ThreadPlan()
    thread_id = thread_id or uuid.uuid4().hex
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_id},
        "metadata": {REQUEST_KEY: request, OWNER_KEY: owner},
    }
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    if not state.values and not state.next:
        return ThreadPlan("fresh", thread_id, config)
    stored = state.metadata or {}
    if stored.get(OWNER_KEY, "") != owner:
        raise ThreadNotFound(thread_id)
    same = stored.get(REQUEST_KEY) == request
    if state.next:
        if not same:
            raise ThreadConflict(thread_id)
        return ThreadPlan("resume", thread_id, config)
    messages = state.values.get("messages") or []
    final = messages[-1] if messages else None
    if same and isinstance(final, AIMessage) and "fusion" in final.response_metadata:
        return ThreadPlan("replay", thread_id, config, replay=final)
    return ThreadPlan("new_turn", thread_id, config)
