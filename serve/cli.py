"""The `fusiongraph` command line: ask, presets, local start|stop|status, serve and mcp."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from dotenv import load_dotenv
from langchain_core.messages import BaseMessage, HumanMessage
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from fusiongraph.graph.errors import FusionError, ThreadConflict, ThreadNotFound
from fusiongraph.graph.limits import MAX_PANEL
from fusiongraph.graph.shared_cache import open_cache, parse_cache_url
from fusiongraph.serve.cli_render import plain, show_result, shown
from fusiongraph.serve.cli_settings import model_spec_option, with_context_options

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

app = typer.Typer(
    help="Multi-model deliberation: a panel answers, a judge compares, one writes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(
    help="The bundled local model server (llama.cpp + SmolLM2-135M).", no_args_is_help=True
)
app.add_typer(local_app, name="local")

console = Console()


def _cache_option(value: str | None) -> str | None:
    """An unknown `--cache` value is a usage error, before anything starts."""
    try:
        parse_cache_url(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


# Options that `ask` and `serve` share.
CheckpointerOption = Annotated[
    str | None,
    typer.Option(
        help="Durable runs: sqlite:///runs.db or postgresql://...",
        envvar="FUSIONGRAPH_CHECKPOINTER",
    ),
]
CacheOption = Annotated[
    str | None,
    typer.Option(
        help="Reuse panel answers of identical requests: memory (this process) or redis://host:port"
        "/db (shared by every replica).",
        envvar="FUSIONGRAPH_CACHE",
        callback=_cache_option,
    ),
]
# Options that `serve` and `playground` share.
HostOption = Annotated[str, typer.Option(help="Interface to bind.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535)]
AliasesOption = Annotated[
    Path | None,
    typer.Option(help="JSON file: model alias -> fusion settings.", exists=True, dir_okay=False),
]
err_console = Console(stderr=True)


class ProgressView:
    """The live panel table shown while a run is going."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.stage = "starting"
        self.answer = ""

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        if kind == "run_started":
            self.stage = "panel"
        elif kind.startswith("panelist_"):
            row = self.rows.setdefault(event["panelist"], {"model": event.get("model", "")})
            row["state"] = kind.removeprefix("panelist_")
            row["latency"] = event.get("latency_s")
            row["detail"] = event.get("reason") or (
                f"{event.get('chars', 0)} chars, {event.get('tool_calls', 0)} tool calls"
                if kind == "panelist_finished"
                else ""
            )
        elif kind == "cascade_expanded":
            self.stage = "panel: the first panelists disagree, asking the rest"
        elif kind == "aggregation_chosen":
            self.stage = f"panel (auto: {event.get('applied')})"
        elif kind == "aggregation_decided":
            self.stage = str(event.get("note") or event.get("outcome"))
        elif kind == "verify_started":
            self.stage = "verify: the answers run in the sandbox"
        elif kind == "judge_started":
            self.stage = "judge"
        elif kind == "synthesis_started":
            self.stage = "synthesis"

    def render(self) -> Group:
        table = Table(title=f"fusion — {self.stage}", expand=False)
        for column in ("panelist", "model", "state", "latency", "detail"):
            table.add_column(column)
        style = {"started": "yellow", "finished": "green", "failed": "red"}
        for pid, row in sorted(self.rows.items()):
            state = row.get("state", "")
            latency = f"{row['latency']:.1f}s" if row.get("latency") is not None else ""
            table.add_row(
                pid,
                plain(row["model"]),
                f"[{style.get(state, '')}]{state}",
                latency,
                plain(row.get("detail", "")),
            )
        parts: list[Any] = [table]
        if self.answer:
            parts.append(Panel(plain(self.answer), title="answer (streaming)"))
        return Group(*parts)


_THREAD_NOTES = {
    "fresh": "a new thread",
    "resume": "resuming the unfinished run of this question on this thread",
    "replay": "this thread already answered this question: showing the stored answer",
    "new_turn": "continuing the conversation on this thread",
}


async def _run_live(
    graph: Any,
    messages: Sequence[BaseMessage] | None,
    ctx: dict[str, Any],
    config: RunnableConfig | None,
    as_json: bool,
) -> Any:
    """Run the graph with the live progress table; return the final message."""
    from fusiongraph.graph.runner import stream_run

    view = ProgressView()
    final = None
    with Live(
        view.render(),
        console=err_console if as_json else console,
        refresh_per_second=8,
        transient=True,
    ) as live:
        async for event in stream_run(graph, messages, ctx, config):
            if event.kind == "progress" and event.progress:
                view.update(event.progress)
            elif event.kind == "token" and event.chunk is not None:
                view.answer += event.chunk.text
            elif event.kind == "final":
                final = event.message
            live.update(view.render())
    assert final is not None
    return final


async def _ask(
    question: str,
    ctx: dict[str, Any],
    as_json: bool,
    checkpointer: str | None,
    thread: str | None,
    cache: str | None,
) -> int:
    from fusiongraph.graph.builder import open_graph
    from fusiongraph.graph.threads import ThreadPlan, digest, plan_thread

    async with open_graph(checkpointer, cache=open_cache(cache)) as graph:
        plan = ThreadPlan()
        if checkpointer:
            request = digest({"question": question, "context": ctx})
            plan = await plan_thread(graph, thread, request=request)
            thread_id = shown(plan.thread_id)
            err_console.print(
                f"thread: {thread_id} ({_THREAD_NOTES[plan.action]}; --thread "
                f"{thread_id} with the same question resumes it if interrupted, with another "
                "question continues the conversation)",
                soft_wrap=True,
            )
        final = plan.replay
        if final is None:
            messages = plan.inputs([HumanMessage(content=question)], whole_conversation=False)
            final = await _run_live(graph, messages, ctx, plan.config, as_json)
    fusion = final.response_metadata["fusion"]
    if as_json:
        print(
            json.dumps(
                {"answer": final.text, "tool_calls": final.tool_calls, "fusion": fusion},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        show_result(fusion, final.text, console)
    return 0


@app.command()
@with_context_options
def ask(
    question: Annotated[str, typer.Argument(help="What to ask the panel.")],
    context: dict[str, Any],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    checkpointer: CheckpointerOption = None,
    thread: Annotated[str | None, typer.Option(help="Thread id: continue or resume it.")] = None,
    cache: CacheOption = None,
) -> None:
    """Ask the panel a question; shows progress live, then answers, analysis and final answer."""
    load_dotenv()
    ctx = {"preset": "", **context}
    try:
        code = asyncio.run(_ask(question, ctx, as_json, checkpointer, thread, cache))
    except (ThreadConflict, ThreadNotFound) as exc:
        err_console.print(f"[red]cannot use this thread:[/red] {shown(exc)}", soft_wrap=True)
        code = 2
    except FusionError as exc:
        err_console.print(f"[red]fusion failed ({exc.reason}):[/red] {shown(exc.message)}")
        for failed in exc.details.get("failed_models", []):
            err_console.print(
                plain(
                    f"  {failed['panelist']} {failed['model']}: {failed['reason']} "
                    f"— {failed['message']}"
                )
            )
        spent = (exc.details.get("usage") or {}).get("total")
        if spent and spent["total_tokens"]:
            cost = (exc.details.get("cost_usd") or {}).get("total")
            err_console.print(
                f"  already spent: {spent['input_tokens']} tokens in, {spent['output_tokens']} "
                f"out, cost {'unknown' if cost is None else f'${cost:.6f}'}"
            )
        if as_json:
            print(json.dumps({"error": exc.to_dict()}, indent=2, default=str))
        code = 2 if exc.reason in ("invalid_config", "invalid_input") else 1
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@app.command()
def presets() -> None:
    """List the presets: their models, tools, and what each costs in disk, memory and money."""
    from fusiongraph.graph.config import PRESETS, expand
    from fusiongraph.graph.specs import ModelSpec

    table = Table()
    for column in ("preset", "panel", "judge", "synthesizer", "tools", "description and cost"):
        table.add_column(column)
    for name, preset in PRESETS.items():
        plan, _ = expand(name, {})
        tools = f"{plan.get('tool_mode', 'agentic')} / {plan['search'].get('provider', 'auto')}"
        panel = "\n".join(ModelSpec.model_validate(s).name for s in plan["panel"])
        table.add_row(
            name,
            panel,
            ModelSpec.model_validate(plan["judge"]).name,
            ModelSpec.model_validate(plan["synthesizer"]).name,
            tools,
            escape(preset["description"]) + f"\n[dim]cost: {escape(preset.get('cost', '-'))}[/dim]",
        )
    console.print(table)


@app.command("eval")
@with_context_options
def eval_command(
    tasks: Annotated[
        str,
        typer.Argument(
            help="A bundled suite (humaneval, math, research, choice) or a .jsonl/.csv file; "
            "several, comma-separated (math,choice), make one report."
        ),
    ],
    context: dict[str, Any],
    arms: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: fusion:<strategy>, panelist:pN, self-consistency:<model>, "
            "self-fusion:<model>; fusion, panelist, ... alone: all of theirs. Default: all. "
            "fusion:calibrated (named only): calibrated auto on held-out items."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N items (seeded).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="Items at once.")] = 2,
    grader: Annotated[
        str | None, typer.Option(help="Model spec grading open answers (default: the judge).")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=2, max=MAX_PANEL, help="k of self-consistency/self-fusion (default: panel size)."
        ),
    ] = None,
    item_timeout_s: Annotated[float, typer.Option(min=1, help="Seconds per item and arm.")] = 900.0,
    out: Annotated[Path, typer.Option(help="Folder of the reports.")] = Path("fusion-evals"),
    calibrate_split: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=0.95,
            help="fusion:calibrated: the share of each task type's items its profile is fitted "
            "on (seeded); it is judged on the rest.",
        ),
    ] = 0.5,
) -> None:
    """Does fusion pay off on these tasks? Each arm on the same items, per task type: accuracy,
    win/tie/loss against the best panelist, cost, latency; cached, so a rerun resumes."""
    load_dotenv()
    from fusiongraph.evals import run_eval

    try:
        report = run_eval(
            tasks,
            context={"preset": "", **context},
            arms=arms.split(",") if arms else None,
            limit=limit,
            concurrency=concurrency,
            out_dir=out,
            grader=model_spec_option(grader) if grader else None,
            samples=samples,
            item_timeout_s=item_timeout_s,
            progress=True,
            calibrate_split=calibrate_split,
        )
    except (ValueError, OSError) as exc:  # a bad task file, suite, arm or setting
        err_console.print(f"[red]cannot run the eval:[/red] {shown(exc)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: run the same command again to resume from the cache")
        raise typer.Exit(130) from None
    print(report.markdown)
    err_console.print(f"report: {report.folder / 'report.html'}", soft_wrap=True)


@app.command()
@with_context_options
def serve(
    context: dict[str, Any],
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    aliases: AliasesOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    checkpointer: CheckpointerOption = None,
    cache: CacheOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes on one socket (default: one per core; 1: a single process).",
            envvar="FUSIONGRAPH_WORKERS",
        ),
    ] = None,
    grace_s: Annotated[
        float,
        typer.Option(
            "--grace-s",
            min=0,
            help="On SIGTERM: seconds in-flight runs may take to finish before they are "
            "cancelled (the client gets a 503 / an error event; checkpointed runs resume).",
        ),
    ] = 30.0,
    openrouter_models: Annotated[
        Path | None,
        typer.Option(
            help='JSON file for OpenRouter Fusion requests: {"models": {slug: spec}, '
            '"presets": {preset: served model}, "default": served model} (unmapped slugs '
            "run on OpenRouter when OPENROUTER_API_KEY is set).",
            exists=True,
            dir_okay=False,
            envvar="FUSIONGRAPH_OPENROUTER_MODELS",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (/v1/chat/completions, /v1/messages, /v1/responses, /v1/models) with
    uvicorn, the web playground at `/`, /metrics (Prometheus), /healthz and /readyz.

    The fusion settings are the base of every model served (`fusion`, `fusion-<preset>`, each
    alias; --preset: the one behind `fusion`, default local); a request's `fusion` object
    overrides those a request may set. API keys come from FUSIONGRAPH_API_KEYS
    (comma-separated; sent as a bearer token or in x-api-key); without it there is no auth.
    """
    load_dotenv()
    from fusiongraph.serve.workers import ServeSettings, default_workers, run_server

    preset = context.pop("preset", None)
    try:
        if openrouter_models is not None:
            from fusiongraph.serve.openrouter_plan import MODELS_ENV, OpenRouterSettings

            OpenRouterSettings.load(openrouter_models)  # a bad file stops the start, not a run
            os.environ[MODELS_ENV] = str(openrouter_models.resolve())  # workers read it
        alias_map = json.loads(aliases.read_text()) if aliases else None
        settings = ServeSettings(
            aliases=alias_map,
            default_preset=preset,
            context=context,
            checkpointer_url=checkpointer,
            cache=cache,
            grace_s=grace_s,
        )
        run_server(
            settings,
            host=host,
            port=port,
            workers=workers or default_workers(),
            log_level=log_level,
        )
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]cannot start the server:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
@with_context_options
def playground(
    context: dict[str, Any],
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    aliases: AliasesOption = None,
    evals_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of `fusiongraph eval` reports to list (default: ./fusion-evals).",
            envvar="FUSIONGRAPH_EVALS_DIR",
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the browser.")
    ] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    checkpointer: CheckpointerOption = None,
    cache: CacheOption = None,
) -> None:
    """Start the server and open the web playground (the page `serve` also has at `/`); the
    fusion settings apply as for `serve`."""
    load_dotenv()
    import uvicorn

    from fusiongraph.serve.log_format import log_config
    from fusiongraph.serve.playground import open_when_ready
    from fusiongraph.serve.server import create_app

    preset = context.pop("preset", None)
    try:
        alias_map = json.loads(aliases.read_text()) if aliases else None
        server_app = create_app(
            aliases=alias_map,
            default_preset=preset,
            context=context,
            checkpointer_url=checkpointer,
            cache=cache,
            evals_dir=str(evals_dir) if evals_dir else None,
        )
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]cannot start the server:[/red] {exc}")
        raise typer.Exit(2) from None
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    err_console.print(f"playground: {url}", soft_wrap=True)
    if open_browser:
        open_when_ready(url)
    uvicorn.run(server_app, host=host, port=port, log_level=log_level, log_config=log_config())


@app.command("mcp")
@with_context_options
def mcp_command(
    context: dict[str, Any],
    transport: Annotated[
        str, typer.Option(help="stdio (the client starts this process) | http (streamable HTTP)")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="http: interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="http: port.")] = 8765,
    cache: CacheOption = None,
    log_level: Annotated[str, typer.Option(help="http: uvicorn log level.")] = "warning",
    session_idle_s: Annotated[
        float,
        typer.Option(
            "--session-idle-s",
            min=1,
            envvar="FUSIONGRAPH_MCP_SESSION_IDLE_S",
            help="http: a session with no request in flight for this many seconds expires "
            "(its client then initializes a new one).",
        ),
    ] = 1800.0,
) -> None:
    """Serve the `deliberate` tool over MCP, for desktop assistants, IDEs and agents.

    The fusion settings apply to every call (the operator-only ones too: corpus_dir, a model's
    base_url, ...); a call may override the others. http serves streamable HTTP at
    http://HOST:PORT/mcp; FUSIONGRAPH_API_KEYS (comma-separated) then requires Authorization:
    Bearer <key>.
    """
    load_dotenv()
    if transport not in ("stdio", "http"):
        raise typer.BadParameter("use stdio or http", param_hint="--transport")
    try:
        from fusiongraph.serve.mcp_server import create_mcp_server
        from fusiongraph.serve.mcp_server import serve as serve_mcp
    except ImportError as exc:
        err_console.print(
            "[red]fusiongraph mcp needs the `mcp` extra:[/red] "
            + escape(f"pip install 'fusiongraph[mcp]' ({exc})"),
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    try:
        server = create_mcp_server(context=context, cache=open_cache(cache))
    except FusionError as exc:
        err_console.print(
            f"[red]cannot start the MCP server:[/red] {escape(exc.message)}", soft_wrap=True
        )
        raise typer.Exit(2) from None
    serve_mcp(
        server,
        "http" if transport == "http" else "stdio",
        host=host,
        port=port,
        log_level=log_level,
        session_idle_s=session_idle_s,
    )


@local_app.command("start")
def local_start(
    preset: Annotated[
        str, typer.Option(help="Serve the local models of this preset (e.g. local-panel).")
    ] = "local",
) -> None:
    """Start the local model server (or reuse the running one) and leave it running."""
    from fusiongraph.graph.config import PRESETS, expand
    from fusiongraph.graph.specs import ModelSpec
    from fusiongraph.local_model.launcher import ensure_local_server
    from fusiongraph.local_model.settings import LocalServerError

    if preset not in PRESETS:
        raise typer.BadParameter(f"known: {', '.join(PRESETS)}", param_hint="--preset")
    plan, _ = expand(preset, {})
    roles = (*plan["panel"], plan["judge"], plan["synthesizer"])
    models = [m.model for m in map(ModelSpec.model_validate, roles) if m.provider == "local"]
    try:
        url = ensure_local_server(detach=True, models=models)
    except LocalServerError as exc:
        err_console.print(f"[red]cannot start the local model server:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"local model server: {url}")


@local_app.command("stop")
def local_stop() -> None:
    """Stop the local model server started by fusiongraph."""
    from fusiongraph.local_model.launcher import stop_local_server

    console.print("stopped" if stop_local_server() else "not running")


@local_app.command("status")
def local_status() -> None:
    """Say whether the local model server is up, and what it serves."""
    from fusiongraph.local_model.launcher import server_status

    status = server_status()
    console.print(
        {
            "running": status.running,
            "base_url": status.base_url,
            "pid": status.pid,
            "models": status.models,
            "busy": status.busy,
        }
    )
    if not status.running:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
