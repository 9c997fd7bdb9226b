"""The judge's structured analysis: its schema, a tolerant parser, and label mapping.

The judge sees anonymous labels (A, B, ...); `map_labels` turns them back into panelist ids.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

_ITEMS = 6  # bounds keep grammar-constrained small models from looping forever


class Stance(BaseModel):
    panelist: str
    stance: str


class Contradiction(BaseModel):
    topic: str
    stances: list[Stance] = Field(max_length=8)


class PartialCoverage(BaseModel):
    point: str
    panelists: list[str] = Field(max_length=8)


class UniqueInsight(BaseModel):
    panelist: str
    insight: str


class Analysis(BaseModel):
    """Consensus, contradictions, partial coverage, unique insights and blind spots."""

    consensus: list[str] = Field(default_factory=list, max_length=_ITEMS)
    contradictions: list[Contradiction] = Field(default_factory=list, max_length=_ITEMS)
    partial_coverage: list[PartialCoverage] = Field(default_factory=list, max_length=_ITEMS)
    unique_insights: list[UniqueInsight] = Field(default_factory=list, max_length=_ITEMS)
    blind_spots: list[str] = Field(default_factory=list, max_length=_ITEMS)

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in type(self).model_fields)


SECTIONS = tuple(Analysis.model_fields)


# Grammar bounds: a small model constrained by a grammar otherwise fills a string or a list until
# max_tokens runs out, and a truncated object is no analysis at all.
GRAMMAR_MAX_ITEMS = 4
GRAMMAR_MAX_CHARS = 160


def _bound(schema: Any) -> Any:
    if isinstance(schema, dict):
        bounded = {k: _bound(v) for k, v in schema.items()}
        if bounded.get("type") == "array":
            bounded["maxItems"] = min(bounded.get("maxItems", GRAMMAR_MAX_ITEMS), GRAMMAR_MAX_ITEMS)
        if bounded.get("type") == "string":
            bounded["maxLength"] = GRAMMAR_MAX_CHARS
        return bounded
    if isinstance(schema, list):
        return [_bound(v) for v in schema]
    return schema


@functools.cache
def analysis_json_schema(*, grammar: bool = False) -> dict[str, Any]:
    """A self-contained schema (no $ref), which every grammar converter accepts. Built once;
    callers must not mutate it.

    `grammar=True` adds tight length bounds for grammar-constrained decoding (llama.cpp).
    """

    def inline(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
        if isinstance(schema, dict):
            if "$ref" in schema:
                return inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
            return {k: inline(v, defs) for k, v in schema.items() if k not in ("$defs", "title")}
        if isinstance(schema, list):
            return [inline(v, defs) for v in schema]
        return schema

    raw = Analysis.model_json_schema()
    schema = inline(raw, raw.get("$defs", {}))
    schema["required"] = list(SECTIONS)
    for prop in schema["properties"].values():
        prop.pop("default", None)
    if not grammar:
        return schema
    bounded = _bound(schema)
    # Under a grammar a small model takes the shortest way out: five empty lists. Ask for at least
    # one point of agreement, which every panel has.
    bounded["properties"]["consensus"]["minItems"] = 1
    return bounded


@functools.cache
def _strict_schema() -> dict[str, Any]:
    def close(schema: Any) -> Any:
        if isinstance(schema, dict):
            closed = {k: close(v) for k, v in schema.items()}
            if closed.get("type") == "object":
                closed["additionalProperties"] = False
            return closed
        if isinstance(schema, list):
            return [close(v) for v in schema]
        return schema

    return close(analysis_json_schema())


def json_schema_response_format() -> dict[str, Any]:
    """OpenAI's strict `response_format` for the analysis, built once: the same schema the SDK
    derives from the pydantic model, without regenerating it on every judge call (4-5 ms)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "Analysis", "schema": _strict_schema(), "strict": True},
    }


def parse_analysis(text: str) -> Analysis:
    """Parse a judge's text leniently: find the JSON object, coerce near-misses, validate."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise ValueError("no JSON object in the judge output")
    try:
        data = json.loads(match.group(0))
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
        item_type = Analysis.model_fields[name].annotation.__args__[0]  # type: ignore[union-attr]
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
    return Analysis(**cleaned)


def _label_to_id(label: str, mapping: dict[str, str]) -> str:
    key = re.sub(r"(?i)^\s*(response|panelist)\s+", "", label).strip().strip(".:").upper()
    return mapping.get(key, label)


def map_labels(analysis: Analysis, mapping: dict[str, str]) -> dict[str, Any]:
    """The analysis as a dict with anonymous labels replaced by panelist ids."""
    data = analysis.model_dump()
    for item in data["contradictions"]:
        for stance in item["stances"]:
            stance["panelist"] = _label_to_id(stance["panelist"], mapping)
    for item in data["partial_coverage"]:
        item["panelists"] = [_label_to_id(p, mapping) for p in item["panelists"]]
    for item in data["unique_insights"]:
        item["panelist"] = _label_to_id(item["panelist"], mapping)
    return data
