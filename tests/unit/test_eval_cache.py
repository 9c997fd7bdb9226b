"""The eval's disk cache: stable keys, entries that survive a new process, damage tolerated."""

from __future__ import annotations

from pathlib import Path

from fusiongraph.evals.cache import ResultCache, digest


def test_a_digest_ignores_key_order_but_not_values() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2}) != digest("a", 1)


def test_entries_are_read_back_by_a_new_cache_on_the_same_folder(tmp_path: Path) -> None:
    ResultCache(tmp_path).put("runs", digest("k"), {"answer": "42", "cost": None})
    again = ResultCache(tmp_path)
    assert again.get("runs", digest("k")) == {"answer": "42", "cost": None}
    assert again.get("runs", digest("other")) is None
    assert again.count("runs") == 1 and again.count("samples") == 0
    assert not list(tmp_path.rglob(".tmp-*"))  # written through a temporary file, renamed


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = digest("k")
    cache.put("runs", key, {"answer": "1"})
    (path,) = tmp_path.rglob(f"{key}.json")
    path.write_text('{"answer": "1"')  # cut short by hand
    assert cache.get("runs", key) is None
    cache.put("runs", key, {"answer": "2"})
    assert cache.get("runs", key) == {"answer": "2"}
