"""Assemble the fusion graph.

    dispatch ──Send──> panelist x N (a cascade: its first k) ──> gate
    gate ──> panelist (Send: a cascade's rest, when the first k disagree) ──> gate
    gate ──> judge ──> synthesis ──> END        (synthesize; a selection that falls back)
    gate ──> finish ──> END                     (early exit, a vote's winner: no model call)
    gate ──> verify ──> finish | synthesis      (verify: the winner by execution; tools: a draft)
    verify ──> judge ──> finish                 (verify with nothing that passes: select)
    gate ──> synthesis                          (the same, with the caller's tools: a draft)
    judge ──> finish                            (select, a vote's tie: the answer verbatim)
    dispatch ──Send──> classify ──> gate        (auto, when its rules cannot tell)

The strategy decisions live in nodes/aggregation.py, with the gate node that applies them; the
finish node, which writes a decided answer, lives with the synthesis node in nodes/synthesis.py.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.cache.base import BaseCache
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import CachePolicy

from fusiongraph.graph.config import FusionContext
from fusiongraph.graph.model_objects import ObjectModels
from fusiongraph.graph.models import (
    ModelFactory,
    aclose_models,
    default_model_factory,
    prewarm_clients,
)
from fusiongraph.graph.persistence import DEFAULT_CACHE_TTL_S, open_checkpointer, panel_cache
from fusiongraph.graph.prewarm import start_client_prewarm
from fusiongraph.graph.state import FusionInput, FusionOutput, FusionState
from fusiongraph.nodes.aggregation import after_gate, after_judge, gate
from fusiongraph.nodes.dispatch import fan_out, make_dispatch
from fusiongraph.nodes.judge import make_judge
from fusiongraph.nodes.panel import make_panelist, panel_cache_key
from fusiongraph.nodes.routing import make_classify
from fusiongraph.nodes.synthesis import finish, make_synthesis
from fusiongraph.nodes.verify_node import after_verify, make_verify
from fusiongraph.tools.aio import run_coroutine

# The compiled fusion graph (its context a FusionContext or an extension's subclass of it).
FusionGraph = CompiledStateGraph[FusionState, FusionContext, FusionInput, FusionOutput]


class SyncAndAsync(Runnable[Any, Any]):
    """A graph node (or a conditional edge) with a sync and an async form, called as it is.

    What `add_node` builds from a plain function is LangGraph's RunnableCallable, a private class;
    langchain-core's RunnableLambda re-inspects signatures and opens a nested chain run on every
    call. This public Runnable does neither: like a plain node it is untraced (the graph's step
    is), and it hands a node the run's `Runtime` when its signature asks for `runtime`.
    """

    def __init__(
        self, name: str, sync: Callable[[Any], Any], async_: Callable[[Any], Awaitable[Any]]
    ) -> None:
        self.name = name
        self._sync = sync
        self._async = async_

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._sync(input)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._async(input)


def _with_runtime(node: Callable[..., Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """The node as a one-argument call, given the run's Runtime when it takes `runtime`."""
    if "runtime" not in inspect.signature(node).parameters:
        return node

    async def call(state: Any) -> Any:
        return await node(state, runtime=get_runtime())

    return call


def sync_and_async(node: Callable[..., Awaitable[Any]]) -> SyncAndAsync:
    """Run an async node from `graph.invoke` too (each sync branch gets its own event loop).

    The nodes are async so that a cancelled run cancels its HTTP calls; this keeps the plain
    synchronous `invoke` working as well.
    """
    call = _with_runtime(node)

    async def run_once(state: Any) -> Any:
        try:
            return await call(state)
        finally:
            await aclose_models()  # this loop ends with the node: close its connections now

    def run_sync(state: Any) -> Any:
        # From a thread that already runs a loop (a notebook) this runs in a worker thread,
        # carrying the context so LangGraph's runtime and stream writer are still found.
        return run_coroutine(run_once(state))

    return SyncAndAsync(node.__name__, run_sync, call)


def on_the_loop(route: Callable[[Any], Any]) -> SyncAndAsync:
    """A routing function that also runs on the event loop of an async run.

    LangGraph calls a plain function from an async run in a worker thread (langchain-core's
    `run_in_executor`): a thread hop per edge, which under 200 runs in flight queued behind the
    pool and cost more than the routing. The twin runs it in place; it does no I/O.
    """

    async def aroute(state: Any) -> Any:
        return route(state)

    return SyncAndAsync(route.__name__, route, aroute)


def build_graph(
    model_factory: ModelFactory = default_model_factory,
    *,
    models: Mapping[str, BaseChatModel] | None = None,
    cache: bool | BaseCache | None = None,
    cache_ttl_s: int | None = DEFAULT_CACHE_TTL_S,
    context_schema: type[FusionContext] = FusionContext,
    **compile_kwargs: Any,
) -> FusionGraph:
    """Compile the fusion graph. `compile_kwargs` go to `compile` (checkpointer, store, ...).

    `context_schema` (a FusionContext subclass) adds settings of an extension's own: Studio, the
    server's OpenAPI document and its requests' `fusion` object pick them up from the graph.

    `cache` (off by default) reuses panel answers: an identical request (same conversation, same
    panelist, model spec and tool settings) does not call that panelist again within
    `cache_ttl_s` seconds (None: forever). `True` keeps them in memory; a LangGraph BaseCache
    (SqliteCache, RedisCache) shares them between processes. Only successful answers are kept;
    the judge and the synthesizer run as the aggregation strategy decides, never from the cache.

    `models` registers chat model objects (`{"claude": ChatAnthropic(...)}`) that the run's
    context names as specs `object:claude` for any panelist, the judge or the synthesizer; the
    other specs go to `model_factory`. Such an object brings its own temperature, seed,
    max_tokens, timeout, endpoint and key: those spec settings (and the run's temperature and
    max_tokens) do not reach it, as `fusion.settings.model_objects` says. The context stays
    plain data; a request to the server cannot name an object (graph/model_objects.py).
    """
    if model_factory is default_model_factory:
        start_client_prewarm(prewarm_clients)  # the clients' imports, in the background
    if models:
        model_factory = ObjectModels(models, model_factory)
    answers = panel_cache(cache)
    panel_policy = (
        CachePolicy(key_func=panel_cache_key, ttl=cache_ttl_s) if answers is not None else None
    )
    builder = StateGraph(
        FusionState,
        context_schema=context_schema,
        input_schema=FusionInput,
        output_schema=FusionOutput,
    )
    builder.add_node("dispatch", sync_and_async(make_dispatch(model_factory)))
    builder.add_node(
        "panelist", sync_and_async(make_panelist(model_factory)), cache_policy=panel_policy
    )
    builder.add_node("classify", sync_and_async(make_classify(model_factory)))
    builder.add_node("gate", sync_and_async(gate))
    builder.add_node("verify", sync_and_async(make_verify(model_factory)))
    builder.add_node("judge", sync_and_async(make_judge(model_factory)))
    builder.add_node("synthesis", sync_and_async(make_synthesis(model_factory)))
    builder.add_node("finish", sync_and_async(finish))
    builder.add_edge(START, "dispatch")
    builder.add_conditional_edges("dispatch", on_the_loop(fan_out), ["panelist", "classify"])
    builder.add_edge("panelist", "gate")
    builder.add_edge("classify", "gate")
    builder.add_conditional_edges(
        "gate", on_the_loop(after_gate), ["panelist", "verify", "judge", "synthesis", "finish"]
    )
    builder.add_conditional_edges(
        "verify", on_the_loop(after_verify), ["judge", "synthesis", "finish"]
    )
    builder.add_conditional_edges("judge", on_the_loop(after_judge), ["synthesis", "finish"])
    builder.add_edge("synthesis", END)
    builder.add_edge("finish", END)
    return builder.compile(name="fusion", cache=answers, **compile_kwargs)


@asynccontextmanager
async def open_graph(
    checkpointer_url: str | None = None,
    *,
    model_factory: ModelFactory | None = None,
    cache: bool | BaseCache | None = None,
) -> AsyncIterator[FusionGraph]:
    """The fusion graph compiled with the checkpointer (and cache) the server or CLI was given.

    `async with open_graph(args.checkpointer, cache=args.cache) as graph:` around the process's
    lifetime (one pool, one SQLite connection) rather than around each request.
    """
    async with open_checkpointer(checkpointer_url) as saver:
        yield build_graph(
            model_factory or default_model_factory,
            checkpointer=saver,
            cache=cache,
        )


graph = build_graph()
