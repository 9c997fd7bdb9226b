"""The run's settings as command-line options, generated from the graph's context schema.

Every FusionContext field is one option named after it (`deadline_s` -> `--deadline-s`) on each
command that runs the graph (`ask`, `serve`, `playground`, `mcp`, `eval`): a new field appears on
all of them without touching the CLI, and no command can spell a setting another way.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic.fields import FieldInfo

from fusiongraph.graph.config import FusionContext
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.providers import OBJECT_PROVIDER
from fusiongraph.graph.specs import ModelSpec

HELP_PANEL = "Fusion settings (the run's context; unset: the preset's)"
# What the text of a setting is, beside its description, by how it is read.
_FORMATS = {
    "panel": ' (provider:model, or JSON: {"model": ..., "base_url": ...})',
    "mcp_servers": " (JSON, or a JSON file; also FUSIONGRAPH_MCP_SERVERS)",
}


def option_name(field: str) -> str:
    """`deadline_s` -> `--deadline-s`: the one spelling of a setting on the command line."""
    return "--" + field.replace("_", "-")


def _members(annotation: Any) -> list[Any]:
    """The types a field takes, without None, Annotated metadata or nested unions."""
    if typing.get_origin(annotation) is Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _holds_spec(annotation: Any) -> bool:
    return any(member is ModelSpec or _holds_spec_args(member) for member in _members(annotation))


def _holds_spec_args(member: Any) -> bool:
    return any(_holds_spec(arg) for arg in typing.get_args(member))


def _choices(members: list[Any]) -> list[str] | None:
    """The words of a Literal-typed field (None: not a choice)."""
    if not members or any(typing.get_origin(m) is not Literal for m in members):
        return None
    return [str(v) for m in members for v in typing.get_args(m) if v is not None]


def model_spec_option(value: str) -> str | dict[str, Any]:
    """A model spec as typed: `provider:model`, or a JSON object (`{"model": ..., "base_url":
    ...}`) for any OpenAI-compatible endpoint. Not `object:` (a Python graph's model object)."""
    spec: Any = value
    if value.lstrip().startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not a JSON object: {exc}") from None
        if not isinstance(spec, dict):
            raise typer.BadParameter("a model spec object must be a JSON object")
    provider = spec.get("provider") if isinstance(spec, dict) else spec.partition(":")[0]
    if provider == OBJECT_PROVIDER:
        raise typer.BadParameter(
            "object: names a chat model object of a Python graph (build_graph(models=...)); "
            "the CLI has none: use a provider spec such as ollama:llama3.2"
        )
    return spec


def _json_or_text(value: str) -> Any:
    """A structured value as typed: JSON when it is JSON, else the text itself."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _mcp_servers(value: str) -> dict[str, Any]:
    from fusiongraph.tools.mcp import read_servers

    try:
        return read_servers(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _folder(value: str) -> str:
    if not Path(value).is_dir():
        raise typer.BadParameter(f"{value!r} is not a folder")
    return value


# Fields whose text needs more than its type: a folder that must exist, a JSON object or file.
_READERS: dict[str, Callable[[str], Any]] = {"corpus_dir": _folder, "mcp_servers": _mcp_servers}


class _Setting:
    """How one context field is typed on the command line and read back into the context."""

    def __init__(self, name: str, info: FieldInfo) -> None:
        self.name = name
        members = _members(info.annotation)
        self.many = len(members) == 1 and typing.get_origin(members[0]) is list
        item = _members(typing.get_args(members[0])[0]) if self.many else members
        choices = _choices(item)
        declared = option_name(name)
        if choices is not None:
            python: Any = Literal[tuple(choices)]
        elif item in ([bool], [int], [float], [str]):
            python = item[0]
            if python is bool:
                declared = f"{declared}/--no-{declared[2:]}"
        else:
            python = str
        self.read: Callable[[str], Any] | None = None
        if _holds_spec(info.annotation):
            self.read = model_spec_option
        elif name in _READERS:
            self.read = _READERS[name]
        elif python is str and choices is None and item != [str]:
            self.read = _json_or_text  # objects and lists are typed as JSON
        if name in _FORMATS:
            fmt = _FORMATS[name]
        elif self.read is model_spec_option:
            fmt = " (a spec as for --panel)"
        else:
            fmt = " (JSON)" if self.read is _json_or_text else ""
        help_text = (info.description or "") + fmt + ("; repeat" if self.many else "")
        option = typer.Option(declared, help=help_text, rich_help_panel=HELP_PANEL)
        self.annotation = Annotated[list[python] | None if self.many else python | None, option]

    def value(self, raw: Any) -> Any:
        if self.read is None or raw is None:
            return raw
        try:
            return [self.read(r) for r in raw] if self.many else self.read(raw)
        except typer.BadParameter as exc:
            exc.param_hint = option_name(self.name)
            raise


SETTINGS = {name: _Setting(name, info) for name, info in FusionContext.model_fields.items()}


def check_context(context: dict[str, Any]) -> None:
    """Validate the settings as the graph will, naming the option of the one that is wrong."""
    try:
        FusionContext(**context)
    except FusionConfigError as exc:
        top = exc.field.split(".")[0].split("[")[0]
        hint = option_name(top) if top in SETTINGS else None
        raise typer.BadParameter(exc.message, param_hint=hint) from None


def with_context_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per context field to a typer command, which then receives the settings
    given (validated, as FusionContext fields) in its `context` parameter."""
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(command).parameters.values()
        if p.name != "context"
    ]
    clash = {p.name for p in own} & set(SETTINGS)
    if clash:
        raise TypeError(f"{command.__name__} declares context settings itself: {sorted(clash)}")
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=s.annotation
        )
        for name, s in SETTINGS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        context = {}
        for name, setting in SETTINGS.items():
            raw = kwargs.pop(name)
            if raw is not None and raw != []:
                context[name] = setting.value(raw)
        check_context(context)
        return command(context=context, **kwargs)

    parameters = [*own, *added]
    # typeshed's functions lack __signature__, which inspect.signature (and typer) reads.
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer reads this signature, not the command's
    return wrapper
