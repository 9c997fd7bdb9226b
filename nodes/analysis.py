"""The judge's structured analysis: its schema, a tolerant parser, and label mapping.

The judge sees anonymous labels (A, B, ...); `map_labels` turns them back into panelist ids and
drops what names a panelist the judge was never shown.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, Literal, TypedDict, get_args

from pydantic import BaseModel, Field, ValidationError

from fusiongraph.graph.limits import MAX_PANEL

_ITEMS = 6  # bounds keep grammar-constrained small models from looping forever


class Stance(BaseModel):
    panelist: str
    stance: str


class Contradiction(BaseModel):
    topic: str
    stances: list[Stance] = Field(max_length=MAX_PANEL)
    # Set by a judge that checks (judge_tools): whether it looked the dispute up, on which URLs
    # (nodes/judge_tools.py keeps only URLs its own tool calls returned).
    checked: bool = False
    sources: list[str] = Field(default_factory=list, max_length=8)


class PartialCoverage(BaseModel):
    point: str
    panelists: list[str] = Field(max_length=MAX_PANEL)


class UniqueInsight(BaseModel):
    panelist: str
    insight: str


class Analysis(BaseModel):
    """Consensus, contradictions, partial coverage, unique insights and blind spots; and, when
    the run selects an answer (aggregation select, or a vote's tie), the best response's label
    and why, in the same call."""

    consensus: list[str] = Field(default_factory=list, max_length=_ITEMS)
    contradictions: list[Contradiction] = Field(default_factory=list, max_length=_ITEMS)
    partial_coverage: list[PartialCoverage] = Field(default_factory=list, max_length=_ITEMS)
    unique_insights: list[UniqueInsight] = Field(default_factory=list, max_length=_ITEMS)
    blind_spots: list[str] = Field(default_factory=list, max_length=_ITEMS)
    best: str | None = Field(default=None, description="label of the best response")
    best_reason: str | None = Field(default=None, description="one sentence: why it is best")

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in SECTIONS) and not self.best


class SelectingAnalysis(Analysis):
    """The analysis a selecting judge must return: `best` and `best_reason` required."""

    best: str = Field(description="label of the best response, e.g. A")
    best_reason: str = Field(description="one sentence: why it is best")


SECTIONS = ("consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots")
SELECTION = ("best", "best_reason")


def analysis_model(*, select: bool = False) -> type[Analysis]:
    return SelectingAnalysis if select else Analysis


# Grammar bounds: a small model constrained by a grammar otherwise fills a string or a list until
# max_tokens runs out, and a truncated object is no analysis at all.
GRAMMAR_MAX_ITEMS = 4
GRAMMAR_MAX_CHARS = 160


def _map_dicts(schema: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of a JSON schema with `change` applied to every object in it, innermost first."""
    if isinstance(schema, dict):
        return change({k: _map_dicts(v, change) for k, v in schema.items()})
    if isinstance(schema, list):
        return [_map_dicts(v, change) for v in schema]
    return schema


def _bound(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("type") == "array":
        node["maxItems"] = min(node.get("maxItems", GRAMMAR_MAX_ITEMS), GRAMMAR_MAX_ITEMS)
    if node.get("type") == "string":
        node["maxLength"] = GRAMMAR_MAX_CHARS
    return node


def _closed(node: dict[str, Any]) -> dict[str, Any]:
    """Strict mode (as openai's SDK derives it): closed objects, every property required."""
    if node.get("type") == "object":
        node["additionalProperties"] = False
        node["required"] = list(node.get("properties", {}))
    return node


def inline_refs(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """A pydantic JSON schema with every $ref replaced by its definition, titles dropped."""
    defs = schema.get("$defs", {}) if defs is None and isinstance(schema, dict) else defs or {}
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inline_refs(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: inline_refs(v, defs) for k, v in schema.items() if k not in ("$defs", "title")}
    if isinstance(schema, list):
        return [inline_refs(v, defs) for v in schema]
    return schema


@functools.cache
def analysis_json_schema(*, grammar: bool = False, select: bool = False) -> dict[str, Any]:
    """A self-contained schema (no $ref), which every grammar converter accepts. Built once;
    callers must not mutate it.

    `grammar=True` adds tight length bounds for grammar-constrained decoding (llama.cpp).
    `select=True` asks for `best` and `best_reason` too (otherwise they are not asked at all).
    """
    schema = inline_refs(analysis_model(select=select).model_json_schema())
    if not select:
        for name in SELECTION:
            schema["properties"].pop(name)
    schema["required"] = [*SECTIONS, *(SELECTION if select else ())]
    for prop in schema["properties"].values():
        prop.pop("default", None)
    if not grammar:
        return schema
    bounded = _map_dicts(schema, _bound)
    # Under a grammar a small model takes the shortest way out: five empty lists. Ask for at least
    # one point of agreement, which every panel has.
    bounded["properties"]["consensus"]["minItems"] = 1
    return bounded


@functools.cache
def _strict_schema(select: bool = False) -> dict[str, Any]:
    return _map_dicts(analysis_json_schema(select=select), _closed)


def json_schema_response_format(select: bool = False) -> dict[str, Any]:
    """OpenAI's strict `response_format` for the analysis, built once: the same schema the SDK
    derives from the pydantic model, without regenerating it on every judge call (4-5 ms)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "Analysis", "schema": _strict_schema(select), "strict": True},
    }


def parse_analysis(text: str) -> Analysis:
    """Parse a judge's text leniently: find the JSON object, coerce near-misses, validate."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise ValueError("no JSON object in the judge output")
    try:
        # strict=False: a raw tab or newline inside a string (small local models write them
        # even under a JSON grammar) is kept, not a reason to lose the analysis.
        data = json.loads(match.group(0), strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"judge output is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("judge output is not a JSON object")
    return coerce_analysis(data)


def coerce_analysis(data: dict[str, Any]) -> Analysis:
    """Validate, dropping malformed items rather than the whole analysis."""
    cleaned: dict[str, list[Any]] = {}
    for name in SECTIONS:
        value = data.get(name) or []
        if not isinstance(value, list):
            value = [value]
        item_type = get_args(Analysis.model_fields[name].annotation)[0]  # list[X] -> X
        items = []
        for item in value[:_ITEMS]:
            if item_type is str:
                if isinstance(item, str | int | float) and str(item).strip():
                    items.append(str(item).strip())
                continue
            try:
                items.append(item_type.model_validate(item))
            except ValidationError:
                continue
        cleaned[name] = items
    chosen = {
        name: str(data[name]).strip()
        for name in SELECTION
        if isinstance(data.get(name), str | int) and str(data[name]).strip()
    }
    return Analysis.model_validate({**cleaned, **chosen})


_CLIP_LABEL = 40
_CLIP_ITEM = 160


class Dropped(TypedDict):
    """One item of the judge's analysis that named a panelist the judge was never shown."""

    section: str  # "contradictions", "partial_coverage", "unique_insights" or "best"
    item: str | None  # what the item was about (topic, point, insight); None for "best"
    labels: list[str]  # the unknown labels, as the judge wrote them (clipped)
    removed: Literal["item", "names"]  # the whole item, or only those names (the item stays)
    reason: str  # for a person


def _label_to_id(label: str, mapping: dict[str, str]) -> str | None:
    """The panelist id behind a label the judge was shown ("B", "Response B", "b."), else None."""
    key = re.sub(r"(?i)^\s*(response|panelist)\s+", "", label).strip().strip(".:").upper()
    return mapping.get(key)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dropped(
    section: str,
    item: str | None,
    labels: list[str],
    removed: Literal["item", "names"],
    reason: str,
) -> Dropped:
    return Dropped(
        section=section,
        item=None if item is None else _clip(item, _CLIP_ITEM),
        labels=[_clip(label, _CLIP_LABEL) for label in labels],
        removed=removed,
        reason=reason,
    )


def _known(names: list[str], mapping: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the panelist ids of the known labels, without repeats; the unknown labels)."""
    ids: list[str] = []
    unknown: list[str] = []
    for name in names:
        panelist = _label_to_id(name, mapping)
        if panelist is None:
            unknown.append(name)
        elif panelist not in ids:
            ids.append(panelist)
    return ids, unknown


def map_labels(analysis: Analysis, mapping: dict[str, str]) -> dict[str, Any]:
    """The analysis as a dict with the anonymous labels replaced by panelist ids.

    A label the judge was never shown (an "E" on a three-answer panel) is not a panelist: what it
    names is removed, never shown as fact, and listed under `dropped` (`Dropped` entries). Per
    section, what still makes sense without the unknown name is kept:

    - unique_insights: the item is dropped; an insight is only worth its "who said it".
    - contradictions: the unknown panelist's stance is dropped; the contradiction goes too when
      fewer than two stances remain, since one stance contradicts nothing.
    - partial_coverage: the unknown names are removed; the item goes when none remains (a point
      "covered by nobody known" says nothing about the panel).
    - best (the selection): an unknown label is no selection: `best` and `best_reason` are left
      out, and the strategy's fallback applies (nodes/aggregation.py).

    consensus and blind_spots name no panelist. `dropped` is always present (empty when nothing
    was dropped).
    """
    data = analysis.model_dump()
    dropped: list[Dropped] = []
    best = data.get("best")
    chosen = _label_to_id(best, mapping) if best else None
    if chosen is not None:
        data["best"] = chosen
    else:
        if best:
            reason = "names a response the judge was not shown: no selection"
            dropped.append(_dropped("best", None, [best], "item", reason))
        for name in SELECTION:
            data.pop(name, None)
    contradictions = []
    for item in data["contradictions"]:
        stances, unknown = [], []
        for stance in item["stances"]:
            panelist = _label_to_id(stance["panelist"], mapping)
            if panelist is None:
                unknown.append(stance["panelist"])
            else:
                stances.append({**stance, "panelist": panelist})
        if len(stances) < 2 and unknown:
            reason = "names an unknown panelist; fewer than two known stances remain"
            dropped.append(_dropped("contradictions", item["topic"], unknown, "item", reason))
            continue
        if unknown:
            reason = "the stances of unknown panelists were removed"
            dropped.append(_dropped("contradictions", item["topic"], unknown, "names", reason))
        contradictions.append({**item, "stances": stances})
    data["contradictions"] = contradictions
    coverage = []
    for item in data["partial_coverage"]:
        panelists, unknown = _known(item["panelists"], mapping)
        if unknown and not panelists:
            reason = "names only unknown panelists"
            dropped.append(_dropped("partial_coverage", item["point"], unknown, "item", reason))
            continue
        if unknown:
            reason = "unknown panelists were removed from the list"
            dropped.append(_dropped("partial_coverage", item["point"], unknown, "names", reason))
        coverage.append({**item, "panelists": panelists})
    data["partial_coverage"] = coverage
    insights = []
    for item in data["unique_insights"]:
        panelist = _label_to_id(item["panelist"], mapping)
        if panelist is None:
            reason = "names an unknown panelist"
            dropped.append(
                _dropped("unique_insights", item["insight"], [item["panelist"]], "item", reason)
            )
            continue
        insights.append({**item, "panelist": panelist})
    data["unique_insights"] = insights
    data["dropped"] = dropped
    return data
