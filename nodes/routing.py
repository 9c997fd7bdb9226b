"""`auto` aggregation: what kind of request this is, hence how to aggregate its answers.

Fast rules first, on the last user message (a code fence, "write a function", options A-D, a
numeric question, ...); what they cannot decide goes to the optional `classifier` model (the
`classify` node, run beside the panel so it adds no time to the run), else to `synthesize`.

Task kinds are the eval items' (`code`, `math`, `short_answer`, `multiple_choice`, `research`,
`open_ended`); each maps to the strategy that serves it best: code and math -> verify (the
answers are run: code on tests, math against a program the judge writes, then the vote; a
judge's opinion is weak on both and a rewrite loses the working code), short answer / multiple
choice -> vote (the majority carries most of the gain), research / open-ended -> synthesize
(the answer is the combination).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from fusiongraph.graph.calibration import TaskCalibration, load_profile, usable, vote_weight
from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.models import ModelFactory, close_model, quiet
from fusiongraph.graph.pricing import CLASSIFIER_OUTPUT_TOKENS
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import FusionState, empty_usage, estimate_usage, usage_of
from fusiongraph.nodes.failures import describe, failure_reason
from fusiongraph.nodes.images import without_images
from fusiongraph.nodes.messages import last_user_text, text_of
from fusiongraph.nodes.progress import emit
from fusiongraph.nodes.scheduling import run_deadline_cutoff, scope_of

TASK_STRATEGY = {
    "code": "verify",
    "math": "verify",
    "short_answer": "vote",
    "multiple_choice": "vote",
    "research": "synthesize",
    "open_ended": "synthesize",
}
CLASSIFIER_TIMEOUT_S = 30.0
CLASSIFIER_MAX_TOKENS = CLASSIFIER_OUTPUT_TOKENS  # the worst-case estimate assumes the same cap
NOSTREAM: RunnableConfig = {"tags": ["nostream", "fusion:classifier"]}

_I = re.IGNORECASE
_LANGUAGES = (
    r"python|javascript|typescript|java|rust|go(?:lang)?|c\+\+|c#|ruby|php|kotlin|swift|bash|"
    r"shell|sql|haskell|scala|perl|lua|r\b"
)
# (task, pattern, why): the first match decides.
RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("code", re.compile(r"```"), "the request holds a code block"),
    (
        "code",
        re.compile(
            r"\b(?:write|implement|create|code|build|fix|debug|refactor|complete|optimi[sz]e)\b"
            r"[^.?!\n]{0,60}\b(?:function|class|script|program|method|module|regex|query|"
            r"snippet|code|unit tests?|decorator|endpoint|algorithm)\b",
            _I,
        ),
        'it asks to write or fix code ("write a function|class|script ...")',
    ),
    (
        "code",
        re.compile(rf"\b(?:in|using|with)\s+(?:{_LANGUAGES})\b[^.?!\n]{{0,40}}\??$", _I),
        "it names a programming language to write in",
    ),
    (
        "code",
        re.compile(
            r"\bdef \w+\(|\bfunction \w+\(|\bclass \w+[:(]|#include\s*<|\bSELECT\b.+\bFROM\b"
        ),
        "the request holds code",
    ),
    (
        "multiple_choice",
        re.compile(r"(?ms)^\s*\(?[Aa][).:]\s+\S.*^\s*\(?[Bb][).:]\s+\S"),
        "it lists options A, B, ...",
    ),
    (
        "multiple_choice",
        re.compile(r"\bwhich of the following\b|\bchoose (?:one|the correct)\b", _I),
        'it asks to pick an option ("which of the following")',
    ),
    ("math", re.compile(r"\\boxed|\\frac|\$[^$]+\$"), "it is written in math notation"),
    (
        "math",
        re.compile(r"\d\s*(?:[-+*/^×÷]|\*\*)\s*\(?\d|\b\d+\s*(?:%|percent)\s+of\b", _I),
        "it holds arithmetic",
    ),
    (
        "math",
        re.compile(
            r"\b(?:how many|how much|calculate|compute|evaluate|solve|simplify|what is the "
            r"(?:sum|product|value|probability|area|volume|remainder|average|mean)|"
            r"how (?:long|far|fast|old) (?:will|would|does|did|is))\b",
            _I,
        ),
        'it asks for a quantity ("how many", "calculate", ...)',
    ),
    (
        "short_answer",
        re.compile(
            r"^\s*(?:who (?:was|is|wrote|invented|discovered|painted)|what year|in what year|when "
            r"(?:did|was|were)|what is the capital|which (?:country|city|planet|element|year)|"
            r"name the|true or false|yes or no)\b",
            _I,
        ),
        "it asks for a short fact",
    ),
    (
        "research",
        re.compile(
            r"\b(?:compare|comparison|pros and cons|trade-?offs?|research|literature|evidence|"
            r"sources|state of the art|survey|review the|latest|recent)\b",
            _I,
        ),
        "it asks for research or a comparison",
    ),
    (
        "open_ended",
        re.compile(
            r"\b(?:explain|why|how (?:does|do|can|should)|describe|discuss|essay|summari[sz]e|"
            r"overview|recommend|advice|opinion|what are (?:the|some)|ideas|plan|design|"
            r"strategy|story|poem|write (?:an?|the) (?:essay|article|letter|post|email))\b",
            _I,
        ),
        "it is an open question (explain, why, how does ...)",
    ),
]


def classify_by_rules(text: str) -> tuple[str, str] | None:
    """(task kind, why) from the first rule that matches the request, or None."""
    for task, pattern, why in RULES:
        if pattern.search(text):
            return task, why
    return None


def auto_decision(config: FusionConfig, messages: list[Any]) -> dict[str, Any]:
    """What `auto` applies: by rule, or pending (`applied` None) for the classifier node, or
    `synthesize` when neither can say."""
    ruled = classify_by_rules(last_user_text(messages))
    if ruled is not None:
        task, why = ruled
        return {"applied": TASK_STRATEGY[task], "task": task, "reason": f"rule: {why}"}
    if config.classifier is not None:
        return {"applied": None, "task": None, "reason": "no rule matched: the classifier decides"}
    return {
        "applied": "synthesize",
        "task": "open_ended",
        "reason": "no rule matched and no classifier is set: open-ended, synthesize",
    }


def calibrate(
    config: FusionConfig, record: dict[str, Any], task: str | None, *, asked: bool = False
) -> dict[str, Any]:
    """The record with the calibration profile applied to `task` (graph/calibration.py): for
    `auto`, the strategy of the arm that won on this task type, or only the best member
    (`applied` = "member") when no fusion arm beat it significantly; for vote (requested, or
    chosen), the members' weights. A profile it cannot use says why, and today's rules stand.
    `asked`: the whole panel was already asked (beside the classifier), so nothing is saved."""
    if config.calibration is None or config.aggregation not in ("auto", "vote"):
        return record
    profile = load_profile(config.calibration)
    found, why = usable(profile, config, task)
    note: dict[str, Any] = {
        "profile": config.calibration,
        "task_type": task,
        "chosen": None,
        "member": None,
        "weights": None,
        "saved": None,
    }
    rule = record.get("applied")
    if found is None:
        rules = "auto's rules apply" if config.aggregation == "auto" else "a plain plurality vote"
        note["reason"] = f"profile not used: {why}; {rules}"
        return {**record, "calibrated": note}
    note["weights"] = {p: vote_weight(m) for p, m in found.members.items()}
    if config.aggregation == "vote":
        note["reason"] = "votes weighted by each member's calibrated log odds on " + str(task)
        return {**record, "calibrated": note}
    note["chosen"] = found.winner
    note["fallback_strategy"] = rule
    kind, _, what = found.winner.partition(":")
    if kind == "fusion":
        note["reason"] = f"{found.winner} beat the best member on {task}: {found.verdict}"
        return {**record, "applied": what, "calibrated": note, "reason": f"calibrated: {what}"}
    member = found.members[what]
    note["member"] = what
    note["reason"] = (
        f"no fusion arm beat {what} ({member.model}, {member.accuracy:.0%} of {member.n}) "
        f"significantly on {task}: only {what} is asked"
    )
    if asked:
        note["reason"] += " (the panel was asked beside the classifier: its answer is final)"
    note["saved"] = saved_by_member(config, found, what, rule, asked=asked)
    return {**record, "applied": "member", "calibrated": note, "reason": f"calibrated: {what}"}


def saved_by_member(
    config: FusionConfig, found: TaskCalibration, member: str, rule: str | None, *, asked: bool
) -> dict[str, Any]:
    """What asking one member saves against today's rule, per item, as the profile measured."""
    against = found.arms.get(f"fusion:{rule}") or found.arms.get("fusion:auto")
    mine = found.members[member]
    calls = (0 if asked else len(config.panel) - 1) + 2
    out: dict[str, Any] = {"calls": calls, "against": None, "tokens": None, "cost_usd": None}
    if against is not None and not asked:  # asked: the panel's tokens were spent anyway
        out["against"] = against.arm
        if against.tokens_per_item is not None and mine.tokens_per_item is not None:
            out["tokens"] = round(against.tokens_per_item - mine.tokens_per_item)
        if against.cost_per_item is not None and mine.cost_per_item is not None:
            out["cost_usd"] = round(against.cost_per_item - mine.cost_per_item, 8)
    out["estimated_from"] = "profile"
    return out


def classifier_spec(config: FusionConfig) -> ModelSpec:
    """The classifier as it runs: deterministic, a one-word reply."""
    assert config.classifier is not None
    return config.classifier.model_copy(
        update={"temperature": 0.0, "max_tokens": CLASSIFIER_MAX_TOKENS}
    )


CLASSIFY_PROMPT = """Classify the user's request into exactly one of these task kinds:
code (write, fix or explain code), math (a calculation or derivation with one result),
short_answer (one fact: a name, date, number or yes/no), multiple_choice (pick one of given
options), research (needs sources or a comparison), open_ended (an explanation, advice, writing).
Reply with the kind only."""


def parse_task(reply: str) -> str | None:
    """The first task kind named in the classifier's reply."""
    found = re.search("|".join(sorted(TASK_STRATEGY, key=len, reverse=True)), reply.lower())
    return found.group(0) if found else None


def make_classify(model_factory: ModelFactory):
    """The classify node: `auto` with a classifier, when no rule decided. Runs beside the panel."""

    async def classify(state: FusionState) -> dict[str, Any]:
        config = scope_of(state).config
        record = dict(state.get("aggregation") or {})
        spec = classifier_spec(config)
        model = quiet(model_factory(spec))
        started = time.monotonic()
        prompt = [
            SystemMessage(content=CLASSIFY_PROMPT),
            HumanMessage(content=last_user_text(without_images(state["messages"]))[:4000]),
        ]
        info: dict[str, Any] = {"model": spec.name, "ok": False, "error": None}
        info["usage"] = empty_usage()  # a failed call reports nothing
        cutoff = run_deadline_cutoff(state.get("started_at"), config.deadline_s, share=0.6)
        timeout = CLASSIFIER_TIMEOUT_S
        if cutoff is not None:
            timeout = max(min(timeout, cutoff - time.monotonic()), 0.0)
        task = None
        try:
            reply = await asyncio.wait_for(model.ainvoke(prompt, NOSTREAM), timeout)
            usage = usage_of(reply)
            info["usage"] = usage if usage["total_tokens"] else estimate_usage(prompt, reply)
            task = parse_task(text_of(reply))
            if task is None:
                info["error"] = {"reason": "invalid_response", "message": text_of(reply)[:200]}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else failure_reason(exc)
            info["error"] = {"reason": reason, "message": describe(exc, 200)}
        finally:
            await close_model(model)
        info["latency_s"] = round(time.monotonic() - started, 3)
        if task is not None:
            info["ok"] = True
            strategy = TASK_STRATEGY[task]
            why = f"classifier {spec.name}: {task}"
        else:
            strategy, why = "synthesize", f"the classifier failed ({info['error']['reason']})"
        record.update(applied=strategy, task=task, reason=f"{why} -> {strategy}", classifier=info)
        record = calibrate(config, record, task, asked=True)
        emit(
            "aggregation_chosen",
            **{k: record.get(k) for k in ("requested", "applied", "task", "reason")},
        )
        return {"aggregation": record}

    return classify
