"""verify's record in the playground, in a real browser: the matrix of candidates by tests, each
cell passed or not with what the candidate returned, the winner and why; a candidate whose
output is HTML shows it as text (it can neither add an element nor run a handler)."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from fusiongraph.tools.sandbox import bwrap_problem
from tests.browser.conftest import HOSTILE_MODEL
from tests.browser.test_playground import ask, open_playground, page, wait_done  # noqa: F401
from tests.support.upstream import Behaviour, FakeUpstream, UpstreamServer

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap: {bwrap_problem()}"),
]
RIGHT = "```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n" + (
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```"
)
HTML = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE = f"```python\ndef median(xs):\n    return {HTML!r}\n```"
TESTS = {
    "entry_point": "median",
    "tests": [
        {"args": [[3, 1, 2]], "expected": 2, "reasoning": "odd length"},
        {"args": [[4, 1, 3, 2]], "expected": 2.5, "reasoning": "even length"},
    ],
}


@pytest.fixture
def scripted_verify(upstream: UpstreamServer) -> Iterator[None]:
    """HOSTILE_MODEL's panel answers the right code and the HTML-returning one; its judge
    writes verify's tests (its analysis stays the upstream's usual one)."""
    fake = typing.cast(FakeUpstream, upstream.app)
    scripted = {
        "hostile-panel-a": RIGHT,
        "hostile-panel-b": HOSTILE,
        "judge-0.3s": json.dumps(TESTS),
    }
    for name, text in scripted.items():
        fake.models[name] = Behaviour(ttft_s=0.05, chunks=2, chunk_delay_s=0.02, content=text)
    yield
    for name in scripted:
        fake.models.pop(name, None)


def test_verify_shows_its_matrix_and_model_html_as_text(
    page: Any,  # noqa: F811
    server: str,
    scripted_verify: None,
) -> None:
    open_playground(page, server)
    page.select_option("#model-select", HOSTILE_MODEL)
    page.click("#strategy-box summary")
    page.select_option("#setting-aggregation", label="verify")
    ask(page, "Write a Python function median(xs) returning the median of a list.")
    wait_done(page, 1)
    matrix = page.locator(".aggregation .verify table.verify-matrix")
    matrix.wait_for(state="attached")
    headers = matrix.locator("thead th").all_inner_texts()
    assert headers == [
        "candidate",
        "1. median([3, 1, 2]) → 2",
        "2. median([4, 1, 3, 2]) → 2.5",
        "passed",
    ]
    rows = {
        row.get_attribute("data-panelist"): row.locator("td").all_inner_texts()
        for row in matrix.locator("tbody tr").all()
    }
    assert rows["p1"] == ["✓ 2", "✓ 2.5", "2/2"]
    assert rows["p2"] == [f"✗ {HTML!r}"] * 2 + ["0/2"]
    assert matrix.locator("tbody tr.winner").get_attribute("data-panelist") == "p1"
    assert "p1 passed 2 of 2 tests" in page.inner_text(".aggregation .verify")
    assert page.locator(".aggregation .verify img").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
    assert page.inner_text(".run .answer").strip().startswith("def median")
    cost_rows = page.locator("table.cost-table tbody th").all_inner_texts()
    assert "verify (tests)" in cost_rows  # its judge call, counted apart
    assert "verify decided by running the answers" in page.inner_text(".run .judge")
