"""The documented settings are the context schema's, and the README points at every surface.

The Configuration page's table is generated from `FusionContext` when the site is built
(docs/hooks/context_table.py); these tests check what that generation relies on.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from fusiongraph.graph.config import CONTEXT_FIELDS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "context_table", ROOT / "docs/hooks/context_table.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_table_lists_every_context_setting_with_a_description() -> None:
    hook = _hook()
    rows = hook.context_rows()
    assert {name for name, *_ in rows} == set(CONTEXT_FIELDS)
    assert all(description for *_, description in rows), "a setting without a description"
    page = (ROOT / "docs/configuration.md").read_text()
    rendered = hook.on_page_markdown(page)
    assert hook.MARKER in page and hook.MARKER not in rendered
    assert hook.context_table() in rendered
    names = re.findall(r"^\| `([a-z_]+)` \|", hook.context_table(), re.M)
    assert sorted(names) == sorted(CONTEXT_FIELDS)


def test_the_table_shows_the_plans_defaults() -> None:
    rows = {name: default for name, _, default, _ in _hook().context_rows()}
    assert rows["max_tool_calls"] == "`8`"
    assert rows["aggregation"] == "`synthesize`"
    assert rows["panel"] == "—"  # the preset's


def test_the_readme_fits_two_screens_and_links_every_surface_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = set(re.findall(r"\]\(([^)#]+)", text))
    for page in sorted((ROOT / "docs/surfaces").glob("*.md")):
        assert f"docs/surfaces/{page.name}" in links, page.name
    for link in links - {link for link in links if link.startswith("http")}:
        assert (ROOT / link).exists(), link


def test_no_commit_hashes_or_dates_in_the_readme_or_docs() -> None:
    """Measurements and their stamps live in bench/RESULTS.md (the Benchmarks page includes it)."""
    stamp = re.compile(
        r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"  # a commit
        r"|\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b|\b[0-2]?[0-9]:[0-5][0-9] UTC\b"  # a date, a time
        r"|\b[0-3]?[0-9] (January|February|March|April|May|June|July|August|September|October"
        r"|November|December)\b"
    )
    for page in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        found = [m.group(0) for m in stamp.finditer(page.read_text())]
        assert not found, f"{page.relative_to(ROOT)}: {found}"
