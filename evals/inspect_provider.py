"""fusiongraph as an inspect-ai model provider: `inspect eval <task> --model fusion/<name>`.

Any inspect evaluation (GSM8K, HumanEval, GPQA, ...) can run against a whole fusion run and
against each panelist alone, with no import in the user's code: the `inspect_ai` entry point
(pyproject) loads `fusiongraph.evals.inspect_registry`, which registers this provider.

Model names (`fusion/<name>`):
- `fusion/local`, `fusion/quality`, `fusion/budget`: a preset (graph/presets.py);
- `fusion/custom`: no preset, the panel comes from `-M panel=...`;
- `fusion/<alias>`: an alias of `-M aliases=FILE` (the JSON file `fusiongraph serve --aliases`
  reads: alias -> fusion settings);
- `fusion/<name>/p2`: panelist p2 of that configuration alone, its model spec called directly
  (no web tools, no panel prompt): the single-model baseline, on inspect's own messages/tools.

`-M key=value` sets any FusionContext field (panel, judge, synthesizer, aggregation, quorum,
...); an unknown or invalid one fails when the model is created, before any sample runs.
inspect's GenerateConfig maps onto the run: temperature and max_tokens (the synthesis step, or
the lone panelist), inspect's own timeout (the run's deadline_s, unless -M deadline_s is
given), stop_seqs (applied to the answer), and the task's tools / tool_choice (bound on the
synthesis step, so agents get tool calls back).
Each output carries the run's usage (cost in `total_cost`) and the fusion record (panel answers,
analysis, failures, per-node usage and cost) in `ModelOutput.metadata["fusion"]`.
"""

from __future__ import annotations

import json
import re
import time
import typing
from pathlib import Path
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    StopReason,
    messages_to_openai,
    modelapi,
)
from inspect_ai.tool import ToolCall, ToolChoice, ToolFunction, ToolInfo

CUSTOM = "custom"  # `fusion/custom`: no preset, the panel comes from -M panel=...
_PANELIST = re.compile(r"^p([1-9]\d*)$")
# Model args of this provider itself, not FusionContext fields.
_PROVIDER_ARGS = frozenset({"aliases"})
_FINISH_REASONS: dict[str, StopReason] = {
    "stop": "stop",
    "length": "max_tokens",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class FusionModelArgsError(ValueError):
    """A model name or `-M` setting that cannot run: raised when inspect creates the model."""


def load_aliases(path: str | Path) -> dict[str, dict[str, Any]]:
    """The alias file `fusiongraph serve --aliases` reads: {alias: {fusion settings}}."""
    try:
        aliases = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FusionModelArgsError(
            f"-M aliases={path}: cannot read the alias file: {exc}"
        ) from None
    if not isinstance(aliases, dict) or not all(isinstance(v, dict) for v in aliases.values()):
        raise FusionModelArgsError(
            f"-M aliases={path}: the file must hold a JSON object of alias -> fusion settings"
        )
    return aliases


def split_model_name(name: str) -> tuple[str, int | None]:
    """`local` -> ("local", None); `local/p2` -> ("local", 1): the configuration and the index
    of the panelist to run alone."""
    parts = name.split("/")
    if len(parts) == 1:
        return parts[0], None
    match = _PANELIST.match(parts[1]) if len(parts) == 2 else None
    if match is None:
        raise FusionModelArgsError(
            f"fusion/{name}: expected fusion/<preset or alias> or fusion/<preset or alias>/p<N>"
        )
    return parts[0], int(match.group(1)) - 1


def _as_settings(model_args: dict[str, Any]) -> dict[str, Any]:
    """-M values as FusionContext fields: inspect parses `-M panel=a` as a string, `a,b` as a
    list; a one-model panel is still a list."""
    from fusiongraph.graph.config import FusionContext

    values = {k: v for k, v in model_args.items() if k not in _PROVIDER_ARGS}
    if isinstance(values.get("panel"), str | dict):
        values["panel"] = [values["panel"]]
    for key, value in values.items():
        # inspect reads -M values as YAML 1.1, where `off`/`on` are booleans: `-M tool_mode=off`
        # arrives as False. A setting that takes no boolean gets its word back.
        field = FusionContext.model_fields.get(key)
        if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
            values[key] = "on" if value else "off"
    return values


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or bool in typing.get_args(annotation)


def base_settings(
    name: str, model_args: dict[str, Any], aliases: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The FusionContext fields a model name and its -M settings stand for."""
    from fusiongraph.graph.presets import PRESETS

    settings = _as_settings(model_args)
    if "preset" in settings:
        raise FusionModelArgsError(
            f"fusion/{name}: -M preset is not a setting here: the model name names the preset "
            f"(fusion/{settings['preset']})"
        )
    if name in aliases:
        return {**aliases[name], **settings}
    if name in PRESETS:
        return {"preset": name, **settings}
    if name == CUSTOM:
        if "panel" not in settings:
            raise FusionModelArgsError(
                "fusion/custom needs a panel: -M panel=openai:gpt-5.5,openai:gpt-5-mini"
            )
        return settings
    known = [*PRESETS, CUSTOM, *aliases]
    raise FusionModelArgsError(
        f"unknown fusion model fusion/{name}; known: {', '.join(f'fusion/{k}' for k in known)} "
        "(aliases come from -M aliases=FILE)"
    )


def openai_tools(tools: list[ToolInfo]) -> list[dict[str, Any]]:
    """inspect's tool specs in the OpenAI form the synthesis step (and bind_tools) takes."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters.model_dump(exclude_none=True),
            },
        }
        for tool in tools
    ]


def openai_tool_choice(tool_choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(tool_choice, ToolFunction):
        return {"type": "function", "function": {"name": tool_choice.name}}
    return "required" if tool_choice == "any" else tool_choice


async def langchain_messages(messages: list[ChatMessage]) -> list[Any]:
    """inspect's messages -> LangChain's, through the OpenAI form both sides speak (system,
    user, assistant with tool calls, tool results)."""
    from langchain_core.messages import convert_to_messages

    # convert_to_messages types its dicts as dict[str, Any]; OpenAI's message TypedDicts are
    # dicts at run time, which it reads as any other.
    return convert_to_messages(await messages_to_openai(messages))  # type: ignore[arg-type]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content or "")


def model_output(
    model: str,
    message: Any,
    *,
    stop: list[str],
    elapsed_s: float,
    cost_usd: float | None,
    metadata: dict[str, Any],
) -> ModelOutput:
    """An AIMessage (the synthesis step's, or a lone panelist's) as inspect's ModelOutput."""
    from fusiongraph.graph.chat_model import cut_at_stop

    text = _text(message.content)
    if stop:
        text = cut_at_stop(text, stop)
    calls = [
        ToolCall(id=c["id"] or f"call_{i}", function=c["name"], arguments=c["args"] or {})
        for i, c in enumerate(message.tool_calls)
    ]
    calls += [
        ToolCall(
            id=c.get("id") or f"invalid_{i}",
            function=c.get("name") or "",
            arguments={},
            parse_error=c.get("error") or f"invalid arguments: {c.get('args')!r}",
        )
        for i, c in enumerate(message.invalid_tool_calls)
    ]
    finish = (message.response_metadata or {}).get("finish_reason")
    stop_reason = _FINISH_REASONS.get(finish or "", "tool_calls" if calls else "stop")
    usage = message.usage_metadata or {}
    return ModelOutput(
        model=model,
        choices=[
            ChatCompletionChoice(
                message=ChatMessageAssistant(
                    content=text, tool_calls=calls or None, model=model, source="generate"
                ),
                stop_reason=stop_reason,
            )
        ],
        usage=ModelUsage(
            input_tokens=int(usage.get("input_tokens", 0) or 0),
            output_tokens=int(usage.get("output_tokens", 0) or 0),
            total_tokens=int(usage.get("total_tokens", 0) or 0),
            total_cost=cost_usd,
        ),
        time=round(elapsed_s, 3),
        metadata=metadata,
    )


class FusionModelAPI(ModelAPI):
    """A fusion configuration (or one of its panelists) behind inspect's ModelAPI."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig | None = None,
        **model_args: Any,
    ) -> None:
        super().__init__(
            model_name=model_name,
            base_url=base_url,
            api_key=api_key,
            config=config or GenerateConfig(),
        )
        from fusiongraph.graph.config import FusionContext, resolve_config
        from fusiongraph.graph.errors import FusionConfigError

        if base_url or api_key:
            raise FusionModelArgsError(
                f"fusion/{model_name}: base_url and api_key belong to each model spec of the "
                "panel (-M panel=... with base_url / api_key_env), not to the fusion model"
            )
        aliases = load_aliases(model_args["aliases"]) if model_args.get("aliases") else {}
        self.config_name, self.panelist_index = split_model_name(model_name)
        self.settings = base_settings(self.config_name, model_args, aliases)
        try:
            # Validated now, so a typo fails before any sample runs, naming the setting.
            self.fusion = resolve_config(FusionContext(**self.settings))
        except FusionConfigError as exc:
            raise FusionModelArgsError(f"fusion/{model_name}: -M {exc.message}") from None
        if self.panelist_index is not None and self.panelist_index >= len(self.fusion.panel):
            ids = ", ".join(f"p{i + 1}" for i in range(len(self.fusion.panel)))
            raise FusionModelArgsError(
                f"fusion/{model_name}: the panel of fusion/{self.config_name} has {ids}"
            )
        if config is not None and config.max_connections is None and self.only_local():
            # inspect's adaptive concurrency (its default) never asks max_connections() below;
            # an explicit limit on the model's config is what it obeys (--max-connections wins).
            config.max_connections = 1

    def only_local(self) -> bool:
        """Every model this one calls is the bundled local model."""
        specs = (
            [self.fusion.panel[self.panelist_index]]
            if self.panelist_index is not None
            else self.fusion.all_specs()
        )
        return all(spec.provider == "local" for spec in specs)

    def max_connections(self) -> int:
        """The bundled local server answers one request at a time on this machine: one sample
        at a time keeps each fusion run's calls from queueing behind another run's (measured on
        two math items here: 9 min 12 s at once, 540 s each; 7 min 41 s one after the other)."""
        return 1 if self.only_local() else super().max_connections()

    def should_retry(self, ex: Exception) -> bool:
        """Retry what a provider rate-limited; any other failure is the sample's answer."""
        from openai import RateLimitError

        from fusiongraph.graph.errors import FusionError

        return isinstance(ex, RateLimitError) or (
            isinstance(ex, FusionError) and ex.reason == "rate_limited"
        )

    async def count_text_tokens(self, text: str) -> int:
        """About four characters a token (graph/state.py's estimate): a fusion run has no one
        tokenizer, and inspect's default (tiktoken) downloads its table on first use."""
        return max(1, len(text) // 4)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if config.response_schema is not None:
            raise FusionModelArgsError(
                f"fusion/{self.model_name}: response_schema is not supported (fusion has no "
                "JSON-mode channel to its synthesizer); ask for the JSON in the prompt or a tool"
            )
        messages = await langchain_messages(input)
        if self.panelist_index is not None:
            return await self._panelist(messages, tools, tool_choice, config)
        return await self._fusion(messages, tools, tool_choice, config)

    def run_settings(
        self, tools: list[ToolInfo], tool_choice: ToolChoice, config: GenerateConfig
    ) -> dict[str, Any]:
        """The FusionContext of one generate call: the model's settings, then inspect's."""
        values = dict(self.settings)
        if config.temperature is not None:
            values["temperature"] = config.temperature
        if config.max_tokens is not None:
            values["max_tokens"] = config.max_tokens
        if config.timeout is not None and "deadline_s" not in values:
            values["deadline_s"] = float(config.timeout)
        if tools:
            values["synthesis_tools"] = openai_tools(tools)
            values["tool_choice"] = openai_tool_choice(tool_choice)
        return values

    async def _fusion(
        self,
        messages: list[Any],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        from fusiongraph.graph.builder import graph
        from fusiongraph.graph.config import FusionContext

        context = FusionContext(**self.run_settings(tools, tool_choice, config))
        started = time.monotonic()
        out = await graph.ainvoke({"messages": messages}, context=context)
        final = out["messages"][-1]
        record = final.response_metadata["fusion"]
        return model_output(
            f"fusion/{self.model_name}",
            final,
            stop=list(config.stop_seqs or []),
            elapsed_s=time.monotonic() - started,
            cost_usd=record["cost_usd"]["total"],
            metadata={"fusion": record},
        )

    async def _panelist(
        self,
        messages: list[Any],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        """The panelist's model spec called directly, as any single-model provider would be."""
        from fusiongraph.graph.models import close_model, default_model_factory, prepare_models
        from fusiongraph.graph.pricing import cost_of, price_of
        from fusiongraph.graph.state import estimate_usage, usage_of
        from fusiongraph.nodes.messages import check_conversation, flatten_tool_history
        from fusiongraph.nodes.panel import panel_spec

        assert self.panelist_index is not None
        check_conversation(messages)
        spec = panel_spec(self.fusion, self.panelist_index)
        updates = {
            key: value
            for key, value in (
                ("temperature", config.temperature),
                ("max_tokens", config.max_tokens),
                ("seed", config.seed),
            )
            if value is not None
        }
        spec = spec.model_copy(update=updates)
        await prepare_models(default_model_factory, [spec])  # e.g. start the local server
        model = default_model_factory(spec)
        runnable: Any = model
        if tools:
            # BaseChatModel types tool_choice as a name; the providers' models (ChatOpenAI,
            # ChatAnthropic, ...) also take OpenAI's {"type": "function", ...} form.
            choice = openai_tool_choice(tool_choice)
            runnable = model.bind_tools(openai_tools(tools), tool_choice=choice)  # type: ignore[arg-type]
        else:
            messages = flatten_tool_history(messages)  # e.g. llama.cpp rejects tool roles
        started = time.monotonic()
        try:
            reply = await runnable.ainvoke(messages, stop=list(config.stop_seqs or []) or None)
        finally:
            await close_model(model)
        elapsed = time.monotonic() - started
        usage = usage_of(reply)
        estimated = usage["total_tokens"] == 0
        if estimated:
            usage = estimate_usage(messages, reply)
        reply.usage_metadata = {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"],
        }
        cost = cost_of(usage, price_of(spec, self.fusion))
        panelist = {
            "panelist": f"p{self.panelist_index + 1}",
            "of": f"fusion/{self.config_name}",
            "model": spec.name,
            "usage": usage,
            "usage_estimated": estimated,
            "cost_usd": cost,
            "latency_s": round(elapsed, 3),
        }
        return model_output(
            f"fusion/{self.model_name}",
            reply,
            stop=[],  # the endpoint applied them
            elapsed_s=elapsed,
            cost_usd=cost,
            metadata={"fusion_panelist": panelist},
        )


@modelapi(name="fusion")
def fusion() -> type[ModelAPI]:
    """inspect's registry entry: `--model fusion/<preset or alias>[/p<N>]`."""
    return FusionModelAPI
