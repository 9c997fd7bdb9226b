"""The README's configuration table names exactly the context's settings (one schema)."""

from __future__ import annotations

import re
from pathlib import Path

from fusiongraph.graph.config import CONTEXT_FIELDS

README = Path(__file__).resolve().parents[2] / "README.md"


def _table_fields() -> set[str]:
    text = README.read_text()
    table = text.split("| field | meaning | default |", 1)[1].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        names |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return names


def test_the_readme_table_lists_every_context_setting() -> None:
    assert _table_fields() == set(CONTEXT_FIELDS)
