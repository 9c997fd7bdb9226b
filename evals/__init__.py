"""Evaluations: does fusion pay off on a set of tasks? Items, scorers, a sandbox, the engine.

`from fusiongraph.evals import run_eval` - loaded on first use (PEP 562), so the CLI and the
items' loaders do not pay for the graph.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusiongraph.evals.evaluate import EvalReport, arun_eval, run_eval

_PUBLIC = {
    "run_eval": "fusiongraph.evals.evaluate",
    "arun_eval": "fusiongraph.evals.evaluate",
    "EvalReport": "fusiongraph.evals.evaluate",
}
__all__ = ["EvalReport", "arun_eval", "run_eval"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fusiongraph.evals' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
