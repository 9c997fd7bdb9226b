"""A mkdocs hook: the Architecture page's map of modules, read from their docstrings.

`<!-- module-map -->` becomes one table per package folder: each module and the first sentence
of its docstring (read with `ast`, nothing is imported), so a module that is added, moved or
deleted changes the page by itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- module-map -->"
FOLDERS = ("fusiongraph", "graph", "nodes", "tools", "local_model", "serve", "evals")


def first_sentence(path: Path) -> str:
    """The docstring's first sentence, on one line (empty when the module has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).replace("|", "\\|")


def module_map() -> str:
    """A Markdown table per folder: module, what it is for."""
    parts = []
    for folder in FOLDERS:
        modules = [m for m in sorted((ROOT / folder).glob("*.py")) if first_sentence(m)]
        rows = [f"| `{folder}/{m.name}` | {first_sentence(m)} |" for m in modules]
        parts.append("\n".join([f"### {folder}/", "", "| module | what it is for |", "|---|---|"]))
        parts[-1] += "\n" + "\n".join(rows)
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: replace the marker with the generated tables."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, module_map())
