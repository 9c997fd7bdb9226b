"""How a run turns its panel answers into one: the strategies, as decisions on plain data.

- `synthesize` (default): the judge compares, the synthesizer writes the answer.
- `select`: the judge, in its same structured call, names the best response; that panelist's
  answer is the final answer verbatim. With the caller's tools bound (`synthesis_tools`, an
  agent needs tool calls from the final step) the synthesizer runs with the selection as its
  draft instead. A judge that fails, or names no response it was shown, falls back to synthesis.
- `vote`: each answer is reduced to its final answer (graph/answers.py, `vote_answer`) and
  counted; a clear winner is the answer, with no judge or synthesis call; a tie goes to the
  judge, which selects among the tied answers only.
- `verify`: the answers are run, not judged (nodes/verify_node.py, after the gate): code on the
  caller's or the judge's tests in the sandbox, math against a program the judge writes; the
  winner is the answer verbatim. Nothing to run, nothing that passes, no sandbox: `select`.
- `auto`: the request's kind picks one of the others (nodes/routing.py). With a calibration
  profile (the `calibration` setting, graph/calibration.py), the arm the eval found winning on
  that kind; where no fusion arm beat the best member, only that member is asked (`applied`
  "member": its answer is final; it failed: the rest of the panel and today's rule). A vote with
  a profile weighs each member by its calibrated log odds (`tally`).

Two ways to spend less, with any strategy:
- early exit (on by default for vote and auto): when every successful answer agrees, judge and
  synthesis are skipped; the first agreeing answer is the final answer.
- cascade (`cascade: k`): the k cheapest panelists answer first; when they agree, the rest are
  never called. Otherwise the rest are dispatched and the run goes on as usual.

Dispatch writes the run's record (`start`); the gate node (`gate`, at the end of this module)
decides after each panel wave (`after_panel`) and routes the run (`after_gate`): a cascade's
rest, the judge, or finish, with no model call of its own; `after_judge` routes a selection,
and `summary` is the run record's `fusion.aggregation`. Everything here reads and returns
plain data, so a resumed run continues from its checkpointed record.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from langgraph.types import Send

from fusiongraph.graph.answers import (
    answers_agree,
    extract_answer,
    normalise_answer,
    option_picked,
    options_in,
)
from fusiongraph.graph.calibration import MIN_WEIGHT
from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.pricing import cost_of, price_of
from fusiongraph.graph.state import FusionState, PanelResult, Usage
from fusiongraph.nodes.messages import last_user_text
from fusiongraph.nodes.panel import panel_sends
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.routing import auto_decision, calibrate, classify_by_rules
from fusiongraph.nodes.scheduling import scope_of

# Task kinds whose answers hold details a rewrite from the analysis would lose.
DETAILED_TASKS = ("code", "math")


def answered(panel: list[PanelResult]) -> list[PanelResult]:
    """The successful answers, in panel order."""
    return [r for r in panel if r["error"] is None and r["content"].strip()]


def start(config: FusionConfig, messages: list[Any]) -> dict[str, Any]:
    """The run's aggregation record as dispatch writes it: the strategy (auto's rule decision,
    or pending the classifier) and the cascade's first wave."""
    record: dict[str, Any] = {
        "requested": config.aggregation,
        "applied": config.aggregation,
        "task": None,
        "reason": "requested",
        "outcome": None,  # early_exit | vote | judge: what the gate decided
        "vote": None,
        "judge_select": False,
        "candidates": None,
        "cascade": None,
        "classifier": None,
        "calibrated": None,
    }
    if config.aggregation == "auto":
        record.update(auto_decision(config, messages))
    if config.calibration is not None and record["applied"] is not None:
        task = record["task"]
        if task is None:  # vote requested: the rules say which task type's weights apply
            task = (classify_by_rules(last_user_text(messages)) or (None, ""))[0]
        record = calibrate(config, record, task)
    if record["applied"] == "member":  # only the calibrated member is asked: no cascade
        return record
    if config.cascade is not None:
        first = cheapest(config, config.cascade)
        record["cascade"] = {
            "k": config.cascade,
            "first": [f"p{i + 1}" for i in first],
            "rest": [f"p{i + 1}" for i in range(len(config.panel)) if i not in first],
            "chosen_by": "price" if _all_priced(config) else "order",
            "agreed": None,
            "rest_called": False,
        }
    return record


def _all_priced(config: FusionConfig) -> bool:
    return all(price_of(spec, config) is not None for spec in config.panel)


def cheapest(config: FusionConfig, k: int) -> list[int]:
    """Panel indices of the k cheapest panelists by the price table (input + output price;
    ties and unknown prices keep panel order); the first k when no price is known."""
    if not _all_priced(config):
        return list(range(k))

    def price(i: int) -> float:
        p = price_of(config.panel[i], config)
        assert p is not None
        return p.input + p.output

    return sorted(sorted(range(len(config.panel)), key=price)[:k])


def early_exit_on(config: FusionConfig) -> bool:
    """The caller's `early_exit`; unset, on for vote and auto (whose agreement test for open
    questions is strict: see agreement_how)."""
    if config.early_exit is not None:
        return config.early_exit
    return config.aggregation in ("vote", "auto")


def agreement_how(config: FusionConfig, applied: str | None, task: str | None = None) -> str:
    """How answers are compared for early exit and a cascade: the caller's `vote_answer`; else
    `auto` for vote (and verify on math, which votes), and for the others only a boxed or marked
    answer (or equal texts), so two essays that end on the same year are not taken to agree."""
    if config.vote_answer is not None:
        return config.vote_answer
    return "auto" if applied == "vote" or (applied == "verify" and task == "math") else "marked"


def tally(
    answers: list[PanelResult],
    how: str,
    weights: dict[str, float] | None = None,
    options: list[str] | None = None,
) -> dict[str, Any]:
    """The vote: each answer's normalised final answer, the counts, the winner or the tie.

    A clear winner has more votes than any other answer, and at least two unless it is the only
    answer; otherwise the leading answers are tied (no answer extracted: all of them are).
    With `weights` (a calibration profile's log odds per member) an answer's votes are the sum
    of its members' weights, and the heaviest answer wins alone: one strong member can outvote
    two weak ones. With the `options` the question lists (and `how` "auto"), an answer's vote
    is the option it picks, by letter or by naming one option's text."""
    per: dict[str, str | None] = {}
    for r in answers:
        picked = option_picked(r["content"], options) if options and how == "auto" else None
        found = picked or extract_answer(r["content"], how)
        per[r["panelist"]] = normalise_answer(found) if found is not None else None
    counts = Counter(a for a in per.values() if a is not None)
    ranked = counts.most_common()
    winner, tied, weighed = None, None, None
    if weights:
        totals: dict[str, float] = {}
        for panelist, answer in per.items():
            if answer is not None:
                totals[answer] = totals.get(answer, 0.0) + weights.get(panelist, MIN_WEIGHT)
        weighed = {a: round(w, 4) for a, w in sorted(totals.items(), key=lambda kv: -kv[1])}
        if weighed:
            top = max(weighed.values())
            leaders = [a for a, w in weighed.items() if w == top]
            winner, tied = (leaders[0], None) if len(leaders) == 1 else (None, leaders)
    elif ranked:
        top = ranked[0][1]
        leaders = [a for a, n in ranked if n == top]
        if len(leaders) == 1 and (top >= 2 or len(answers) == 1):
            winner = leaders[0]
        else:
            tied = leaders
    out: dict[str, Any] = {
        "how": how,
        "answers": per,
        "counts": dict(ranked),
        "winner": winner,
        "tied": tied,
        "decided_by": "most_votes" if winner is not None else "judge",
    }
    if weights:
        out.update(weights=dict(weights), tally=weighed)
        if winner is not None:
            out["decided_by"] = "weighted_votes"
    return out


def after_panel(state: FusionState, config: FusionConfig) -> dict[str, Any]:
    """The gate's decision after a panel wave: the updated record, whose `route` is `rest`
    (dispatch the cascade's other panelists), `finish` (the answer is decided: no judge, no
    synthesis; with the caller's tools bound, `synthesis` from it as a draft) or `judge`."""
    record = dict(state.get("aggregation") or start(config, state.get("messages", [])))
    answers = answered(state.get("panel", []))
    applied = record["applied"] or "synthesize"
    record["applied"] = applied
    if applied == "member":
        chosen = calibrated_member(state, config, record, answers)
        if chosen["route"] is not None:
            return chosen
        record, applied = chosen, chosen["applied"]
    how = agreement_how(config, applied, record.get("task"))
    agreed = answers_agree([r["content"] for r in answers], how) if len(answers) >= 2 else None
    cascade = dict(record["cascade"]) if record.get("cascade") else None
    if cascade is not None and not cascade["rest_called"] and cascade["agreed"] is None:
        cascade["agreed"] = agreed is not None
        cascade["answer"] = agreed
        record["cascade"] = cascade
        if agreed is None:
            cascade["rest_called"] = True
            return {**record, "route": "rest"}
    if agreed is not None and early_exit_on(config):
        return {
            **record,
            "outcome": "early_exit",
            "agreed": agreed,
            "route": finish_route(config),
            "note": f"every answer agreed on {agreed!r}: {_skipped(config)}",
        }
    if applied == "vote" and answers:
        weights = (record.get("calibrated") or {}).get("weights")
        options = options_in(last_user_text(state.get("messages", [])))
        vote = tally(answers, config.vote_answer or "auto", weights, options)
        record["vote"] = vote
        if vote["winner"] is not None:
            return {
                **record,
                "outcome": "vote",
                "route": finish_route(config),
                "note": f"{vote['winner']!r} won the vote: {_skipped(config)}",
            }
        tied = vote["tied"]
        candidates = [p for p, a in vote["answers"].items() if tied is None or a in tied]
        return {
            **record,
            "outcome": "judge",
            "judge_select": True,
            "candidates": candidates,
            "route": "judge",
            "note": "a tie: the judge selects among the tied answers",
        }
    if applied == "verify" and answers:
        return {**record, "outcome": None, "route": "verify", "note": "the answers are run"}
    return {
        **record,
        "outcome": "judge",
        "judge_select": applied in ("select", "verify"),
        "route": "judge",
        "note": "the judge compares the answers",
    }


def calibrated_member(
    state: FusionState, config: FusionConfig, record: dict[str, Any], answers: list[PanelResult]
) -> dict[str, Any]:
    """Calibrated auto asked one member: its answer is final (`route` finish). Without one, the
    run falls back to today's rule: the rest of the panel is asked (`route` rest), or, already
    asked, the rule's strategy goes on over their answers (`route` None)."""
    calibrated = dict(record["calibrated"])
    member = calibrated["member"]
    if any(r["panelist"] == member for r in answers):
        note = f"calibrated: {calibrated['reason']}: {_skipped(config)}"
        return {**record, "outcome": "calibrated", "route": finish_route(config), "note": note}
    applied = calibrated.get("fallback_strategy") or "synthesize"
    calibrated["failed"] = f"{member} gave no answer: today's rule ({applied}) applies instead"
    record = {**record, "applied": applied, "calibrated": calibrated, "route": None}
    called = {r["panelist"] for r in state.get("panel", [])}
    rest = [f"p{i + 1}" for i in range(len(config.panel)) if f"p{i + 1}" not in called]
    if not rest:
        return record
    record["cascade"] = {
        "k": len(called),
        "first": sorted(called),
        "rest": rest,
        "chosen_by": "calibration",
        "agreed": False,
        "rest_called": True,
    }
    return {**record, "route": "rest", "note": calibrated["failed"]}


def _skipped(config: FusionConfig) -> str:
    if config.synthesis_tools:
        return "judge skipped; the synthesizer drafts from it (the caller's tools are bound)"
    return "judge and synthesis skipped"


def finish_route(config: FusionConfig) -> str:
    """A decided answer ends the run, unless the caller bound tools: a panel answer can make no
    tool call (the panel never sees the caller's tools), so the synthesizer writes from it as its
    draft, with the tools bound."""
    return "synthesis" if config.synthesis_tools else "finish"


def selection(state: FusionState) -> str | None:
    """The panelist the judge selected, when the run asked it to and it named a valid one."""
    record = state.get("aggregation") or {}
    judge = state.get("judge") or {}
    if not record.get("judge_select") or not judge.get("ok"):
        return None
    best = (state.get("analysis") or {}).get("best")
    allowed = record.get("candidates") or [r["panelist"] for r in answered(state.get("panel", []))]
    return best if best in allowed else None


def after_judge(state: FusionState) -> str:
    """The judge's conditional edge: `finish` with a valid selection (the caller's tools not
    bound), else `synthesis` (the usual path, and the fallback of a failed selection)."""
    if selection(state) is not None and not scope_of(state).config.synthesis_tools:
        return "finish"
    return "synthesis"


def fallback_reason(state: FusionState) -> str | None:
    """Why a selecting run ended in synthesis instead (None when it did not need to)."""
    record = state.get("aggregation") or {}
    if not record.get("judge_select") or selection(state) is not None:
        return None
    judge = state.get("judge") or {}
    if not judge.get("ok"):
        reason = (judge.get("error") or {}).get("reason", "error")
        return f"the judge failed ({reason}): synthesis from the raw answers instead"
    analysis = state.get("analysis") or {}
    # A label the judge was never shown is dropped from the analysis (nodes/analysis.map_labels).
    unknown = [d["labels"][0] for d in analysis.get("dropped") or () if d["section"] == "best"]
    best = analysis.get("best") or next(iter(unknown), None)
    if not best:
        return "the judge named no best response: synthesis instead"
    return f"the judge named {best!r}, not one of the responses it was shown: synthesis instead"


def verify_fallback(checked: dict[str, Any] | None) -> str | None:
    """Why verify handed the decision to the judge's selection (None: it did not)."""
    if not checked or not checked.get("fallback"):
        return None
    return f"verify: {checked['why']}"


def decided(state: FusionState) -> dict[str, Any] | None:
    """The panel answer that is the final answer, when a strategy decided one: {"panelist",
    "reason", "content"}; None when synthesis writes it."""
    record = state.get("aggregation") or {}
    answers = answered(state.get("panel", []))
    calibrated = record.get("calibrated") or {}
    if record.get("outcome") == "calibrated":
        for r in answers:
            if r["panelist"] == calibrated.get("member"):
                reason = calibrated["reason"]
                return {"panelist": r["panelist"], "reason": reason, "content": r["content"]}
    if record.get("outcome") == "early_exit" and answers:
        first = answers[0]
        reason = f"every answer agreed on {record.get('agreed')!r}; the first in panel order"
        return {"panelist": first["panelist"], "reason": reason, "content": first["content"]}
    checked = record.get("verify") or {}
    if record.get("outcome") == "verify" and checked.get("winner"):
        for r in answers:
            if r["panelist"] == checked["winner"]:
                content = r["content"]
                return {"panelist": r["panelist"], "reason": checked["why"], "content": content}
    vote = record.get("vote") or {}
    if record.get("outcome") == "vote" and vote.get("winner") is not None:
        for r in answers:
            if vote["answers"].get(r["panelist"]) == vote["winner"]:
                count = vote["counts"][vote["winner"]]
                reason = f"{vote['winner']!r} won {count} of {len(answers)} votes"
                if vote.get("tally"):
                    weight, total = vote["tally"][vote["winner"]], sum(vote["tally"].values())
                    reason = f"{vote['winner']!r} won {weight:g} of {total:g} calibrated votes"
                return {"panelist": r["panelist"], "reason": reason, "content": r["content"]}
    chosen = selection(state)
    if chosen is not None:
        reason = (state.get("analysis") or {}).get("best_reason") or "the judge's choice"
        content = next(r["content"] for r in answers if r["panelist"] == chosen)
        return {"panelist": chosen, "reason": reason, "content": content}
    return None


def needs_raw_answers(state: FusionState, config: FusionConfig) -> bool:
    """Whether the synthesizer sees the panel's own answers beside the analysis: asked for; the
    details matter (auto classified code or math); a selection fell back or is the draft; or an
    answer holds a code block that a rewrite from one-sentence items would lose."""
    record = state.get("aggregation") or {}
    return (
        config.include_raw_answers
        or record.get("task") in DETAILED_TASKS
        or bool(record.get("judge_select"))
        or any("```" in r["content"] for r in answered(state.get("panel", [])))
    )


def summary(state: FusionState, config: FusionConfig, *, synthesized: bool) -> dict[str, Any]:
    """`fusion.aggregation` of the run record: what was requested and applied and why, the
    vote, the selection, the cascade, and the calls and cost saved against the full path (every
    panelist, the judge and the synthesizer)."""
    record = state.get("aggregation") or start(config, state.get("messages", []))
    panel = state.get("panel", [])
    judged = bool(state.get("judge"))
    classifier = record.get("classifier")
    checked = record.get("verify")
    verify_judged = bool(checked and checked.get("judge"))
    made = sum(not r.get("cached") for r in panel) + judged + synthesized + bool(classifier)
    made += verify_judged
    full = len(config.panel) + 2 + verify_judged
    choice = decided(state)
    cascade = record.get("cascade")
    final = "synthesis"
    if choice is not None and not synthesized:
        final = {
            "early_exit": "early_exit",
            "vote": "vote",
            "verify": "verify",
            "calibrated": "calibrated",
        }.get(record.get("outcome", ""), "select")
    return {
        "requested": record["requested"],
        "applied": record.get("applied") or "synthesize",
        "reason": record.get("reason"),
        "task": record.get("task"),
        "final": final,
        "early_exit": record.get("outcome") == "early_exit",
        "note": record.get("note"),
        "vote": record.get("vote"),
        "selected": (
            {"panelist": choice["panelist"], "reason": choice["reason"]} if choice else None
        ),
        "draft": choice["panelist"] if choice is not None and synthesized else None,
        "fallback": fallback_reason(state) or verify_fallback(checked),
        "raw_answers": synthesized
        and (state.get("analysis") is None or needs_raw_answers(state, config)),
        "cascade": cascade,
        "classifier": classifier,
        "calibrated": record.get("calibrated"),
        "verify": checked,
        "calls": {"made": made, "full_path": full},
        "saved": {
            "calls": full - made,
            "cost_usd": saved_cost(state, config, judged=judged, synthesized=synthesized),
            "estimated": True,
        },
    }


def saved_cost(
    state: FusionState, config: FusionConfig, *, judged: bool, synthesized: bool
) -> float | None:
    """What the skipped calls would have cost, estimated from this run: a panelist never called
    as the mean usage of those that were, at its own price; a skipped judge or synthesizer as
    reading the prompt and every answer and writing a panel answer's length; minus the
    classifier's and verify's judge call's costs. None when a price it needs is unknown."""
    panel = state.get("panel", [])
    called = {r["panelist"] for r in panel}
    used = [r["usage"] for r in panel if not r.get("cached")] or [r["usage"] for r in panel]
    n = max(len(used), 1)
    mean: Usage = {
        "input_tokens": sum(u["input_tokens"] for u in used) // n,
        "output_tokens": sum(u["output_tokens"] for u in used) // n,
        "total_tokens": 0,
    }
    reader: Usage = {
        "input_tokens": mean["input_tokens"] + sum(u["output_tokens"] for u in used),
        "output_tokens": mean["output_tokens"],
        "total_tokens": 0,
    }
    costs: list[float | None] = []
    for i, spec in enumerate(config.panel):
        if f"p{i + 1}" not in called:
            costs.append(cost_of(mean, price_of(spec, config)))
    if not judged:
        costs.append(cost_of(reader, price_of(config.judge, config)))
    if not synthesized:
        costs.append(cost_of(reader, price_of(config.synthesizer, config)))
    checked = ((state.get("aggregation") or {}).get("verify") or {}).get("judge")
    if checked:  # verify's judge call was made instead
        spent = cost_of(checked.get("usage") or reader, price_of(config.judge, config))
        costs.append(None if spent is None else -spent)
    classifier = (state.get("aggregation") or {}).get("classifier")
    if classifier and config.classifier is not None:
        spent = cost_of(classifier.get("usage") or reader, price_of(config.classifier, config))
        costs.append(None if spent is None else -spent)
    if any(c is None for c in costs):
        return None
    return round(sum(c or 0.0 for c in costs), 8)


def event(record: dict[str, Any]) -> dict[str, Any]:
    """The progress event's fields for a strategy decision."""
    return {k: record.get(k) for k in ("requested", "applied", "task", "reason")}


# --- the gate node ----------------------------------------------------------------------------


async def gate(state: FusionState) -> dict[str, Any]:
    """After each panel wave: apply the strategy's decision (`after_panel`) and report it. It
    also ends the run's start turn when the panel sent no request (cached answers)."""
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
    """The gate's conditional edge: the rest of a cascade's panel, verify, the judge or finish."""
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
