"""`auto`'s fast rules on a table of example requests: the task kind, hence the strategy."""

from __future__ import annotations

import pytest

from fusiongraph.graph.config import STRATEGIES
from fusiongraph.nodes.routing import TASK_STRATEGY, classify_by_rules, parse_task

EXAMPLES = [
    # code -> verify
    ("Write a Python function that reverses a linked list.", "code"),
    ("Can you implement a class for an LRU cache?", "code"),
    ("Fix this:\n```js\nconst x = [1,2,3].map(x => x * 2\n```", "code"),
    ("Write a bash script that renames every .txt file", "code"),
    ("Why does `def f(x=[]):` keep its list between calls? def f(x=[]): ...", "code"),
    ("Write a SQL query returning the ten largest orders", "code"),
    ("How do I parse a date in rust?", "code"),
    # multiple choice -> vote
    ("Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nD) Earth", "multiple_choice"),
    ("Which of the following is a prime number: 21, 23, 25?", "multiple_choice"),
    # math -> verify (its math path: a program, then the vote)
    ("What is 17 * 23?", "math"),
    ("How many r's are in strawberry?", "math"),
    ("Calculate the compound interest on $1000 at 5% for 3 years.", "math"),
    ("Solve for x: 2x + 3 = 11", "math"),
    ("What is 15% of 80?", "math"),
    ("Simplify $\\frac{6}{8}$", "math"),
    ("If a train leaves at 3pm at 60 km/h, how far will it travel by 5pm?", "math"),
    # short answer -> vote
    ("Who wrote Pride and Prejudice?", "short_answer"),
    ("What is the capital of Australia?", "short_answer"),
    ("In what year did the Berlin Wall fall?", "short_answer"),
    ("True or false: sound travels faster in water than in air.", "short_answer"),
    # research -> synthesize
    ("Compare PostgreSQL and MySQL for a write-heavy workload.", "research"),
    ("What is the latest evidence on intermittent fasting?", "research"),
    ("Pros and cons of nuclear power", "research"),
    # open-ended -> synthesize
    ("Explain how vaccines train the immune system.", "open_ended"),
    ("Why is the sky blue?", "open_ended"),
    ("Write an essay about the sea.", "open_ended"),
    ("Give me ideas for a birthday party.", "open_ended"),
    ("How does TCP congestion control work?", "open_ended"),
]


@pytest.mark.parametrize(("text", "task"), EXAMPLES)
def test_rules_classify_example_requests(text: str, task: str) -> None:
    found = classify_by_rules(text)
    assert found is not None and found[0] == task, found


@pytest.mark.parametrize("text", ["Lighthouses", "Tell me about lighthouses", "Paris"])
def test_what_no_rule_decides_is_left_to_the_classifier(text: str) -> None:
    assert classify_by_rules(text) is None


def test_every_task_maps_to_a_known_strategy() -> None:
    assert set(TASK_STRATEGY.values()) <= set(STRATEGIES)
    # code and math are checked by execution (verify); short answers and options are voted
    assert TASK_STRATEGY["code"] == "verify" and TASK_STRATEGY["math"] == "verify"
    assert TASK_STRATEGY["short_answer"] == TASK_STRATEGY["multiple_choice"] == "vote"
    assert TASK_STRATEGY["open_ended"] == "synthesize"


@pytest.mark.parametrize(
    ("reply", "task"),
    [
        ("code", "code"),
        ("Short_answer.", "short_answer"),
        ("The kind is: multiple_choice", "multiple_choice"),
        ("open_ended", "open_ended"),
        ("no idea", None),
    ],
)
def test_the_classifier_reply_is_read_tolerantly(reply: str, task: str | None) -> None:
    assert parse_task(reply) == task
