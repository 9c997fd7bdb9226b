"""Eval items: a bundled suite by name, or the user's own JSONL/CSV task file.

The row schema is documented in fusiongraph.evals.schema. `limit` takes a seeded, reproducible
sample that keeps file order, and a larger limit with the same seed only adds items (the first
`limit` of one seeded shuffle), so cached results of a small run are reused by a bigger one.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from fusiongraph.evals.schema import (
    DEFAULT_SCORER,
    FIELDS,
    TASK_TYPES,
    EvalItem,
    EvalTaskError,
    item_from_row,
)
from fusiongraph.evals.suites import SUITES, load_suite

__all__ = [
    "DEFAULT_SCORER",
    "FIELDS",
    "SUITES",
    "TASK_TYPES",
    "EvalItem",
    "EvalTaskError",
    "load_items",
    "read_task_file",
    "select",
]

# A task file is read whole; past this it is more likely a mistake than a task list.
MAX_TASK_FILE_BYTES = 64 * 1024 * 1024


def load_items(tasks: str | Path, *, limit: int | None = None, seed: int = 0) -> list[EvalItem]:
    """A bundled suite name (see SUITES) or a .jsonl/.csv path -> its items, a seeded sample of
    `limit` of them when given (in their original order)."""
    if limit is not None and limit < 1:
        raise EvalTaskError(f"limit must be at least 1, not {limit}")
    if isinstance(tasks, str) and tasks in SUITES:
        items = load_suite(tasks)
    else:
        path = Path(tasks)
        if path.suffix.lower() not in (".jsonl", ".csv"):
            raise EvalTaskError(
                f"{tasks!s}: not a bundled suite ({', '.join(SUITES)}) nor a .jsonl/.csv file"
            )
        items = read_task_file(path)
    return select(items, limit=limit, seed=seed)


def select(items: list[EvalItem], *, limit: int | None, seed: int) -> list[EvalItem]:
    """The first `limit` items of a `seed`-shuffled order, returned in the original order."""
    if limit is None or limit >= len(items):
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[:limit])]


def read_task_file(path: Path) -> list[EvalItem]:
    """Every row of a JSONL or CSV task file as an item; ids must be unique."""
    if not path.is_file():
        raise EvalTaskError(f"{path}: no such task file")
    if path.stat().st_size > MAX_TASK_FILE_BYTES:
        raise EvalTaskError(f"{path}: larger than {MAX_TASK_FILE_BYTES // 2**20} MiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalTaskError(f"{path}: not UTF-8 text ({exc.reason})") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _jsonl_rows(path, text)
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{path} line {line}"
        item = item_from_row(row, where=where, default_id=f"{path.stem}-{line}")
        if item.id in seen:
            raise EvalTaskError(
                f"{where}: field 'id': {item.id!r} already used on line {seen[item.id]}"
            )
        seen[item.id] = line
        items.append(item)
    if not items:
        raise EvalTaskError(f"{path}: no task in the file")
    return items


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalTaskError(
                f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(row, dict):
            raise EvalTaskError(f"{path} line {number}: a row must be a JSON object")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """CSV records keyed by the header; `messages`, `choices` and `metadata` cells are JSON
    text (choices may also be `|`-separated). Line numbers count the header as line 1."""
    reader = csv.DictReader(text.splitlines(keepends=True))
    if not reader.fieldnames:
        raise EvalTaskError(f"{path}: no header row")
    rows = []
    for record in reader:
        line = reader.line_num
        if None in record:
            raise EvalTaskError(f"{path} line {line}: more cells than header columns")
        row: dict[str, Any] = {k.strip(): v for k, v in record.items() if k is not None}
        if not any((v or "").strip() for v in row.values()):
            continue
        for field in ("choices", "metadata"):
            if row.get(field):
                row[field] = _json_cell(path, line, field, row[field])
        rows.append((line, row))
    return rows


def _json_cell(path: Path, line: int, field: str, cell: str) -> Any:
    text = cell.strip()
    if field == "choices" and not text.startswith("["):
        return [part.strip() for part in text.split("|")]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalTaskError(
            f"{path} line {line}: field {field!r}: not valid JSON ({exc.msg})"
        ) from None
