"""The dispatch node: validates the run before any model is called, then fans out with Send.

It resolves the run's configuration once and creates the run's scope (nodes/scheduling.py): the
later nodes use the scope's plan, and the plan also goes into the state as plain data, so the
plan a run started with is the plan all of it uses, after a resume too.

It also builds every model of the plan, so that what a process's first run does before its first
request (importing the client libraries, about a second; setting up the clients) happens here,
before any panelist's clock starts, and never counts against a panelist's timeout or latency.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import get_runtime
from langgraph.types import Send

from fusiongraph.graph.config import (
    FusionConfig,
    FusionContext,
    check_configurable,
    plan_of,
    resolve_config,
)
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.models import ModelFactory, close_model, prepare_models
from fusiongraph.graph.pricing import worst_case_cost
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import FusionState
from fusiongraph.nodes.aggregation import event as aggregation_event
from fusiongraph.nodes.aggregation import start as start_aggregation
from fusiongraph.nodes.images import prompt_chars as conversation_chars
from fusiongraph.nodes.judge import judge_spec
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.nodes.panel import panel_sends, panel_spec
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.routing import classifier_spec
from fusiongraph.nodes.scheduling import RunScope, scope_of, take_start_turn
from fusiongraph.nodes.synthesis import synthesis_spec


def make_dispatch(model_factory: ModelFactory):
    """Build the dispatch node around the graph's model factory (which it warms)."""

    async def dispatch(state: FusionState) -> dict[str, Any]:
        """Check config and input; let the model factory prepare the plan (the default one
        starts the bundled local model server when the plan needs it); build the plan's models."""
        turn = await take_start_turn()  # until its first panel request leaves (scheduling.py)
        try:
            context = get_runtime(FusionContext).context
            check_configurable(get_config().get("configurable"), context)
            config = resolve_config(context)
            check_conversation(state.get("messages", []))
            check_budget(config, state["messages"])
            specs = plan_specs(config)
            await prepare_models(model_factory, specs)
            started_at = time.time()
            await warm_models(model_factory, specs)
            aggregation = start_aggregation(config, state["messages"])
        except BaseException:
            turn.end()
            raise
        emit(
            "run_started",
            preset=config.preset,
            panel=[s.name for s in config.panel],
            aggregation=config.aggregation,
        )
        if aggregation["applied"] is not None and config.aggregation == "auto":
            emit("aggregation_chosen", **aggregation_event(aggregation))
        return {
            "aggregation": aggregation,  # the strategy, as plain data (nodes/aggregation.py)
            "run_key": uuid.uuid4().hex,
            "started_at": started_at,
            "plan": plan_of(config),  # what a resumed run reads back
            "run": RunScope(config, turn),  # the plan, start turn and clocks of this run
            "panel": None,  # clears the previous turn's panel on a persistent thread
            "analysis": None,
            "judge": {},
        }

    return dispatch


def plan_specs(config: FusionConfig) -> list[ModelSpec]:
    """Every model of the run, as its node will build it (so the build here is the one reused)."""
    panel = [panel_spec(config, i) for i in range(len(config.panel))]
    extra = [classifier_spec(config)] if config.classifier and config.aggregation == "auto" else []
    return [*panel, judge_spec(config), synthesis_spec(config), *extra]


async def warm_models(model_factory: ModelFactory, specs: list[ModelSpec]) -> None:
    """Build each model once: a process's first build pays the imports and client set-up, and
    the default factory keeps the models of the event loop, so the nodes reuse these."""
    for spec in specs:
        await close_model(model_factory(spec))


def check_budget(config: FusionConfig, messages: list[Any]) -> None:
    """Refuse a plan whose worst case (every max_tokens and tool step used) exceeds max_cost_usd."""
    if config.max_cost_usd is None:
        return
    prompt_chars = conversation_chars(messages)  # an image counts as its tokens, not its base64
    worst, unknown = worst_case_cost(config, prompt_chars)
    if unknown:
        raise FusionConfigError(
            "prices",
            f"no price known for {', '.join(unknown)}; add them to `prices` to use max_cost_usd",
        )
    if worst > config.max_cost_usd:
        raise FusionError(
            "budget_exceeded",
            f"the worst case of this plan is ${worst:.4f}, over max_cost_usd "
            f"${config.max_cost_usd:.4f}; lower max_tokens, max_tool_calls or the panel size",
            worst_case_usd=round(worst, 6),
            max_cost_usd=config.max_cost_usd,
        )


def fan_out(state: FusionState) -> list[Send]:
    """One `Send` per panelist (a cascade: its first wave only; calibrated `auto` that chose a
    member: that member only): the branches run in parallel and join at the gate. With `auto`
    undecided by its rules, the classifier runs beside them."""
    config = scope_of(state).config
    record = state.get("aggregation") or {}
    cascade = record.get("cascade")
    member = (record.get("calibrated") or {}).get("member")
    if record.get("applied") == "member" and member:  # calibrated auto: one member is asked
        indices = [int(member.removeprefix("p")) - 1]
    elif cascade:
        indices = [int(p.removeprefix("p")) - 1 for p in cascade["first"]]
    else:
        indices = list(range(len(config.panel)))
    sends = panel_sends(state, config, indices)
    if record.get("applied") is None and config.classifier is not None:
        payload = {k: state[k] for k in ("plan", "run", "messages", "started_at", "aggregation")}
        sends.append(Send("classify", payload))
    return sends
