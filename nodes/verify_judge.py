"""verify's one judge call: the tests (code) or the program (math), as structured output.

The judge writes from the request alone: for code it also sees the signatures the answers
define (so its tests call the function they wrote), never their bodies, so its expected values
are its own and not copied from a candidate. The call uses the judge's strongest
structured-output method (as nodes/judge.py does: native function calling, a JSON schema, a
llama.cpp grammar) and falls back to a prompt parsed tolerantly; every reply's usage is kept,
parsed or not, because it was paid for.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import re
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ValidationError

from fusiongraph.graph.answers import extract_code
from fusiongraph.graph.specs import StructuredMethod
from fusiongraph.graph.state import Usage
from fusiongraph.nodes.analysis import inline_refs
from fusiongraph.nodes.failures import NamedFailure, describe, failure_reason
from fusiongraph.nodes.judge import ask_structured

NOSTREAM: RunnableConfig = {"tags": ["nostream", "fusion:judge", "fusion:verify"]}
MAX_TASK_CHARS = 8000
Schema = TypeVar("Schema", bound=BaseModel)

TESTS_PROMPT = """You write test cases that decide which candidate solution of a programming task
is correct: every candidate is run on your tests, and what you write as expected is taken as the
truth. Name the function the solution must define (entry_point) and write 4 to 8 tests: the
positional arguments as JSON values, the exact result the correct function returns as a JSON
value, and one line of reasoning that works the result out. Cover ordinary and edge cases. Work
out each expected result step by step before writing it: a wrong expected value makes a correct
solution fail.
Reply with a JSON object only, of this form:
{"entry_point": "name", "tests": [{"args": [...], "expected": ..., "reasoning": "..."}]}"""

PROGRAM_PROMPT = """You check the answer to a question by computing it. Write a short Python
program (standard library only, no input, no files, no network) that computes the answer and
prints it alone on its last line: a number as a plain number, no units. Compute it; do not print a
value you worked out by hand.
Reply with a JSON object only, of this form: {"program": "...", "reasoning": "..."}"""


def signatures(answers: list[str]) -> list[str]:
    """The `def` lines of the top-level functions the answers define, without repeats."""
    found: list[str] = []
    for text in answers:
        try:
            tree = ast.parse(extract_code(text))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                line = f"def {node.name}({ast.unparse(node.args)}):"
                if line not in found:
                    found.append(line)
    return found[:10]


def tests_messages(question: str, answers: list[str]) -> list[Any]:
    shown = "\n".join(signatures(answers)) or "(none could be read)"
    # The request as the judge's own prompt has it (the caller's text, not the panel's): its
    # doctest examples intact. The signatures come from answers: one line each, as code.
    user = (
        f"The task:\n{question[:MAX_TASK_CHARS]}\n\n"
        f"The functions the candidate solutions define (signatures only):\n{shown}"
    )
    return [SystemMessage(content=TESTS_PROMPT), HumanMessage(content=user)]


def program_messages(question: str) -> list[Any]:
    user = f"The question:\n{question[:MAX_TASK_CHARS]}"
    return [SystemMessage(content=PROGRAM_PROMPT), HumanMessage(content=user)]


def response_format(schema: type[BaseModel], method: StructuredMethod) -> dict[str, Any]:
    """The body field that asks for `schema`: OpenAI's json_schema (not strict: expected values
    are any JSON), or llama.cpp's json_object with a schema (a grammar)."""
    body = inline_refs(schema.model_json_schema())
    if method == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": body, "strict": False},
        }
    return {"type": "json_object", "schema": body}


def parse_reply(text: str, schema: type[Schema]) -> Schema:
    """The JSON object in a reply (fenced, or with prose around it), validated."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise NamedFailure("invalid_response", "no JSON object in the judge's reply")
    try:
        return schema.model_validate(json.loads(match.group(0), strict=False))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise NamedFailure("invalid_response", describe(exc, 200)) from None


async def ask_judge(
    model: BaseChatModel,
    method: StructuredMethod,
    messages: list[Any],
    schema: type[Schema],
    spent: list[Usage],
) -> Schema:
    """The judge's reply as `schema`: its structured method, then the prompt alone. Raises a
    NamedFailure naming what each attempt did when neither gives one."""
    notes: list[str] = []
    reasons: list[str] = []
    last: Exception | None = None
    for attempt in dict.fromkeys([method, "prompt"]):
        try:
            return await ask_structured(
                model,
                attempt,
                messages,
                spent,
                schema=schema,
                response_format=functools.partial(response_format, schema),
                parse=functools.partial(parse_reply, schema=schema),
                config=NOSTREAM,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            last = exc
            reasons.append(failure_reason(exc))
            notes.append(f"{attempt}: {describe(exc, 200)}")
    upstream = [r for r in reasons if r != "invalid_response"]
    reason = upstream[-1] if upstream else "invalid_response"
    raise NamedFailure(reason, "; ".join(notes)) from last
