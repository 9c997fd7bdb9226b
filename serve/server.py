"""The HTTP face of the fusion graph: /v1/chat/completions and /v1/models (OpenAI), plus
/v1/messages (Anthropic, serve/anthropic_api.py) and /v1/responses (serve/responses_api.py), all
on the same runs (serve/runs.py).

`model` names a preset (`fusion` is the default preset, `fusion-<preset>` each preset) or an alias
the operator configured (a FusionContext dict). Requests may add a `fusion` object with per-request
overrides (panel, judge, tool limits, ...) and `"progress": true` to receive progress events as SSE
comment lines, which every SSE client (the OpenAI SDKs included) skips.

Every run is tied to its request: when the client disconnects, the run's task is cancelled, and
with it the graph's node tasks and their upstream HTTP calls. Error mapping: see openai_errors.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessage
from sse_starlette import EventSourceResponse, ServerSentEvent

from fusiongraph.graph.builder import FusionGraph, open_graph
from fusiongraph.graph.config import FusionContext
from fusiongraph.graph.errors import FusionConfigError, FusionError
from fusiongraph.graph.models import aclose_models
from fusiongraph.graph.presets import PRESETS
from fusiongraph.graph.runner import RunEvent
from fusiongraph.graph.shared_cache import open_cache
from fusiongraph.serve.anthropic_api import install_anthropic_api
from fusiongraph.serve.health import LocalModelStarter, needs_local_model, readiness
from fusiongraph.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fusiongraph.serve.metrics import RunMetrics, mark_worker_dead
from fusiongraph.serve.openai_errors import (
    OpenAIError,
    from_fusion_error,
    install_error_handlers,
    internal_error,
    logger,
)
from fusiongraph.serve.openai_protocol import (
    ChatCompletionResponse,
    ErrorResponse,
    StreamEvent,
    openapi_request,
    openapi_schema,
)
from fusiongraph.serve.openai_request import (
    RequestLimits,
    RunRequest,
    parse_request,
    request_body_schema,
)
from fusiongraph.serve.openai_response import ChunkWriter, completion_body, completion_id
from fusiongraph.serve.openrouter_fusion import OpenRouterFusion
from fusiongraph.serve.openrouter_plan import OpenRouterSettings
from fusiongraph.serve.playground import install_playground
from fusiongraph.serve.request_guards import install_request_guards
from fusiongraph.serve.responses_api import install_responses_api
from fusiongraph.serve.run_watch import RunHooks
from fusiongraph.serve.runs import (
    CLIENT_CLOSED,
    THREAD_HEADER,
    ClientGone,
    RunService,
    open_stream,
    progress_comment,
    read_request,
    reject_recursion,
)
from fusiongraph.serve.shutdown import DEFAULT_GRACE_S, Drain
from fusiongraph.serve.tracing import tracer_from_env
from fusiongraph.tools.aio import Pump

API_KEYS_ENV = "FUSIONGRAPH_API_KEYS"
PRESET_ENV = "FUSIONGRAPH_PRESET"
DEFAULT_MODEL = "fusion"

_ERROR_SCHEMA = openapi_schema(ErrorResponse)

_COMPLETION_RESPONSE: dict[str, Any] = {
    "description": ChatCompletionResponse.__doc__,
    "content": {
        "application/json": {"schema": openapi_schema(ChatCompletionResponse)},
        "text/event-stream": {"schema": openapi_schema(StreamEvent)},
    },
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all in OpenAI's error shape."""
    text = {
        400: "Invalid request, configuration or input; over a limit; recursion",
        401: "Missing or wrong API key",
        408: "The request body did not arrive within body_timeout_s",
        404: "No such model, or no such thread for this API key",
        409: "The thread holds an unfinished run of a different request",
        429: "Every panelist was rate limited upstream",
        502: "Upstream failure: nothing usable came back",
        504: "The run's deadline passed",
    }
    return {
        status: {
            "description": text[status],
            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        }
        for status in statuses
    }


def _without_422(app: FastAPI) -> None:
    """FastAPI documents 422 for validation errors; this server answers those with 400."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    # FastAPI's documented way to customise the schema; mypy refuses assigning a method.
    app.openapi = openapi  # type: ignore[method-assign]


def _env_api_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]


def model_table(
    default_preset: str,
    aliases: dict[str, dict[str, Any]],
    base: dict[str, Any] | None = None,
) -> dict[str, dict]:
    """Every callable model name -> the FusionContext fields it stands for: the operator's
    settings for every model (`base`, the CLI's), then the model's own."""
    base = dict(base or {})
    table: dict[str, dict[str, Any]] = {DEFAULT_MODEL: {**base, "preset": default_preset}}
    table.update({f"{DEFAULT_MODEL}-{name}": {**base, "preset": name} for name in PRESETS})
    for name, context in aliases.items():
        # An alias with its own panel needs no preset (graph/config.py: which preset applies).
        own = context if "panel" in context else {"preset": default_preset, **context}
        table[name] = {**base, **own}
    return table


def _check_aliases(aliases: dict[str, dict[str, Any]]) -> None:
    """Fail at start-up, not on the first request, when an alias holds a bad setting."""
    for name, context in aliases.items():
        if not isinstance(context, dict):
            raise ValueError(f"alias {name!r} must map to a dict of fusion settings")
        try:
            FusionContext(**context)
        except FusionConfigError as exc:
            raise ValueError(f"alias {name!r}: {exc.message}") from None
        if context.get("preset", "") and context["preset"] not in PRESETS:
            raise ValueError(f"alias {name!r}: unknown preset {context['preset']!r}")


def server_preset(default_preset: str | None, base: dict[str, Any]) -> str:
    """The preset behind `fusion` (as for `fusiongraph ask`: none for the operator's own panel),
    once the operator's settings for every model (`base`) are known to be valid."""
    try:
        FusionContext(**base)
    except FusionConfigError as exc:
        raise ValueError(f"server settings: {exc.message}") from None
    preset = default_preset or os.environ.get(PRESET_ENV) or ("" if "panel" in base else "local")
    if preset and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    return preset


def check_settings(
    aliases: dict[str, dict[str, Any]] | None,
    default_preset: str | None,
    base: dict[str, Any] | None = None,
) -> None:
    """What create_app refuses at start-up (a bad alias or setting, an unknown preset), checked
    without building anything: a supervisor of workers fails before it spawns one."""
    _check_aliases(dict(aliases or {}))
    server_preset(default_preset, dict(base or {}))


def freeze_startup_heap() -> None:
    """Move everything alive at start-up (modules, schemas, the compiled graph) out of the cyclic
    GC's reach. It lives as long as the server; re-scanning it in every full collection stalled
    the event loop for 60-75 ms about once every 50 runs, which is what the p95 latency showed."""
    gc.collect()
    gc.freeze()


def create_app(
    graph: FusionGraph | None = None,
    *,
    api_keys: list[str] | None = None,
    aliases: dict[str, dict[str, Any]] | None = None,
    default_preset: str | None = None,
    context: dict[str, Any] | None = None,
    limits: RequestLimits | None = None,
    checkpointer_url: str | None = None,
    cache: bool | str | None = False,
    evals_dir: str | None = None,
    metrics: bool = True,
    tracer: Any = "env",
    grace_s: float | None = None,
    start_local_model: bool = False,
    openrouter: OpenRouterSettings | None = None,
) -> FastAPI:
    """Build the app. Defaults: the module's compiled graph, keys from FUSIONGRAPH_API_KEYS
    (comma-separated; none means no auth), `fusion` = FUSIONGRAPH_PRESET or `local`, request
    limits from the environment (`RequestLimits.from_env`). `context`: FusionContext settings
    under every model served (the operator's, as `fusiongraph serve --deadline-s 60` sets them).

    With `checkpointer_url` (sqlite:///… or postgresql://…) or `cache`, the graph is compiled at
    start-up with that checkpointer and panel-answer cache (`True`/"memory", or "redis://…"
    shared by replicas: graph/shared_cache.py), and runs are durable (see
    `_thread_plan`).

    Operations: `/metrics` (serve/metrics.py; `metrics=False` leaves it out), OpenTelemetry
    spans when `tracer` is one (default "env": from the OTEL_* variables, serve/tracing.py), and
    with `grace_s` a SIGTERM lets in-flight runs finish within that many seconds, then ends them
    (serve/shutdown.py; the CLI's server sets it).

    With `start_local_model` (what `fusiongraph serve` sets), the bundled local model the default
    model needs is started at boot in the background, and /readyz reports its progress until it
    answers (serve/health.py): a load balancer waiting for ready never waits for a first run.

    OpenRouter Fusion's requests (the `openrouter/fusion` alias, the `fusion` plugin, the
    `openrouter:fusion` server tool) run on the same graph (serve/openrouter_fusion.py);
    `openrouter` maps OpenRouter's model slugs and presets (default: the file named by
    FUSIONGRAPH_OPENROUTER_MODELS, slugs on OpenRouter when OPENROUTER_API_KEY is set)."""
    holder: dict[str, FusionGraph] = {}
    if graph is not None:
        holder["graph"] = graph
    elif not checkpointer_url and not cache:
        from fusiongraph.graph.builder import graph as default_graph

        holder["graph"] = default_graph
    keys = _env_api_keys() if api_keys is None else [k for k in api_keys if k]
    aliases = dict(aliases or {})
    _check_aliases(aliases)
    preset = server_preset(default_preset, dict(context or {}))
    models = model_table(preset, aliases, context)
    limits = limits or RequestLimits.from_env()
    started = int(time.time())
    # What a request's `fusion` object may set, and how it is documented, follow the graph's
    # context schema (a durable graph, compiled at start-up, is always the default one).
    context_schema = getattr(holder.get("graph"), "context_schema", None) or FusionContext

    hooks = RunHooks(
        metrics=RunMetrics() if metrics else None,
        tracer=tracer_from_env() if tracer == "env" else tracer,
        drain=Drain(grace_s if grace_s is not None else DEFAULT_GRACE_S),
    )
    starter = (
        LocalModelStarter()
        if start_local_model and needs_local_model(models, DEFAULT_MODEL, context_schema)
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if grace_s is not None:
            hooks.drain.watch_signals()
        if starter is not None:
            starter.start()
        try:
            if "graph" in holder:
                freeze_startup_heap()
                yield
                return
            async with open_graph(checkpointer_url, cache=open_cache(cache)) as durable:
                holder["graph"] = durable
                freeze_startup_heap()
                yield
        finally:
            await aclose_models()
            mark_worker_dead()

    app = FastAPI(
        title="fusiongraph",
        summary="Multi-model deliberation behind the OpenAI and Anthropic APIs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_request_guards(app, limits.max_header_bytes)
    _without_422(app)

    def authorize(request: Request) -> str | None:
        """The caller's API key (None when the server has no auth); a 401 when it is wrong."""
        if not keys:
            return None
        # Bearer for OpenAI clients; x-api-key is how Anthropic clients send theirs.
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or request.headers.get("x-api-key", "").strip()
        if not token:
            raise OpenAIError(
                401,
                "missing API key: send Authorization: Bearer <key> (or x-api-key: <key>)",
                code="invalid_api_key",
            )
        if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
            raise OpenAIError(401, "incorrect API key", code="invalid_api_key")
        return token

    # The run plumbing every API surface shares (serve/runs.py).
    service = RunService(holder, models, limits, context_schema, hooks)
    openrouter = openrouter or OpenRouterSettings.load()
    openrouter.check(models)
    openrouter_api = OpenRouterFusion(service, openrouter)

    def model_card(name: str) -> dict[str, Any]:
        settings = models[name]
        if name in aliases:
            description = "alias"
        elif settings["preset"]:
            description = PRESETS[settings["preset"]]["description"]
        else:
            description = "the operator's panel"
        return {
            "id": name,
            "object": "model",
            "created": started,
            "owned_by": "fusiongraph",
            "fusion": {"preset": settings.get("preset"), "description": description},
        }

    @app.get("/healthz", include_in_schema=False)
    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Alive: the process answers HTTP (/health is the older name)."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def ready() -> Response:
        """Ready for runs: the default model and every alias resolve, the local model is up
        when the default model needs it (started at boot by `serve`), no shutdown under way
        (serve/health.py)."""
        ok, body = await readiness(
            models,
            [DEFAULT_MODEL, *aliases],
            context_schema,
            draining=hooks.drain.draining,
            starter=starter,
        )
        return JSONResponse(body, status_code=200 if ok else 503)

    if hooks.metrics is not None:
        run_metrics = hooks.metrics

        @app.get("/metrics", include_in_schema=False)
        async def metrics_endpoint(request: Request) -> Response:
            """Prometheus text format; the same API key as /v1 when keys are set."""
            authorize(request)
            return Response(run_metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/models", responses=_errors(401))
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card(name) for name in models]}

    @app.get("/v1/models/{model_id:path}", responses=_errors(401, 404))
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id not in models:
            raise OpenAIError(
                404, f"the model {model_id!r} does not exist", param="model", code="model_not_found"
            )
        return model_card(model_id)

    @app.post(
        "/v1/chat/completions",
        openapi_extra=openapi_request(
            request_body_schema(sorted(models), limits, context_schema),
            {
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": "What is TCP?"}],
                "fusion": {"quorum": 2, "max_tool_calls": 4},
            },
        ),
        responses={200: _COMPLETION_RESPONSE, **_errors(400, 401, 404, 408, 409, 429, 502, 504)},
    )
    async def chat_completions(request: Request) -> Response:
        """A fusion run as an OpenAI chat completion (JSON, or SSE with `stream`)."""
        api_key = authorize(request)
        reject_recursion(request)
        raw = await read_request(request, limits)
        if (asked := openrouter_api.take(request, raw)) is not None:
            return await openrouter_api.answer(request, asked, api_key)
        body = parse_request(raw)
        prepared = await service.prepare(
            body, api_key=api_key, thread_id=request.headers.get(THREAD_HEADER)
        )
        run = prepared.run
        try:
            if run.stream:
                response = await _stream(prepared.events(), run, request)
            else:
                response = _completion(await prepared.final(request), run)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        if prepared.plan.thread_id:
            response.headers[THREAD_HEADER] = prepared.plan.thread_id
        return response

    # The Anthropic Messages API and the OpenAI Responses API, on the same runs.
    install_anthropic_api(app, service, authorize, sorted(models))
    install_responses_api(app, service, authorize, sorted(models), openrouter_api)

    # The web playground at `/` (serve/playground.py); eval reports from `evals_dir`.
    install_playground(
        app,
        graph=lambda: holder["graph"],
        authorize=authorize,
        context_schema=context_schema,
        auth_required=bool(keys),
        evals_dir=evals_dir,
    )
    return app


def _completion(final: AIMessage, run: RunRequest) -> Response:
    body = completion_body(final, model=run.model, cid=completion_id(), created=int(time.time()))
    return JSONResponse(body)


async def _stream(handle: Pump[RunEvent], run: RunRequest, request: Request) -> Response:
    """The run as chat.completion.chunk events, opened at its first answer token (runs.py:
    a failure before then is a plain error response with its status code)."""
    try:
        event = await open_stream(handle, run.progress, request)
    except FusionError as exc:
        return from_fusion_error(exc).response()
    except OpenAIError as exc:  # the server shutting down
        return exc.response()
    except ClientGone:
        raise
    except Exception:
        logger.exception("fusion run failed before streaming")
        return internal_error().response()
    return EventSourceResponse(_sse(handle, event, run), sep="\n")


def _data(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


async def _sse(
    handle: Pump[RunEvent], first: RunEvent | None, run: RunRequest
) -> AsyncIterator[Any]:
    """chat.completion.chunk events, then `data: [DONE]`; a failure becomes an error event.

    sse-starlette cancels this generator when the client disconnects; `finally` then cancels
    the run, which closes its upstream calls.
    """
    writer = ChunkWriter(model=run.model, include_usage=run.include_usage)
    try:
        try:
            yield _data(writer.start())
            event = first
            while event is not None:
                if event.kind == "progress" and run.progress and event.progress:
                    yield ServerSentEvent(comment=progress_comment(event))
                elif event.kind == "token" and event.chunk is not None:
                    for chunk in writer.token(event.chunk):
                        yield _data(chunk)
                elif event.kind == "final" and isinstance(event.message, AIMessage):
                    for chunk in writer.finish(event.message):
                        yield _data(chunk)
                event = await anext(handle, None)
        except FusionError as exc:
            yield _data(from_fusion_error(exc).body())
        except OpenAIError as exc:  # the server shutting down
            yield _data(exc.body())
        except Exception:
            logger.exception("fusion run failed while streaming")
            yield _data(internal_error().body())
        yield ServerSentEvent(data="[DONE]")
    finally:
        await handle.cancel()
