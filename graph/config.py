"""The run's configuration: the graph's `context_schema` and its resolution into a plan.

`FusionContext` is what a caller (or LangGraph Studio) sets: a preset name plus optional
overrides. `resolve_config` expands the preset, applies the overrides and environment fallbacks,
and validates everything before any model is called, naming the offending field.
"""

from __future__ import annotations

import ast
import copy
import os
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fusiongraph.graph.answers import check_how
from fusiongraph.graph.calibration import CalibrationError, load_profile
from fusiongraph.graph.errors import FusionConfigError, field_path
from fusiongraph.graph.limits import (
    DEFAULT_JUDGE_MAX_TOOL_CALLS,
    DEFAULT_MAX_TOOL_CALLS,
    MAX_PANEL,
    MAX_TOOL_CALLS,
)
from fusiongraph.graph.presets import (
    LOCAL_JUDGE_TUNING,
    LOCAL_PANEL_TUNING,
    LOCAL_SYNTHESIS_TUNING,
    PRESETS,
)
from fusiongraph.graph.providers import missing_package, object_models_note
from fusiongraph.graph.specs import ModelSpec, Price, ReasoningEffort, ToolMode
from fusiongraph.tools.mcp import (
    MCP_SERVERS_ENV,
    McpServerSettings,
    check_server_names,
    read_servers,
    require_mcp,
)
from fusiongraph.tools.settings import FetchSettings, SearchSettings

PRESET_ENV = "FUSIONGRAPH_PRESET"
DEFAULT_PRESET = "local"


def _spec_input(value: Any) -> Any:
    """Model specs in the context are data (they travel to checkpoints, servers and Studio)."""
    if value is None or isinstance(value, str | dict | ModelSpec):
        return value
    raise ValueError(
        f"a model spec is a string such as 'openai:gpt-5.5' or an object with model and "
        f"base_url, not a {type(value).__name__}: the run's settings must be plain data"
    )


SpecInput = Annotated[str | dict[str, Any] | ModelSpec, BeforeValidator(_spec_input)]
# The settings' bounds, shared by what a caller sets (FusionContext: refused on every surface
# before a run starts) and the plan a run reads (FusionConfig).
ToolCalls = Annotated[int, Field(ge=1, le=MAX_TOOL_CALLS)]
AtLeastOne = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Temperature = Annotated[float, Field(ge=0, le=2)]
JudgeChars = Annotated[int, Field(ge=200)]
CascadeSize = Annotated[int, Field(ge=2)]


class VerifyCase(BaseModel):
    """One of the caller's tests for `verify`: the call written as Python (`median([1, 2])`,
    literal arguments only) or its positional arguments, and the result it must return."""

    model_config = ConfigDict(extra="forbid")

    call: str | None = Field(default=None, description="the call, e.g. median([1, 2])")
    args: list[Any] | None = Field(default=None, description="the positional arguments")
    expected: Any = Field(description="the result the function must return")

    @model_validator(mode="after")
    def _one_call(self) -> VerifyCase:
        if (self.call is None) == (self.args is None):
            raise ValueError("give the call or its args, not both")
        if self.call is not None:
            call_parts(self.call)
        return self


def call_parts(call: str) -> tuple[str, list[Any]]:
    """`median([1, 2])` -> ("median", [[1, 2]]); a call that is not a name applied to literal
    positional arguments is refused."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.keywords:
            raise ValueError
        return node.func.id, [ast.literal_eval(arg) for arg in node.args]
    except (SyntaxError, ValueError):
        raise ValueError(
            f"{call[:80]!r} is not a call of a function with literal arguments"
        ) from None


# Unit tests as Python source (asserts, `check(candidate)`), or input/expected cases.
VerifyTests = str | list[VerifyCase]


class FusionContext(BaseModel):
    """Per-run settings (LangGraph `context_schema`). Unset fields come from the preset; an
    unknown or wrongly typed one raises FusionConfigError naming it, before any model is called.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    preset: str = Field(
        default="",
        description=f"{' | '.join(PRESETS)}. Empty: FUSIONGRAPH_PRESET, else `local` - or, "
        "when a panel is given, no preset (judge and synthesizer default to its first model)",
    )
    panel: list[SpecInput] | None = Field(
        default=None, description=f"1-{MAX_PANEL} model specs, e.g. openai:gpt-5.5"
    )
    judge: SpecInput | None = Field(default=None, description="model spec of the judge")
    synthesizer: SpecInput | None = Field(default=None, description="model spec of the synthesizer")
    tool_mode: ToolMode | None = Field(
        default=None, description="agentic | prefetch | off, for every panelist"
    )
    max_tool_calls: ToolCalls | None = Field(
        default=None, description=f"1-{MAX_TOOL_CALLS} tool steps per panelist"
    )
    temperature: Temperature | None = Field(default=None, description="of the synthesis step")
    max_tokens: AtLeastOne | None = Field(default=None, description="of the synthesis step")
    panel_max_tokens: AtLeastOne | None = Field(default=None, description="per panel answer")
    panel_timeout_s: Positive | None = Field(default=None, description="hard cap per panelist")
    quorum: AtLeastOne | None = Field(
        default=None, description="answer once this many panelists are in (then the grace)"
    )
    straggler_grace_s: NonNegative | None = Field(
        default=None, description="how long the rest may still finish once the quorum is in"
    )
    deadline_s: Positive | None = Field(default=None, description="deadline of the whole run")
    judge_input_chars: JudgeChars | None = Field(
        default=None, description="how much of each answer the judge reads"
    )
    judge_tools: bool | None = Field(
        default=None,
        description="let the judge call web_search/web_fetch to check contradictions (off)",
    )
    judge_max_tool_calls: ToolCalls | None = Field(
        default=None,
        description=f"1-{MAX_TOOL_CALLS} tool calls the checking judge may make "
        f"({DEFAULT_JUDGE_MAX_TOOL_CALLS})",
    )
    include_raw_answers: bool | None = Field(
        default=None, description="give the synthesizer the raw answers, not only the analysis"
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="none | minimal | low | medium | high | xhigh, for the panelists and the "
        "judge whose spec sets none, where the provider has it",
    )
    # Strategy names live here only: code that lists strategies reads this annotation.
    aggregation: Literal["synthesize", "select", "vote", "verify", "auto", None] = Field(
        default=None,
        description="synthesize (default) | select (the judge picks an answer, verbatim) | vote "
        "(majority of extracted answers) | verify (answers run in a sandbox: code on tests, "
        "math against a program) | auto (chosen per request)",
    )
    verify_tests: VerifyTests | None = Field(
        default=None,
        description="tests for verify: Python asserts on the function, or a list of "
        '{"call": "f(1, 2)" or "args": [1, 2], "expected": 3}; they run only in the sandbox',
    )
    early_exit: bool | None = Field(
        default=None,
        description="skip judge and synthesis when every answer agrees (default: on for vote "
        "and auto)",
    )
    vote_answer: str | None = Field(
        default=None,
        description="how an answer is extracted for vote and early exit: auto | number | letter "
        "| boxed | marked | regex:<pattern> | json:<field>",
    )
    cascade: CascadeSize | None = Field(
        default=None,
        description="ask this many panelists first (the cheapest); the rest only if they disagree",
    )
    classifier: SpecInput | None = Field(
        default=None, description="model spec that classifies what auto's rules cannot"
    )
    calibration: str | None = Field(
        default=None,
        description="path of a calibration profile (calibration.json, written by `fusiongraph "
        "eval`): auto routes by it and vote weighs members by it",
    )
    search_provider: str | None = Field(
        default=None, description="auto | tavily | duckduckgo | searxng | corpus | none"
    )
    corpus_dir: str | None = Field(default=None, description="folder the corpus provider searches")
    searxng_url: str | None = Field(default=None, description="base URL of a SearxNG instance")
    fetch_allow_private: list[str] | None = Field(
        default=None, description="hosts, IPs or CIDRs web_fetch may reach although private"
    )
    mcp_servers: dict[str, McpServerSettings] | None = Field(
        default=None,
        description="MCP servers whose tools agentic panelists get: name -> {transport, "
        "command/args or url}",
    )
    max_cost_usd: Positive | None = Field(
        default=None, description="refuse a run whose worst case costs more"
    )
    prices: dict[str, Price] | None = Field(
        default=None, description="USD per million tokens by model name: {input, output}"
    )
    synthesis_tools: list[dict[str, Any]] | None = Field(
        default=None, description="the caller's tools (OpenAI format), bound on synthesis only"
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description="the caller's tool_choice for the synthesis step"
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(exc) from None

    @field_validator("panel")
    @classmethod
    def _panel_size(cls, panel: list[Any] | None) -> list[Any] | None:
        if panel is not None and not 1 <= len(panel) <= MAX_PANEL:
            raise ValueError(f"needs 1 to {MAX_PANEL} models, got {len(panel)}")
        return panel


CONTEXT_FIELDS = frozenset(FusionContext.model_fields)
# The settings that name one model (the panel names a list of them): where a request's spec
# may not carry an endpoint or a key (serve/), and where every spec is checked.
MODEL_FIELDS = ("judge", "synthesizer", "classifier")
# The aggregation strategies, read from the setting's annotation: the one list there is.
STRATEGIES: tuple[str, ...] = tuple(
    s for s in get_args(FusionContext.model_fields["aggregation"].annotation) if s is not None
)
# Settings only the operator makes (aliases, the CLI, Python): per request they would reach the
# server's files or network. The OpenAI-compatible server refuses them in a request's `fusion`.
OPERATOR_ONLY = frozenset(
    {"corpus_dir", "searxng_url", "fetch_allow_private", "mcp_servers", "calibration"}
)
# Settings that a chat-completions request makes through its own OpenAI parameters (temperature,
# max_tokens, tools, tool_choice, and the model name for the preset), not through `fusion`.
OPENAI_PARAMS = frozenset({"preset", "temperature", "max_tokens", "synthesis_tools", "tool_choice"})


def config_error(exc: ValidationError) -> FusionConfigError:
    """The first validation error as a FusionConfigError naming the field."""
    err = exc.errors()[0]
    field_name = _field_name(tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        known = CONTEXT_FIELDS if len(err["loc"]) == 1 else ModelSpec.model_fields
        return FusionConfigError(field_name, f"unknown setting; known: {', '.join(sorted(known))}")
    return FusionConfigError(field_name, err["msg"].removeprefix("Value error, "))


class FusionConfig(BaseModel):
    """A validated, fully expanded plan for one run (frozen: runs with equal settings share it)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    preset: str | None = Field(description="the preset applied; None: a custom panel")
    local_tuning: tuple[str, ...] = Field(
        default=(), description="where the local model's tuning applied: panel, judge, synthesizer"
    )
    panel: list[ModelSpec] = Field(min_length=1, max_length=MAX_PANEL)
    judge: ModelSpec
    synthesizer: ModelSpec
    tool_mode: ToolMode = "agentic"
    max_tool_calls: ToolCalls = DEFAULT_MAX_TOOL_CALLS
    temperature: Temperature | None = None
    max_tokens: AtLeastOne | None = None
    panel_max_tokens: AtLeastOne | None = None
    panel_timeout_s: Positive = 120.0
    quorum: AtLeastOne | None = None
    straggler_grace_s: NonNegative = 0.0
    deadline_s: Positive | None = None
    judge_input_chars: JudgeChars = 8000
    judge_tools: bool = False
    judge_max_tool_calls: ToolCalls = DEFAULT_JUDGE_MAX_TOOL_CALLS
    include_raw_answers: bool = False
    reasoning_effort: ReasoningEffort | None = None
    aggregation: Literal["synthesize", "select", "vote", "verify", "auto"] = "synthesize"
    verify_tests: VerifyTests | None = None  # the caller's tests for verify (nodes/verify.py)
    early_exit: bool | None = None  # None: on for vote and auto (nodes/aggregation.py)
    vote_answer: str | None = None  # None: "auto" for vote, "marked" for agreement elsewhere
    cascade: CascadeSize | None = None
    classifier: ModelSpec | None = None
    calibration: str | None = None  # a profile's path (graph/calibration.py)
    search: SearchSettings = Field(default_factory=SearchSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    mcp_servers: dict[str, McpServerSettings] = Field(default_factory=dict)
    max_cost_usd: Positive | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    synthesis_tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("vote_answer")
    @classmethod
    def _known_extraction(cls, how: str | None) -> str | None:
        if how is not None:
            check_how(how)
        return how

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_server_names(cls, servers: dict[str, Any]) -> dict[str, Any]:
        check_server_names(servers)
        return servers

    def panel_tool_mode(self, spec: ModelSpec) -> ToolMode:
        return spec.tool_mode or self.tool_mode

    def panel_max_tool_calls(self, spec: ModelSpec) -> int:
        return spec.max_tool_calls or self.max_tool_calls

    def judge_tool_mode(self) -> ToolMode:
        """How the checking judge (judge_tools) reaches the tools: its spec's tool_mode; unset,
        `prefetch` for the bundled local model (no tool calling), else `agentic`."""
        return self.judge.tool_mode or ("prefetch" if self.judge.provider == "local" else "agentic")

    def all_specs(self) -> list[ModelSpec]:
        return [*self.panel, self.judge, self.synthesizer]

    def settings_used(self) -> dict[str, Any]:
        """What the run record says was in force, beside the models (nodes/metadata.py)."""
        return {
            "preset": self.preset,
            "local_tuning": list(self.local_tuning),
            **self.model_dump(
                mode="json",
                include={
                    "tool_mode",
                    "max_tool_calls",
                    "temperature",
                    "max_tokens",
                    "panel_max_tokens",
                    "panel_timeout_s",
                    "quorum",
                    "straggler_grace_s",
                    "deadline_s",
                    "judge_input_chars",
                    "judge_tools",
                    "judge_max_tool_calls",
                    "include_raw_answers",
                    "reasoning_effort",
                    "max_cost_usd",
                    "aggregation",
                    "early_exit",
                    "vote_answer",
                    "cascade",
                },
            ),
            "classifier": self.classifier.name if self.classifier else None,
            "calibration": self.calibration,
            "search_provider": self.search.provider,
            "mcp_servers": sorted(self.mcp_servers),
            # The caller's model objects, and the settings their own configuration replaces.
            "model_objects": object_models_note(
                [*self.all_specs(), *([self.classifier] if self.classifier else [])]
            ),
        }


def _overrides(ctx: FusionContext) -> dict[str, Any]:
    """The fields the caller set, mapped onto FusionConfig's shape."""
    values = ctx.model_dump(exclude_none=True, exclude={"preset"})
    search = {}
    for key, target in (
        ("search_provider", "provider"),
        ("corpus_dir", "corpus_dir"),
        ("searxng_url", "searxng_url"),
    ):
        if key in values:
            search[target] = values.pop(key)
    # A corpus folder or a SearxNG URL given without a provider chooses it: never ignored.
    if "provider" not in search and len(search) == 1:
        search["provider"] = {"corpus_dir": "corpus", "searxng_url": "searxng"}[next(iter(search))]
    fetch = {}
    if "fetch_allow_private" in values:
        fetch["allow_private"] = values.pop("fetch_allow_private")
    return {**values, "search": search, "fetch": fetch}


def _env_fallbacks() -> dict[str, Any]:
    search: dict[str, Any] = {}
    if os.environ.get("FUSIONGRAPH_SEARCH_PROVIDER"):
        search["provider"] = os.environ["FUSIONGRAPH_SEARCH_PROVIDER"]
    if os.environ.get("FUSIONGRAPH_CORPUS_DIR"):
        search["corpus_dir"] = os.environ["FUSIONGRAPH_CORPUS_DIR"]
    if os.environ.get("SEARXNG_URL"):
        search["searxng_url"] = os.environ["SEARXNG_URL"]
    fallbacks: dict[str, Any] = {"search": search}
    if os.environ.get(MCP_SERVERS_ENV, "").strip():
        try:
            fallbacks["mcp_servers"] = read_servers(os.environ[MCP_SERVERS_ENV])
        except ValueError as exc:
            raise FusionConfigError("mcp_servers", f"{MCP_SERVERS_ENV}: {exc}") from None
    return fallbacks


# Maps whose entries a later layer replaces whole (a server's command and another's URL must
# never combine into one server).
_WHOLE = ("prices", "mcp_servers")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _WHOLE:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _field_name(loc: tuple[Any, ...]) -> str:
    """A validation error's field, without the union members pydantic names in its location."""
    kept = [p for p in loc if not str(p).startswith(("function-", "str", "dict[", "ModelSpec"))]
    return field_path(kept) or "config"


# A panelist's own settings: a custom panel's first model judges and writes without them.
_PANEL_ONLY = ("temperature", "seed", "max_tokens", "tool_mode", "max_tool_calls")
_ROLES = ("panel", "judge", "synthesizer")


def _is_local(spec: Any) -> bool:
    if isinstance(spec, ModelSpec):
        return spec.provider == "local"
    if isinstance(spec, str):
        return spec.startswith("local:")
    return isinstance(spec, dict) and spec.get("provider") == "local"


def _without_panel_settings(spec: Any) -> Any:
    if isinstance(spec, ModelSpec):
        spec = spec.model_dump(exclude_none=True)
    if isinstance(spec, dict):
        return {k: v for k, v in spec.items() if k not in _PANEL_ONLY}
    return spec


def expand(preset: str | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The raw plan and where the local model's tuning applied.

    Layers, each over the last: the preset (no preset: a custom panel, whose first model is
    also judge and synthesizer unless they are set); the local model's tuning for each role the
    local model actually plays; the environment's search fallbacks; the caller's overrides.
    """
    if preset is None:
        first = _without_panel_settings(overrides["panel"][0])
        base: dict[str, Any] = {"judge": first, "synthesizer": first}
    else:
        base = {k: v for k, v in PRESETS[preset].items() if k not in ("description", "cost")}
    models = {**base, **{k: overrides[k] for k in _ROLES if k in overrides}}
    tuning: dict[str, Any] = {}
    tuned = []
    for role, local, settings in (
        ("panel", all(_is_local(s) for s in models["panel"]), LOCAL_PANEL_TUNING),
        ("judge", _is_local(models["judge"]), LOCAL_JUDGE_TUNING),
        ("synthesizer", _is_local(models["synthesizer"]), LOCAL_SYNTHESIS_TUNING),
    ):
        if local:
            tuning = _merge(tuning, settings)
            tuned.append(role)
    return _merge(_merge(_merge(base, tuning), _env_fallbacks()), overrides), tuple(tuned)


def _preset_of(ctx: FusionContext) -> str | None:
    """The preset a context names (or the environment does); None for a custom panel."""
    preset = ctx.preset or os.environ.get(PRESET_ENV, "")
    if not preset and ctx.panel is None:
        preset = DEFAULT_PRESET
    if preset and preset not in PRESETS:
        raise FusionConfigError("preset", f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    return preset or None


def check_configurable(configurable: dict[str, Any] | None, context: Any) -> None:
    """The older idiom `config={"configurable": {...}}` is not read: refuse it, rather than run
    the default preset, when no fusion context came with it."""
    keys = sorted(CONTEXT_FIELDS & set(configurable or {}))
    if keys and not isinstance(context, FusionContext):
        raise FusionConfigError(
            f"configurable.{keys[0]}",
            "fusion settings go in `context`, not config={'configurable': ...}: "
            f"graph.invoke(inputs, context={{{keys[0]!r}: ...}})",
        )


def resolve_config(ctx: FusionContext | dict[str, Any] | None = None) -> FusionConfig:
    """Expand the preset, apply overrides and validate; raise FusionConfigError naming the field.

    A context of another type (a parent graph's, when fusion runs as its subgraph) carries no
    fusion settings: the defaults apply. Dispatch resolves once per run and puts the result in
    the run's state (`plan_of`); the other nodes read that plan (`config_of`).
    """
    if isinstance(ctx, dict):
        ctx = FusionContext(**ctx)
    elif not isinstance(ctx, FusionContext):
        ctx = FusionContext()
    preset = _preset_of(ctx)
    raw, tuned = expand(preset, _overrides(ctx))
    try:
        config = FusionConfig(preset=preset, local_tuning=tuned, **raw)
    except ValidationError as exc:
        raise config_error(exc) from None
    if config.quorum is not None and config.quorum > len(config.panel):
        raise FusionConfigError(
            "quorum", f"{config.quorum} exceeds the panel size {len(config.panel)}"
        )
    if config.judge_tools and config.judge_tool_mode() == "off":
        raise FusionConfigError(
            "judge_tools",
            "the judge's tool_mode is off, so it cannot check anything; set its tool_mode to "
            "agentic or prefetch, or leave judge_tools off",
        )
    if config.cascade is not None and config.cascade >= len(config.panel):
        raise FusionConfigError(
            "cascade",
            f"{config.cascade} must be below the panel size {len(config.panel)}: cascade asks "
            "that many panelists first and the rest only when they disagree",
        )
    if config.calibration is not None:
        try:
            load_profile(config.calibration)
        except CalibrationError as exc:
            raise FusionConfigError("calibration", str(exc)) from None
    _check_runnable(config)
    return config


def plan_of(config: FusionConfig) -> dict[str, Any]:
    """The run's plan as plain data for its state (JSON types only): what a resumed run reads
    back. A live run's nodes use the FusionConfig itself, from the run's scope
    (nodes/scheduling.py)."""
    return config.model_dump(mode="json")


def config_of(plan: dict[str, Any]) -> FusionConfig:
    """The FusionConfig of a plan read back from the run's state; the API keys and packages it
    needs are checked again (they come from the environment, which a resumed run may lack)."""
    try:
        config = FusionConfig.model_validate(plan)
    except ValidationError as exc:
        raise config_error(exc) from None
    _check_runnable(config)
    return config


def _check_runnable(config: FusionConfig) -> None:
    """Refuse what would fail on the first call: recursion, missing keys, missing packages."""
    named = [(f"panel[{i}]", s) for i, s in enumerate(config.panel)]
    named += [(name, getattr(config, name)) for name in MODEL_FIELDS if getattr(config, name)]
    for field_name, spec in named:
        if spec.is_fusion():
            raise FusionConfigError(
                field_name, f"{spec.name} is a fusion model; a fusion run cannot contain itself"
            )
        missing = missing_package(spec.provider)  # the provider's extra (graph/providers.py)
        if missing:
            raise FusionConfigError(field_name, missing)
        key_env = spec.resolved_key_env()
        if key_env and not os.environ.get(key_env):
            raise FusionConfigError(
                field_name, f"{spec.name} needs the environment variable {key_env} (API key)"
            )
        if spec.provider == "openai_compatible" and not spec.base_url:
            raise FusionConfigError(field_name, "an object model spec needs base_url")
    if config.mcp_servers:
        try:
            require_mcp()
        except ImportError as exc:
            raise FusionConfigError("mcp_servers", str(exc)) from None
