"""The eval item and the task-file rows it is read from (JSONL or CSV).

A row is an object (a JSONL line, or a CSV record with one column per field):

- `input` (text of one user message) or `messages` (a list of {"role", "content"}; in CSV, its
  JSON text): the conversation to answer. Exactly one of the two.
- `target`: the reference answer (for code: unused; for multiple choice: the option letter, or
  the text of the right option).
- `task_type`: code | math | short_answer | multiple_choice | research | open_ended. When left out
  it is inferred: `tests` -> code, `choices` -> multiple_choice, else short_answer when there is a
  target, else open_ended.
- `scorer`: exact | choice | code | graded. Unset: by task type (code -> code, math and
  short_answer -> exact, multiple_choice -> choice, research and open_ended -> graded).
- `tests` (Python unit tests for code: plain asserts, `def check(candidate)` called with the
  `entry_point` function, and/or `test_*` functions), `entry_point`, `choices` (a list of option
  texts; in CSV, JSON text or options separated by `|`), `rubric` (what a grader looks for),
  `answer_how` (how to pull the final answer out of a reply: auto | number | letter | boxed |
  marked | regex:<pattern> | json:<field>), `id` (unique; default `<file stem>-<line>`),
  `source`, `metadata` (an object of anything else; in CSV, JSON text).

Every error names the file, the line and the field (`EvalTaskError`, a ValueError).
"""

from __future__ import annotations

import json
import string
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fusiongraph.graph.answers import check_how

TaskType = Literal["code", "math", "short_answer", "multiple_choice", "research", "open_ended"]
ScorerName = Literal["exact", "choice", "code", "graded"]

TASK_TYPES: tuple[str, ...] = get_args(TaskType)
DEFAULT_SCORER: dict[str, str] = {
    "code": "code",
    "math": "exact",
    "short_answer": "exact",
    "multiple_choice": "choice",
    "research": "graded",
    "open_ended": "graded",
}
FIELDS = (
    "id",
    "input",
    "messages",
    "target",
    "task_type",
    "scorer",
    "tests",
    "entry_point",
    "choices",
    "rubric",
    "answer_how",
    "source",
    "metadata",
)
LETTERS = string.ascii_uppercase[:8]  # what extract_answer's "letter" reads: A-H
ROLES = ("system", "user", "assistant")


class EvalTaskError(ValueError):
    """A task file, row or suite that cannot be used; the message names file, line and field."""


class EvalItem(BaseModel):
    """One task: the conversation to answer and what a right answer is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    task_type: TaskType
    messages: list[dict[str, str]] = Field(min_length=1)
    target: str | None = None
    scorer: ScorerName | None = Field(default=None, description="unset: by task type")
    tests: str | None = None
    entry_point: str | None = None
    choices: list[str] | None = None
    rubric: str | None = None
    answer_how: str = "auto"
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _messages_shape(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, message in enumerate(value):
            if set(message) != {"role", "content"}:
                raise ValueError(f"message {i} must have exactly `role` and `content`")
            if message["role"] not in ROLES:
                raise ValueError(f"message {i}: role must be one of {', '.join(ROLES)}")
        if value[-1]["role"] != "user":
            raise ValueError("the last message must be the user's")
        return value

    @field_validator("answer_how")
    @classmethod
    def _known_how(cls, value: str) -> str:
        check_how(value)
        return value

    @property
    def effective_scorer(self) -> str:
        """The scorer that applies: the item's own, else its task type's."""
        return self.scorer or DEFAULT_SCORER[self.task_type]

    @property
    def question(self) -> str:
        """The last user message: what a grader is shown as the question."""
        return self.messages[-1]["content"]


def item_from_row(row: dict[str, Any], *, where: str, default_id: str) -> EvalItem:
    """A validated item from one row; `where` ("tasks.jsonl line 3") prefixes every error."""
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise EvalTaskError(
            f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)}; "
            "put anything else under `metadata`)"
        )
    data = {k: v for k, v in row.items() if v is not None and v != ""}
    data["messages"] = _conversation(data, where)
    data.pop("input", None)
    data.setdefault("id", default_id)
    if not isinstance(data["id"], str):
        data["id"] = str(data["id"])
    data.setdefault("task_type", _inferred_task_type(data))
    try:
        item = EvalItem.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "row"
        raise EvalTaskError(f"{where}: field {field!r}: {error['msg']}") from None
    return _checked(_with_option_letters(item, where), where)


def _conversation(data: dict[str, Any], where: str) -> Any:
    has_input, has_messages = "input" in data, "messages" in data
    if has_input == has_messages:
        raise EvalTaskError(f"{where}: give exactly one of `input` and `messages`")
    if has_input:
        if not isinstance(data["input"], str) or not data["input"].strip():
            raise EvalTaskError(f"{where}: field 'input': must be non-empty text")
        return [{"role": "user", "content": data["input"]}]
    messages = data["messages"]
    if isinstance(messages, str):  # CSV: JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise EvalTaskError(f"{where}: field 'messages': not valid JSON ({exc.msg})") from None
    if not isinstance(messages, list):
        raise EvalTaskError(f"{where}: field 'messages': must be a list of role/content objects")
    return messages


def _inferred_task_type(data: dict[str, Any]) -> str:
    if data.get("tests"):
        return "code"
    if data.get("choices"):
        return "multiple_choice"
    return "short_answer" if data.get("target") is not None else "open_ended"


def _with_option_letters(item: EvalItem, where: str) -> EvalItem:
    """A multiple-choice target given as the option's text becomes its letter, and options
    given as `choices` are shown in the question unless it lists them already."""
    if not item.choices:
        return item
    if len(item.choices) > len(LETTERS):
        raise EvalTaskError(f"{where}: field 'choices': at most {len(LETTERS)} options")
    letters = LETTERS[: len(item.choices)]
    update: dict[str, Any] = {}
    target = (item.target or "").strip()
    if target and target.upper().strip("().") not in letters and target in item.choices:
        update["target"] = letters[item.choices.index(target)]
    elif target:
        update["target"] = target.upper().strip("().")
    question = item.messages[-1]["content"]
    if not _lists_options(question, letters):
        options = "\n".join(
            f"{letter}. {choice}" for letter, choice in zip(letters, item.choices, strict=False)
        )
        shown = f"{question}\n\n{options}\n\nAnswer with the letter of the correct option."
        update["messages"] = [*item.messages[:-1], {"role": "user", "content": shown}]
    return item.model_copy(update=update)


def _lists_options(question: str, letters: str) -> bool:
    """The question already shows its options: a line per letter ("A. ...", "(B) ...")."""
    starts = {line.strip()[:3] for line in question.splitlines()}
    return all(
        any(start.startswith((f"{letter}.", f"{letter})", f"({letter})")) for start in starts)
        for letter in letters
    )


def _checked(item: EvalItem, where: str) -> EvalItem:
    """What each scorer needs, present: a scorer that cannot score the item fails at load."""
    scorer = item.effective_scorer
    if scorer == "code" and not item.tests:
        raise EvalTaskError(f"{where}: field 'tests': a code item needs unit tests")
    if scorer in ("exact", "choice") and not item.target:
        raise EvalTaskError(f"{where}: field 'target': the {scorer!r} scorer needs a target")
    if scorer == "choice":
        count = len(item.choices) if item.choices else len(LETTERS)
        if item.target is None or item.target not in LETTERS[:count]:
            allowed = LETTERS[:count]
            raise EvalTaskError(
                f"{where}: field 'target': must be an option letter {allowed[0]}-{allowed[-1]} "
                f"(or the text of one of `choices`), not {item.target!r}"
            )
    if scorer == "graded" and not (item.target or item.rubric):
        raise EvalTaskError(
            f"{where}: field 'target': a graded item needs a reference answer or a `rubric`"
        )
    return item
