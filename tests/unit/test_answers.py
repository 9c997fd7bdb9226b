"""Answer extraction and normalisation: what vote, early exit and the eval scorers compare."""

from __future__ import annotations

import pytest

from fusiongraph.graph.answers import (
    answers_agree,
    check_how,
    extract_answer,
    named_option,
    normalise_answer,
    option_picked,
    options_in,
)

EXTRACTED = [
    # (text, how, extracted as written, normalised)
    ("So the answer is \\boxed{\\frac{1}{2}}.", "auto", "\\frac{1}{2}", "0.5"),
    ("First \\boxed{3}, then corrected: \\boxed{x^{2}}", "boxed", "x^{2}", "x^{2}"),
    ("Adding them up, the final answer is 1,000.", "auto", "1,000", "1000"),
    ("Reasoning...\nAnswer: (b)", "auto", "(b)", "B"),
    ("**Answer:** **C**", "auto", "C", "C"),
    ("The answer is **B**.", "auto", "B", "B"),
    ("**Final Answer:** 3.50.", "auto", "3.50", "3.5"),
    ("I think the correct option is (D).", "auto", "(D)", "D"),
    ("B", "auto", "B", "B"),
    ("(c)", "auto", "C", "C"),
    ("B) Paris is the capital", "auto", "B", "B"),
    ("Of the four, I choose option C because it is cheapest.", "auto", "C", "C"),
    ("We walk 3 km, then 4 km more: 7 km in total", "auto", "7", "7"),
    ("It costs $3.50 in total.", "auto", "3.50", "3.5"),
    ("The capital of France is Paris.", "auto", None, None),
    ("a. dog is an animal", "letter", None, None),
    ("The answer: 42 apples", "number", "42", "42"),
    ("Between 1999 and 2020", "number", "2020", "2020"),
    ("Answer: B", "letter", "B", "B"),
    ("No boxed answer here: 5", "boxed", None, None),
    ("The total is 12 but 5 is prime", "marked", None, None),
    ("The answer is 12 apples", "marked", "12 apples", "12"),
    ("id=42; code=77", r"regex:code=(\d+)", "77", "77"),
    ("status ok", "regex:ok", "ok", "ok"),
    ('Result: {"a": {"b": [1, {"c": "Yes"}]}} done', "json:a.b.1.c", "Yes", "yes"),
    ('```json\n{"answer": 2.50}\n```', "json:answer", "2.5", "2.5"),
    ('{"answer": 1}', "json:missing", None, None),
    ("", "auto", None, None),
]


@pytest.mark.parametrize(("text", "how", "extracted", "normalised"), EXTRACTED)
def test_extract_and_normalise(
    text: str, how: str, extracted: str | None, normalised: str | None
) -> None:
    got = extract_answer(text, how)
    assert got == extracted
    assert (normalise_answer(got) if got is not None else None) == normalised


NORMALISED = [
    ("1,000", "1000"),
    ("1,000.50", "1000.5"),
    ("2.50", "2.5"),
    ("3.0", "3"),
    ("$3", "3"),
    ("\\$3.00", "3"),
    ("3 km", "3"),
    ("about 7 km/h", "7"),
    ("50%", "50"),
    ("50\\%", "50"),
    ("1/2", "0.5"),
    ("\\dfrac{3}{4}", "0.75"),
    ("1e3", "1000"),
    ("-0.0", "0"),
    ("x = 4", "4"),
    ("(b)", "B"),
    ("B.", "B"),
    ("**B**", "B"),
    ("(b) Paris", "B"),
    ("Paris.", "paris"),
    ("  Hello   World! ", "hello world"),
    ("$x^2$", "x^2"),
    ("1,5", "1,5"),  # not a thousands separator: left as written
]


@pytest.mark.parametrize(("answer", "normalised"), NORMALISED)
def test_normalise_answer(answer: str, normalised: str) -> None:
    assert normalise_answer(answer) == normalised


def test_answers_agree_on_the_extracted_answer() -> None:
    texts = ["The answer is 4.", "2 + 2 = 4, so \\boxed{4}", "Answer: 4.0"]
    assert answers_agree(texts) == "4"
    assert answers_agree(["The answer is 4.", "The answer is 5."]) is None


def test_answers_agree_on_equal_texts_when_nothing_is_extracted() -> None:
    assert answers_agree(["Paris is lovely", "paris   is LOVELY"]) == "paris is lovely"
    assert answers_agree(["Paris is lovely", "Rome is lovely"]) is None


def test_answers_agree_needs_every_text() -> None:
    assert answers_agree([]) is None
    # One text yields no answer: no agreement on answers, and the texts differ.
    assert answers_agree(["The answer is 4.", "I cannot tell."]) is None
    assert answers_agree(["7"], "number") == "7"


def test_answers_agree_with_a_caller_regex() -> None:
    texts = ["verdict=YES because...", "after checking, verdict=yes"]
    assert answers_agree(texts, "regex:verdict=(\\w+)") == "yes"


@pytest.mark.parametrize("how", ["nope", "regex:(", "json:", "json:  "])
def test_bad_how_is_refused(how: str) -> None:
    with pytest.raises(ValueError):
        check_how(how)
    with pytest.raises(ValueError):
        extract_answer("text", how)


SHIFT = 'def encode_shift(s):\n    return "".join(chr((ord(c) + {k} - 97) % 26 + 97) for c in s)\n'


def test_a_number_inside_code_is_not_an_answer() -> None:
    """Three different functions that all contain `% 26` once "agreed on 26" and early exit
    returned the first (broken) one: code answers now have no extracted answer, so a vote on
    them is a tie for the judge, and nothing agrees but equal texts."""
    answers = [f"```python\n{SHIFT.format(k=k)}```" for k in (5, 21, 5)]
    assert [extract_answer(a) for a in answers] == [None, None, None]
    assert answers_agree(answers[:2]) is None
    assert answers_agree([answers[0], answers[2]]) is not None  # the same code does agree
    # prose around code still commits to its answer; a one-line unlabelled fence is an answer
    assert extract_answer(f"```python\n{SHIFT.format(k=5)}```\nThe answer is 42.") == "42"
    assert extract_answer("It prints:\n```\n42\n```") == "42"
    assert extract_answer("```py\nprint(7 * 12)\n```\nSo 84 eggs. Answer: 84") == "84"


def test_the_options_a_question_lists_and_the_one_an_answer_picks() -> None:
    question = "Symbol for gold?\n\nA. Ag\nB) Au\n(C) Gd\nD. Go\n\nAnswer with the letter."
    options = options_in(question)
    assert options == ["Ag", "Au", "Gd", "Go"]
    assert options_in("Steps:\n1. mix\n2. bake") == [] and options_in("B. only\nC. two") == []
    assert option_picked("Its symbol is Au, atomic number 79.", options) == "B"
    assert option_picked("The answer is (C).", options) == "C"
    assert option_picked("Either Ag or Au.", options) is None  # names two: picks none
    assert named_option("go for it", ["Go"]) == "A" and named_option("gone", ["Go"]) is None
