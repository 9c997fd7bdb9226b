"""The graph's own bounds, in one place: every schema, surface and check imports them from here.

A leaf module (no imports) so that the lowest layers (model specs, the judge's analysis schema)
can use it as well as the context schema and the servers' request limits.
"""

from __future__ import annotations

MAX_PANEL = 8  # panelists in one run (a panel has 1 to MAX_PANEL models)
MAX_TOOL_CALLS = 16  # tool steps one panelist (or the checking judge) may take
DEFAULT_MAX_TOOL_CALLS = 8  # a panelist's tool steps when neither the preset nor the caller says
DEFAULT_JUDGE_MAX_TOOL_CALLS = 4  # the checking judge's (judge_tools)
