"""The gate node: after each panel wave, decide where the run goes (nodes/aggregation.py).

- `rest`: a cascade's first panelists disagree (or too few answered): send the others.
- `finish`: the answer is decided (early exit, a vote's winner): no judge, no synthesis call.
- `judge`: compare (and, for select or a vote's tie, select) as usual.

The gate itself makes no model call; it releases the wave's panel clock (a second wave gets
a clock of its own) and reports its decision as a progress event.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import Send

from fusiongraph.graph.config import config_of
from fusiongraph.graph.state import FusionState
from fusiongraph.nodes.aggregation import after_panel, answered
from fusiongraph.nodes.dispatch import panel_sends
from fusiongraph.nodes.panel_clock import release_clock
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.start_order import end_start_turn

REST_CLOCK = "/rest"


async def gate(state: FusionState) -> dict[str, Any]:
    config = config_of(state["plan"])
    run_key = state.get("run_key", "")
    release_clock(run_key)
    end_start_turn(run_key)  # a panel of cached answers sent no request (start_order.py)
    release_clock(run_key + REST_CLOCK)
    record = after_panel(state, config)
    route = record["route"]
    if route == "rest":
        emit(
            "cascade_expanded",
            asked=record["cascade"]["first"],
            rest=record["cascade"]["rest"],
            reason="the first panelists did not agree",
        )
    elif record.get("cascade") and record["cascade"].get("agreed") and route != "rest":
        emit("cascade_agreed", asked=record["cascade"]["first"], skipped=record["cascade"]["rest"])
    if route == "finish":
        emit("aggregation_decided", outcome=record["outcome"], note=record.get("note"))
    return {"aggregation": record}


def after_gate(state: FusionState) -> str | list[Send]:
    """The gate's conditional edge: the rest of a cascade's panel, the judge or finish."""
    record = state["aggregation"]
    route = record["route"]
    if route != "rest":
        return route
    config = config_of(state["plan"])
    rest = [int(p.removeprefix("p")) - 1 for p in record["cascade"]["rest"]]
    quorum = None
    if config.quorum is not None:  # the quorum counts the whole panel's answers
        quorum = max(1, config.quorum - len(answered(state.get("panel", []))))
    return panel_sends(state, config, rest, clock_key=state["run_key"] + REST_CLOCK, quorum=quorum)
