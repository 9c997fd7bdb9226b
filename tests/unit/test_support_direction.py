"""The tests and the benchmark share one support package, in one direction: bench may import
tests.support, tests.support never imports bench or a test module, and no test imports bench.

Static, like test_layers.py: every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def offences(folder: str, refused: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imports(path):
            hit = any(name == r or name.startswith(f"{r}.") for r in refused)
            if hit and not any(name == a or name.startswith(f"{a}.") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize(
    ("folder", "refused", "allowed"),
    [
        ("tests", ("bench",), ()),
        ("tests/support", ("tests",), ("tests.support",)),
        ("bench", ("tests",), ("tests.support",)),
    ],
    ids=["tests-never-import-bench", "support-imports-only-support", "bench-imports-only-support"],
)
def test_imports_point_one_way(folder: str, refused: tuple[str, ...], allowed: tuple[str, ...]):
    assert offences(folder, refused, allowed) == []
