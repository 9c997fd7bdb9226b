"""The grader model: verdicts on open answers and pairwise preferences, parsed tolerantly.

It is built through the graph's model factory, so any spec works (`local:smollm2-135m`,
`openai:gpt-5.5`, an object with an OpenAI-compatible base_url), and it runs at temperature 0
unless the spec says otherwise. Every call's usage and cost is returned with its reply and
summed on the grader (`usage`, `cost_usd`, `calls`). A failed call is a reply with an error,
never an exception: the scorers turn it into a Score that says so.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from fusiongraph.graph.config import FusionConfig
from fusiongraph.graph.models import ModelFactory, default_model_factory, prepare_models, quiet
from fusiongraph.graph.pricing import cost_of, price_of
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.graph.state import Usage, add_usage, empty_usage, estimate_usage, usage_of

Verdict = Literal["CORRECT", "PARTIAL", "INCORRECT"]
Preference = Literal["A", "B", "TIE"]
GRADER_TAGS: RunnableConfig = {"tags": ["nostream", "fusion:grader"]}
MAX_SHOWN_CHARS = 12_000  # of each answer shown to the grader

GRADE_SYSTEM = (
    "You grade answers against a reference answer or a rubric. Judge only whether the answer's "
    "content is right and complete, not its length, tone or confidence. An answer that states "
    "every essential point of the reference without contradicting it is CORRECT; one with some "
    "essential points right and none wrong is PARTIAL; one that misses the essential points or "
    "contradicts the reference is INCORRECT. Reply with exactly two lines:\n"
    "VERDICT: CORRECT | PARTIAL | INCORRECT\n"
    "SCORE: <an integer from 0 to 10>\n"
    "then one short sentence saying why."
)
COMPARE_SYSTEM = (
    "You compare two answers to the same question. Prefer the answer that is more correct, "
    "complete and useful; ignore length, style and order of presentation. Reply with one line "
    "'WINNER: A', 'WINNER: B' or 'WINNER: TIE', then one short sentence saying why."
)


@dataclass
class GraderReply:
    """One grader call: its text (None when the call failed), usage, cost and error."""

    text: str | None
    usage: Usage = field(default_factory=empty_usage)
    cost_usd: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Grade:
    verdict: Verdict | None
    value: float | None  # 0..1


def _grader_spec(spec: ModelSpec | str | dict[str, Any]) -> ModelSpec:
    parsed = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
    if parsed.temperature is None:
        parsed = parsed.model_copy(update={"temperature": 0.0})
    return parsed


class Grader:
    """A model that grades: `await grader.ask(system, user)` -> GraderReply."""

    def __init__(
        self,
        spec: ModelSpec | str | dict[str, Any],
        model_factory: ModelFactory = default_model_factory,
    ) -> None:
        self.spec = _grader_spec(spec)
        self.model_factory = model_factory
        self.usage: Usage = empty_usage()
        self.cost_usd: float | None = 0.0
        self.calls = 0
        self.failures = 0
        self._prepared = False
        self._price = price_of(self.spec, _NO_PRICES)

    @property
    def name(self) -> str:
        return self.spec.name

    async def ask(self, system: str, user: str) -> GraderReply:
        """One call; never raises (but is cancellable)."""
        messages = [SystemMessage(system), HumanMessage(user)]
        try:
            if not self._prepared:
                await prepare_models(self.model_factory, [self.spec])
                self._prepared = True
            model = quiet(self.model_factory(self.spec))
            reply = await model.ainvoke(messages, GRADER_TAGS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.calls += 1
            self.failures += 1
            return GraderReply(None, error=f"grader call failed: {type(exc).__name__}: {exc}")
        usage = usage_of(reply)
        if not usage["total_tokens"]:
            usage = estimate_usage(messages, reply)
        cost = cost_of(usage, self._price)
        self._record(usage, cost)
        text = reply.text if isinstance(reply.text, str) else str(reply.content)
        if not text.strip():
            self.failures += 1
            return GraderReply(None, usage, cost, "the grader replied with nothing")
        return GraderReply(text, usage, cost)

    def _record(self, usage: Usage, cost: float | None) -> None:
        self.calls += 1
        self.usage = add_usage(self.usage, usage)
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost


def _no_prices() -> FusionConfig:
    """A plan with no price overrides: price_of then uses the spec's price, the local model's
    zero, or the default table (unknown models cost None: unknown, not free)."""
    spec = ModelSpec(provider="local", model="grader")
    return FusionConfig(preset=None, panel=[spec], judge=spec, synthesizer=spec)


_NO_PRICES = _no_prices()

_VERDICT_RE = re.compile(r"\bverdict\b\W*(correct|partial(?:ly\s+correct)?|incorrect)\b", re.I)
_WORD_RE = re.compile(r"\b(not\s+correct|incorrect|partially\s+correct|partial|correct)\b", re.I)
_SCORE_RE = re.compile(r"\bscore\b\W*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.I)
_FRACTION_RE = re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*10\b")
_WINNER_RE = re.compile(
    r"\b(?:winner|verdict|better(?:\s+answer)?|prefer(?:red)?|choice)\b\W*(?:is\W*)?"
    r"(?:(?:answer|response)\W*)?\b(A|B|tie|neither|both)\b",
    re.I,
)
_NAMED_RE = re.compile(r"\b(?:answer|response)\s+(A|B)\s+is\s+(?:the\s+)?(?:better|stronger)", re.I)
_BRACKET_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.I)


def parse_grade(text: str) -> Grade:
    """A verdict and/or a 0-10 score from a grader's reply, however it was written: "VERDICT:
    CORRECT", a bare "Incorrect.", "Score: 7/10", "8/10". Nothing readable: both None."""
    verdict: Verdict | None = None
    found = _VERDICT_RE.search(text)
    if found is None:  # no VERDICT line: the last verdict word (graders conclude at the end)
        words = list(_WORD_RE.finditer(text))
        found = words[-1] if words else None
    if found:
        word = found.group(1).lower()
        if word.startswith("partial"):
            verdict = "PARTIAL"
        elif word.startswith(("incorrect", "not")):
            verdict = "INCORRECT"
        else:
            verdict = "CORRECT"
    value = None
    score = _SCORE_RE.search(text) or _FRACTION_RE.search(text)
    if score:
        points = float(score.group(1))
        scale = float(score.group(2)) if score.re is _SCORE_RE and score.group(2) else 10.0
        if scale > 0 and 0 <= points <= scale:
            value = points / scale
    if value is None and verdict is not None:
        value = {"CORRECT": 1.0, "PARTIAL": 0.5, "INCORRECT": 0.0}[verdict]
    if verdict is None and value is not None:
        verdict = "CORRECT" if value >= 0.7 else "PARTIAL" if value >= 0.4 else "INCORRECT"
    return Grade(verdict, value)


def parse_preference(text: str) -> Preference | None:
    """ "WINNER: A" / "B" / "TIE" (also "[[A]]", "Response B is better", a lone "A")."""
    found = _BRACKET_RE.search(text)
    if found:
        return _preference(found.group(1).upper(), ties=("C", "TIE"))
    found = _WINNER_RE.search(text) or _NAMED_RE.search(text)
    if found is None:
        lone = re.fullmatch(
            r"\W*(A|B|tie)\W*", text.strip().splitlines()[0] if text.strip() else "", re.I
        )
        if lone is None:
            return None
        choice = lone.group(1).upper()
    else:
        choice = found.group(1).upper()
    return _preference(choice, ties=("TIE", "NEITHER", "BOTH"))


def _preference(choice: str, *, ties: tuple[str, ...]) -> Preference:
    """A captured choice, upper case: one of `ties` is a tie; the patterns leave only A or B."""
    if choice in ties:
        return "TIE"
    return "A" if choice == "A" else "B"


def grade_prompt(question: str, answer: str, reference: str | None, rubric: str | None) -> str:
    parts = [f"## Question\n{question}"]
    if reference:
        parts.append(f"## Reference answer\n{reference}")
    if rubric:
        parts.append(f"## Rubric\n{rubric}")
    parts.append(f"## Answer to grade\n{_shown(answer)}")
    parts.append("Grade the answer: VERDICT and SCORE lines, then why.")
    return "\n\n".join(parts)


def compare_prompt(
    question: str, first: str, second: str, reference: str | None, rubric: str | None
) -> str:
    parts = [f"## Question\n{question}"]
    if reference:
        parts.append(f"## Reference answer (for your judgement only)\n{reference}")
    if rubric:
        parts.append(f"## Rubric\n{rubric}")
    parts.append(f"## Answer A\n{_shown(first)}")
    parts.append(f"## Answer B\n{_shown(second)}")
    parts.append("Which answer is better? Reply WINNER: A, WINNER: B or WINNER: TIE, then why.")
    return "\n\n".join(parts)


def _shown(answer: str) -> str:
    if len(answer) <= MAX_SHOWN_CHARS:
        return answer
    return answer[:MAX_SHOWN_CHARS] + "\n[... cut]"
