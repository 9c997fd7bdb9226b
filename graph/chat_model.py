"""FusionChatModel: the fusion graph behind LangChain's chat-model interface.

Anything that takes a chat model (an agent, a chain, `with_structured_output`) can use a whole
deliberation as its model: the panel answers, the judge compares, and the synthesis step writes
the reply. The caller's tools are bound on the synthesis step only, so an agent gets ordinary
`AIMessage.tool_calls` back while the panelists keep their own web tools. Streaming yields the
synthesis tokens as they arrive, then one last chunk with the run's metadata and usage totals.

Each call is one stateless graph run over the messages it is given. The inner run is isolated
from the caller's run config: the caller's callback handlers see this model's own start, tokens
and end (with usage totals) exactly once, instead of also seeing every inner panel and judge call
(which would double-count usage and repeat tokens in a parent graph's stream). Tracers (LangSmith)
are kept, so a non-streamed call still shows the inner run nested under this model's run.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.tracers.base import BaseTracer
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, PrivateAttr, model_validator

from fusiongraph.graph.config import CONTEXT_FIELDS, PRESET_ENV, PRESETS, FusionContext
from fusiongraph.graph.deliberation import deliberation_tool
from fusiongraph.graph.model_objects import place_models
from fusiongraph.graph.models import aclose_models
from fusiongraph.graph.runner import stream_run
from fusiongraph.tools.aio import Pump, call_blocking, iterate

# Common constructor arguments of other chat models: accepted so FusionChatModel is a drop-in,
# but every inner model reads its own key and retry settings from its model spec.
_IGNORED_INIT_ARGS = {"api_key", "max_retries"}
# Names other chat models use for a setting that FusionChatModel calls by its context name.
_RENAMED = {"timeout": "deadline_s"}
# What a call may set per invocation (`model.invoke(messages, deadline_s=30)`), beside tools.
_PER_CALL = ("temperature", "max_tokens", "deadline_s")
_PRESET_PREFIX = re.compile(r"^fusion[:/\-]")


def _refuse_renamed(values: dict[str, Any], where: str) -> None:
    """An old or foreign name of a setting fails naming the one to use, not silently."""
    for old, new in _RENAMED.items():
        if old in values:
            raise ValueError(f"{where} takes no {old}=: the setting is {new}= (seconds)")


def preset_from_model_name(name: str) -> str:
    """`fusion:quality`, `fusion-quality`, `fusion/quality` or `quality` -> `quality`."""
    return _PRESET_PREFIX.sub("", name.strip())


def normalise_tool_choice(
    tool_choice: str | bool | dict[str, Any] | None, tool_names: Sequence[str]
) -> str | dict[str, Any] | None:
    """LangChain's tool_choice spellings -> the OpenAI form the synthesis step binds."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice in ("any", "required"):
        return "required"
    if tool_choice in ("auto", "none"):
        return tool_choice
    if isinstance(tool_choice, dict):
        return tool_choice
    if isinstance(tool_choice, str) and tool_choice in tool_names:
        return {"type": "function", "function": {"name": tool_choice}}
    raise ValueError(
        f"tool_choice {tool_choice!r} is neither auto/none/any/required nor one of the bound "
        f"tools {sorted(tool_names)}"
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop sequence."""
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[: min(hits)] if hits else text


class StopCutter:
    """Apply stop sequences to streamed text, holding back a tail that could start one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stop:
            return text
        self.buffer += text
        cut = cut_at_stop(self.buffer, self.stop)
        if len(cut) < len(self.buffer):
            self.stopped, self.buffer = True, ""
            return cut
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.buffer)), hold, -1):
                if self.buffer.endswith(s[:k]):
                    hold = k
                    break
        out, self.buffer = (
            self.buffer[: len(self.buffer) - hold],
            self.buffer[len(self.buffer) - hold :],
        )
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


def _inner_config(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> RunnableConfig:
    """The inner run's config: only the caller's tracers, nested under this model's run."""
    config = RunnableConfig(run_name="fusion")
    if run_manager is not None:
        tracers: list[BaseCallbackHandler] = [
            h for h in run_manager.inheritable_handlers if isinstance(h, BaseTracer)
        ]
        if tracers:
            config["callbacks"] = CallbackManager(
                handlers=tracers,
                inheritable_handlers=tracers,
                parent_run_id=run_manager.run_id,
                inheritable_tags=list(run_manager.inheritable_tags),
                inheritable_metadata=dict(run_manager.inheritable_metadata),
            )
    return config


def _isolated() -> contextvars.Context:
    """A copy of the current context without the caller's ambient run config.

    Inside a chain or a parent graph node, LangChain and LangGraph merge the ambient config into
    every run started there (callbacks, checkpointer, checkpoint namespace), even over explicit
    empty values; the inner run would then report to the caller's handlers and checkpoint into
    the caller's thread. Running it in this context makes it a root run of its own.
    """
    ctx = contextvars.copy_context()
    ctx.run(var_child_runnable_config.set, None)
    return ctx


class FusionChatModel(BaseChatModel):
    """A chat model whose every reply is a fusion run (panel -> judge -> synthesis).

    Supported: invoke/ainvoke/batch, stream/astream (synthesis tokens), bind_tools (bound on the
    synthesis step), with_structured_output (every method is served by a forced tool call on the
    synthesis step), stop sequences (applied to the synthesized text; the synthesizer still
    writes its full reply), usage_metadata (totals over every call of the run) and
    response_metadata["fusion"] (panel answers, analysis, failures, per-node usage and cost).
    A run that cannot answer raises FusionError with its `reason`.

    Every run setting is a keyword named as in the context schema (FusionContext):
    `FusionChatModel(preset="quality", deadline_s=60, aggregation="vote")`, the same as
    `context={...}`; temperature, max_tokens and deadline_s may also be given per call.

    Panelists, judge and synthesizer may be chat model objects next to specs:
    `FusionChatModel(context={"panel": [ChatOllama(...), "openai:gpt-5.5"], "judge": claude})`
    (or `models={"claude": claude}` and the spec `object:claude`). Each object keeps its own
    sampling, endpoint and key; this model runs them on a graph of its own that holds them.
    """

    preset: str = Field(default="", description=f"{' | '.join(PRESETS)}; empty: env or local")
    context: dict[str, Any] = Field(
        default_factory=dict, description="FusionContext overrides (panel, judge, tool_mode, ...)"
    )
    graph: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="a compiled fusion graph; default: the package's `graph`",
    )
    models: dict[str, Any] = Field(
        default_factory=dict,
        exclude=True,
        repr=False,
        description="chat model objects by name, for `object:<name>` specs (objects placed in "
        "the context's panel/judge/synthesizer are added here)",
    )
    temperature: float | None = Field(default=None, description="synthesis step")
    max_tokens: int | None = Field(default=None, description="synthesis step")
    stop: list[str] | None = None
    streaming: bool = False
    _object_graph: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _check_init(cls, values: Any) -> Any:
        """Resolve the preset once (model alias, context, env, `local`) and refuse typos."""
        if not isinstance(values, dict):
            return values
        values = {k: v for k, v in values.items() if k not in _IGNORED_INIT_ARGS}
        _refuse_renamed(values, "FusionChatModel")
        # Any other context setting given as a keyword joins the context.
        context = dict(values.get("context") or {})
        for key in sorted((CONTEXT_FIELDS - set(cls.model_fields)) & set(values)):
            if key in context:
                raise ValueError(f"{key} is given both as a keyword and in context=; give it once")
            context[key] = values.pop(key)
        # Model objects in the context become `object:<name>` specs: the context stays data.
        context, models = place_models(context, values.get("models"))
        if models and values.get("graph") is not None:
            raise ValueError(
                "model objects with graph=: register them on that graph instead, "
                "build_graph(models={name: model}), and name them object:<name>"
            )
        values["models"] = models
        FusionContext(**context)  # a FusionConfigError (a ValueError) naming a bad setting
        model = values.pop("model", None)
        preset = (
            values.get("preset")
            or (model and preset_from_model_name(model))
            or context.pop("preset", "")
            or os.environ.get(PRESET_ENV)
            or ("" if "panel" in context else "local")  # a custom panel brings no preset
        )
        context.pop("preset", None)
        extra = set(values) - set(cls.model_fields)
        if extra:
            raise ValueError(f"unknown parameter(s) {sorted(extra)} for FusionChatModel")
        return {**values, "preset": preset, "context": context}

    @property
    def _llm_type(self) -> str:
        return "fusion"

    @property
    def model_name(self) -> str:
        """The name usage and traces are keyed by: one fusion run is one "model"."""
        return f"fusion:{self.preset or 'custom'}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "context": self.context,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="fusion",
            ls_model_type="chat",
            ls_model_name=kwargs.get("model") or self.model_name,
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        return ModelProfile(
            text_inputs=True,
            text_outputs=True,
            image_inputs=False,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            tool_calling=True,
            tool_choice=True,
            tool_call_streaming=True,
            structured_output=False,
            temperature=True,
        )

    # --- tools and structured output -------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the caller's tools on the synthesis step (the panel never sees them).

        tool_choice: "auto", "none", "any"/"required"/True (some tool), or a tool name.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        choice = normalise_tool_choice(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output through a forced tool call on the synthesis step.

        The graph has no JSON-mode channel to the synthesizer, so `json_schema` and `json_mode`
        are served the same way (the schema is always enforced, which both promise at least).
        """
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(f"unsupported method {method!r}")
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    def as_tool(
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """The deliberation tool (question, optional context -> answer + analysis).

        With `args_schema` or `arg_types` this falls back to Runnable.as_tool.
        """
        if args_schema is not None or arg_types is not None:
            return super().as_tool(
                args_schema, name=name, description=description, arg_types=arg_types
            )
        return self.as_deliberation_tool(name=name or "deliberate", description=description)

    def as_deliberation_tool(
        self, *, name: str = "deliberate", description: str | None = None
    ) -> BaseTool:
        """A LangChain tool an agent calls when a question deserves a panel's deliberation."""
        return deliberation_tool(self, name=name, description=description)

    # --- running the graph -----------------------------------------------------------------

    def _graph(self) -> Any:
        if self.graph is not None:
            return self.graph
        if self.models:  # a graph of this model's own, whose factory holds its objects
            if self._object_graph is None:
                from fusiongraph.graph.builder import build_graph

                self._object_graph = build_graph(models=self.models)
            return self._object_graph
        from fusiongraph.graph.builder import graph

        return graph

    def _run_context(self, kwargs: dict[str, Any]) -> FusionContext:
        """This model's settings plus the per-call ones: tools, tool_choice, model (= preset)."""
        if "response_format" in kwargs:
            raise ValueError(
                "FusionChatModel has no response_format channel; use "
                "with_structured_output (a forced tool call on the synthesis step)"
            )
        _refuse_renamed(kwargs, "a FusionChatModel call")
        values = dict(self.context)
        for key in _PER_CALL:
            if kwargs.get(key) is not None:  # per call wins over everything
                values[key] = kwargs[key]
            elif getattr(self, key, None) is not None and values.get(key) is None:
                values[key] = getattr(self, key)
        if kwargs.get("tools"):
            values["synthesis_tools"] = [convert_to_openai_tool(t) for t in kwargs["tools"]]
            values["tool_choice"] = kwargs.get("tool_choice")
        preset = preset_from_model_name(kwargs["model"]) if kwargs.get("model") else self.preset
        return FusionContext(preset=preset, **values)

    def _stops(self, stop: list[str] | None) -> list[str]:
        return [s for s in (stop if stop is not None else self.stop) or [] if s]

    def _response_metadata(self, final: AIMessage, kwargs: dict[str, Any]) -> dict[str, Any]:
        name = (
            f"fusion:{preset_from_model_name(kwargs['model'])}"
            if kwargs.get("model")
            else self.model_name
        )
        return {**final.response_metadata, "model_name": name}

    def _result(
        self, final: AIMessage, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatResult:
        stops = self._stops(stop)
        content = final.content
        if stops and isinstance(content, str):
            content = cut_at_stop(content, stops)
        message = AIMessage(
            content=content,
            tool_calls=final.tool_calls,
            response_metadata=self._response_metadata(final, kwargs),
            usage_metadata=final.usage_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        invoke = functools.partial(
            self._graph().invoke,
            {"messages": messages},
            config=_inner_config(run_manager),
            context=self._run_context(kwargs),
        )
        out = call_blocking(invoke, _isolated())
        return self._result(out["messages"][-1], stop, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = self._graph().ainvoke(
            {"messages": messages},
            config=_inner_config(run_manager),
            context=self._run_context(kwargs),
        )
        # Awaiting the task forwards a cancellation of this call to the run.
        out = await asyncio.create_task(run, context=_isolated())
        return self._result(out["messages"][-1], stop, kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # A private loop (a worker thread's when this thread runs one) drives the same async
        # run as `astream`; its models are closed before the loop ends.
        chunks = self._chunks(messages, stop, run_manager, kwargs)
        yield from iterate(chunks, _isolated(), before_close=aclose_models)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # The run gets a task of its own (isolated context); leaving this generator cancels it.
        async with Pump(
            self._chunks(messages, stop, run_manager, kwargs), context=_isolated()
        ) as run:
            async for chunk in run:
                yield chunk

    def _chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> AsyncIterator[ChatGenerationChunk]:
        """What both stream paths yield: the synthesis tokens (`stream_run` filters them), then
        one last chunk with the run's usage totals and metadata. The settings are read here, so
        a bad one raises in the caller's frame."""
        state = _StreamState(self._stops(stop))
        events = stream_run(
            self._graph(),
            messages,
            self._run_context(kwargs),
            _inner_config(run_manager),
            progress=False,
        )

        async def chunks() -> AsyncIterator[ChatGenerationChunk]:
            async for event in events:
                if event.kind == "token" and event.chunk is not None:
                    if (out := state.token(event.chunk)) is not None:
                        yield out
                elif event.kind == "final" and event.message is not None:
                    yield state.last(event.message, self._response_metadata(event.message, kwargs))

        return chunks()


class _StreamState:
    """What has been streamed so far, so the last chunk neither repeats nor drops anything."""

    def __init__(self, stop: list[str]) -> None:
        self.cutter = StopCutter(stop)
        self.text = False
        self.calls = False

    def token(self, upstream: AIMessageChunk) -> ChatGenerationChunk | None:
        """Keep what a token carries (text, tool-call pieces); drop the upstream's usage and
        metadata, which the last chunk restates for the whole run (no double counting)."""
        calls = list(upstream.tool_call_chunks)
        self.calls = self.calls or bool(calls)
        self.text = self.text or bool(upstream.content)
        content: Any = upstream.content
        if isinstance(content, str):
            content = self.cutter.feed(content)
        if not content and not calls:
            return None
        return ChatGenerationChunk(message=AIMessageChunk(content=content, tool_call_chunks=calls))

    def last(self, final: AIMessage, response_metadata: dict[str, Any]) -> ChatGenerationChunk:
        """Usage totals and fusion metadata; plus the reply itself if the synthesizer did not
        stream it (a provider without streaming still yields the full answer)."""
        content: Any = self.cutter.flush()
        if not self.text and final.content:
            content = final.content
            if isinstance(content, str):
                content = cut_at_stop(content, self.cutter.stop)
        calls = (
            []
            if self.calls
            else [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(final.tool_calls)
            ]
        )
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=content,
                tool_call_chunks=calls,
                response_metadata=response_metadata,
                usage_metadata=final.usage_metadata,
                chunk_position="last",
            )
        )
