"""The gate node: after each panel wave, decide where the run goes (nodes/aggregation.py).

- `rest`: a cascade's first panelists disagree (or too few answered): send the others.
- `finish`: the answer is decided (early exit, a vote's winner): no judge, no synthesis call.
- `judge`: compare (and, for select or a vote's tie, select) as usual.

The gate itself makes no model call; it ends the run's start turn when the panel sent no
request (cached answers) and reports its decision as a progress event.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import Send

from fusiongraph.graph.state import FusionState
from fusiongraph.nodes.aggregation import after_panel, answered
from fusiongraph.nodes.panel import panel_sends
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import scope_of


async def gate(state: FusionState) -> dict[str, Any]:
    scope = scope_of(state)
    scope.end_start_turn()  # a panel of cached answers sent no request (scheduling.py)
    record = after_panel(state, scope.config)
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
    update: dict[str, Any] = {"aggregation": record}
    if state.get("run") is not scope:  # a resumed run: the scope its cascade's rest will share
        update["run"] = scope
    return update


def after_gate(state: FusionState) -> str | list[Send]:
    """The gate's conditional edge: the rest of a cascade's panel, the judge or finish."""
    record = state["aggregation"]
    route = record["route"]
    if route != "rest":
        return route
    config = scope_of(state).config
    rest = [int(p.removeprefix("p")) - 1 for p in record["cascade"]["rest"]]
    quorum = None
    if config.quorum is not None:  # the quorum counts the whole panel's answers
        quorum = max(1, config.quorum - len(answered(state.get("panel", []))))
    return panel_sends(state, config, rest, wave="rest", quorum=quorum)
