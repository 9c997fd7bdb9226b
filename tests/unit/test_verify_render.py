"""verify's record as `fusiongraph ask` prints it: the matrix of candidates by tests, what each
returned, the tests' reasoning, why the winner won; model text shown literally (markup in a
candidate's output or the judge's reasoning is printed, never applied)."""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console

from fusiongraph.serve.cli_render import show_result
from fusiongraph.tools.sandbox import bwrap_problem
from tests.unit.test_verify_graph import RIGHT, TESTS, WRONG, factory, judge, run

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)
MARKUP = "[bold red]LOUD[/]"


def printed(fusion: dict, answer: str) -> str:
    out = io.StringIO()
    show_result(fusion, answer, Console(file=out, width=220, color_system=None))
    return out.getvalue()


async def test_the_cli_prints_the_matrix_of_candidates_by_tests() -> None:
    loud = f"```python\ndef median(xs):\n    return {MARKUP!r}\n```"
    tests = [{**TESTS[0], "reasoning": f"odd: {MARKUP}"}, *TESTS[1:]]
    content, fusion = await run(factory([WRONG, loud, RIGHT], judge(tests)), aggregation="verify")
    text = printed(fusion, content)
    assert "verify: 3 tests from the judge" in text
    assert "median([4, 1, 3, 2]) → 2.5" in text
    rows = {
        found.group(1): line
        for line in text.splitlines()
        if (found := re.search(r"│ (p\d) +│", line))
    }
    assert "✓ 2" in rows["p1"] and "✗ 3" in rows["p1"] and "2/3" in rows["p1"]
    assert rows["p3"].count("✓") == 3 and "3/3" in rows["p3"]
    assert f"✗ '{MARKUP}'" in rows["p2"]  # the candidate's output, printed as written
    assert f"test 1: odd: {MARKUP}" in text
    assert "verify: p3 passed 3 of 3 tests" in text and "behaviour groups:" in text


async def test_the_cli_prints_the_program_against_the_answers() -> None:
    question = "A box holds 12 eggs. How many eggs are in 7 boxes?"
    answers = ["Answer: 74", "So 74. Answer: 74", "Answer: 84"]
    f = factory(answers, judge(program="print(7 * 12)"))
    content, fusion = await run(f, question, aggregation="verify")
    text = printed(fusion, content)
    assert "verify: the judge's program" in text
    assert "print(7 * 12)" in text and "program output (exited): 84" in text
    assert "the program and the vote disagree" in text
