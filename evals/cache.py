"""The eval's disk cache: what a run, a score or a comparison produced, keyed by a digest.

Why on disk: an eval of a few hundred items runs for hours and pays for every call, so an
interrupted eval must resume where it stopped and a second report (another table, another
grader for the open-ended items) must not call the panel again. Each entry is one small JSON
file, written atomically (a temporary file, then a rename), so a kill mid-write leaves the old
entry or none, never half of one. Only what succeeded is stored: a timeout or an upstream error
is tried again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def digest(*parts: Any) -> str:
    """A stable hex digest of JSON-able parts (dict keys sorted, so their order never matters)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResultCache:
    """JSON entries under `root/<namespace>/<key[:2]>/<key>.json`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.json"

    def get(self, namespace: str, key: str) -> Any | None:
        path = self._path(namespace, key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable or damaged by hand: computed again and rewritten

    def put(self, namespace: str, key: str, value: Any) -> None:
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(value, handle, ensure_ascii=False, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def count(self, namespace: str) -> int:
        """How many entries a namespace holds (the tests watch a resume with it)."""
        folder = self.root / namespace
        return sum(1 for _ in folder.glob("*/*.json")) if folder.exists() else 0

    def panel_cache_path(self) -> Path:
        """The graph's panel-answer cache (LangGraph's SqliteCache) beside the entries: the
        strategy arms of an item share its panel answers, after a resume too."""
        return self.root / "panel-answers.sqlite"
