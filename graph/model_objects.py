"""Chat model objects from Python as panelists, judge or synthesizer.

A Python caller who already has a configured `ChatAnthropic`, `ChatOllama` or `ChatBedrock` hands
it over by name: `build_graph(models={"claude": ChatAnthropic(...)})`, and the run's context names
it `object:claude` (or `{"provider": "object", "model": "claude"}`) wherever a spec goes. The
context stays plain data (checkpoints, servers and Studio carry it): only the graph's model
factory holds the objects. An object carries its own sampling, endpoint, key and timeouts, so the
spec settings `OBJECT_IGNORES` name do not apply to it; the run record says so
(`fusion.settings.model_objects`). A request, an alias or the CLI cannot name one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.models import ModelFactory, default_model_factory, prepare_models
from fusiongraph.graph.providers import OBJECT_PROVIDER
from fusiongraph.graph.specs import ModelSpec

# The roles of a context that take model specs (the panel is a list of them).
SPEC_SETTINGS = ("panel", "judge", "synthesizer", "classifier")
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")


def check_models(models: Mapping[str, Any]) -> dict[str, BaseChatModel]:
    """The registered objects, refused early when a name or an object cannot work."""
    checked: dict[str, BaseChatModel] = {}
    for name, model in models.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a model object's name is a string without ':', not {name!r}")
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                f"models[{name!r}] is a {type(model).__name__}, not a LangChain BaseChatModel"
            )
        if model._llm_type == "fusion":
            raise ValueError(
                f"models[{name!r}] is a fusion model; a fusion run cannot contain itself"
            )
        checked[name] = model
    return checked


class ObjectModels:
    """A model factory: `object:<name>` specs get the caller's objects, every other spec the
    wrapped factory's model."""

    def __init__(
        self, models: Mapping[str, BaseChatModel], fallback: ModelFactory = default_model_factory
    ) -> None:
        self.models = check_models(models)
        self.fallback = fallback

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        if spec.provider != OBJECT_PROVIDER:
            return self.fallback(spec)
        model = self.models.get(spec.model)
        if model is None:
            raise self._unknown(spec)
        return model

    async def prepare(self, specs: Iterable[ModelSpec]) -> None:
        """Refuse an unknown object name before any call; prepare the other specs as usual."""
        rest = []
        for spec in specs:
            if spec.provider != OBJECT_PROVIDER:
                rest.append(spec)
            elif spec.model not in self.models:
                raise self._unknown(spec)
        await prepare_models(self.fallback, rest)

    def _unknown(self, spec: ModelSpec) -> FusionConfigError:
        known = ", ".join(f"object:{n}" for n in sorted(self.models)) or "none"
        return FusionConfigError("models", f"no model object {spec.name}; this graph has {known}")


def object_name(model: BaseChatModel, taken: Iterable[str]) -> str:
    """A readable, unused name for an object: its model name (`claude-opus-4.8`), else its class."""
    raw = next(
        (
            value
            for attr in ("model_name", "model", "model_id")
            if isinstance(value := getattr(model, attr, None), str) and value
        ),
        type(model).__name__,
    )
    base = _UNSAFE.sub("-", raw).strip("-") or type(model).__name__
    taken = set(taken)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def place_models(
    context: Mapping[str, Any], models: Mapping[str, BaseChatModel] | None = None
) -> tuple[dict[str, Any], dict[str, BaseChatModel]]:
    """A context whose panel/judge/synthesizer/classifier may hold model objects -> the same
    context with `object:<name>` specs in their place, and every object by name (those of
    `models` first). One object used in several roles gets one name."""
    named = dict(models or {})
    names_by_id = {id(m): n for n, m in named.items()}

    def spec_of(value: Any) -> Any:
        if not isinstance(value, BaseChatModel):
            return value
        name = names_by_id.get(id(value))
        if name is None:
            name = names_by_id[id(value)] = object_name(value, named)
            named[name] = value
        return f"{OBJECT_PROVIDER}:{name}"

    placed = dict(context)
    for key in SPEC_SETTINGS:
        value = placed.get(key)
        if key == "panel" and isinstance(value, list | tuple):
            placed[key] = [spec_of(v) for v in value]
        elif value is not None:
            placed[key] = spec_of(value)
    return placed, check_models(named)
