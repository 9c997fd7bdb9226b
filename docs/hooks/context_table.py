"""A mkdocs hook: the Configuration page's settings table, generated from the context schema.

`<!-- context-table -->` in a page becomes a table of every `FusionContext` field (its type,
the plan's default, its description), so the page cannot drift from the code.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- context-table -->"


def _type_name(annotation: Any) -> str:
    """A short, readable spelling of a field's type (`int | None` reads as `int`)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        if any(getattr(a, "__name__", "") == "ModelSpec" for a in args):
            return "model spec"  # a string such as `openai:gpt-5.5`, or an object
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args if a is not None)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo | None) -> str:
    """The plan's default: what a run uses when neither the caller nor the preset sets it."""
    if field is None or field.default_factory is not None:
        return "—"
    if field.default is PydanticUndefined or field.default is None:
        return "—"
    value = field.default
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def context_rows() -> list[tuple[str, str, str, str]]:
    """(field, type, default, description) for each setting of the context schema."""
    from fusiongraph.graph.config import FusionConfig, FusionContext

    plan = FusionConfig.model_fields
    rows = []
    for name, field in FusionContext.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append((name, _type_name(field.annotation), _default(plan.get(name)), description))
    return rows


def context_table() -> str:
    """The settings as a Markdown table."""
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, type_name, default, description in context_rows():
        lines.append(f"| `{name}` | {type_name} | {default} | {description} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: replace the marker with the generated table."""
    if MARKER not in markdown:
        return markdown
    return re.sub(re.escape(MARKER), lambda _m: context_table(), markdown)
