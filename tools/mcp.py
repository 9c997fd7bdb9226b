"""Panel tools from operator-configured MCP servers (a company's search or database, say).

The operator names the servers (`mcp_servers`: name -> how to reach it); a panelist in agentic
mode opens one session per server for its tool loop, lists the server's tools through
langchain-mcp-adapters and gets them beside web_search and web_fetch, under the same tool budget.
Every result, and every error text, is fenced as untrusted data (the server's data is not the
operator's instructions). A server that cannot be reached leaves its tools out; the panelist
still answers with the rest.

The adapters are the optional `mcp` extra: without it, a configured server is refused when the
run's settings are checked (`require_mcp`), before any model is called.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fusiongraph.tools.untrusted import delimit_untrusted

if TYPE_CHECKING:
    from langchain_mcp_adapters.sessions import (
        Connection,
        SSEConnection,
        StdioConnection,
        StreamableHttpConnection,
    )

logger = logging.getLogger(__name__)

EXTRA_HINT = "MCP servers need the `mcp` extra: pip install 'fusiongraph[mcp]'"
# The operator's servers from the environment: a JSON object, or the path of a JSON file.
MCP_SERVERS_ENV = "FUSIONGRAPH_MCP_SERVERS"
MAX_RESULT_CHARS = 20_000  # what one MCP tool result may put into a panelist's context
_NAME = r"^[A-Za-z0-9_-]{1,32}$"
_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")
_BRACED_VAR = re.compile(r"\$\{([^}]+)\}")
Artifact = dict[str, Any]


class McpServerSettings(BaseModel):
    """How to reach one MCP server: a command over stdio, or a URL (streamable HTTP or SSE).

    Values of `env` and `headers` may name environment variables as `${VAR}`, expanded when the
    session opens, so secrets stay in the environment and out of the run's stored plan.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["stdio", "streamable_http", "sse"] | None = Field(
        default=None, description="stdio (command) or streamable_http/sse (url); unset: inferred"
    )
    command: str | None = Field(default=None, description="stdio: the executable to start")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments")
    env: dict[str, str] | None = Field(
        default=None, description="stdio: its environment (unset: a safe subset of ours)"
    )
    cwd: str | None = Field(default=None, description="stdio: its working directory")
    url: str | None = Field(default=None, description="http: the MCP endpoint URL")
    headers: dict[str, str] | None = Field(default=None, description="http: request headers")
    connect_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="to start or reach it and list its tools"
    )
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="for each tool call")

    @model_validator(mode="after")
    def _reachable(self) -> McpServerSettings:
        transport = self.transport or ("stdio" if self.command else "streamable_http")
        if transport == "stdio" and not self.command:
            raise ValueError("a stdio MCP server needs `command`")
        if transport != "stdio" and not self.url:
            raise ValueError("an MCP server needs `command` (stdio) or `url` (http)")
        object.__setattr__(self, "transport", transport)
        return self

    def connection(self) -> Connection:
        """The langchain-mcp-adapters connection for this server, `${VAR}`s expanded."""
        if self.transport == "stdio":
            assert self.command is not None  # _reachable: a stdio server has a command
            stdio: StdioConnection = {
                "transport": "stdio",
                "command": self.command,
                "args": self.args,
            }
            if self.env is not None:
                stdio["env"] = {k: _expand(v) for k, v in self.env.items()}
            if self.cwd:
                stdio["cwd"] = self.cwd
            return stdio
        assert self.url is not None  # _reachable: any other server has a URL
        http: SSEConnection | StreamableHttpConnection = (
            {"transport": "sse", "url": self.url}
            if self.transport == "sse"
            else {"transport": "streamable_http", "url": self.url}
        )
        if self.headers:
            http["headers"] = {k: _expand(v) for k, v in self.headers.items()}
        return http


McpServers = dict[str, McpServerSettings]


def check_server_names(servers: dict[str, Any]) -> None:
    """Server names prefix their tools' names, which models only accept in [A-Za-z0-9_-]."""
    for name in servers:
        if not re.match(_NAME, name):
            raise ValueError(f"server name {name!r}: use 1-32 letters, digits, '_' or '-'")


def read_servers(value: str) -> dict[str, Any]:
    """`mcp_servers` as the operator gives it on the command line or in the environment: a JSON
    object (name -> server), or the path of a file holding one. Raises ValueError."""
    text = value.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"neither a JSON object nor a readable file: {exc}") from None
    try:
        servers = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(servers, dict):
        raise ValueError("must be a JSON object: server name -> {transport, command/args or url}")
    return servers


def require_mcp() -> None:
    """Raise ImportError with the install hint when the adapters are missing."""
    try:
        import langchain_mcp_adapters  # noqa: F401
    except ImportError:
        raise ImportError(EXTRA_HINT) from None


def servers_identity(servers: McpServers) -> dict[str, str]:
    """A digest per server of how it is reached (for the panel cache key): another command,
    URL or environment is another identity, without storing a secret in the key."""
    return {
        name: hashlib.sha256(
            json.dumps(server.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16]
        for name, server in sorted(servers.items())
    }


def _expand(value: str) -> str:
    return _BRACED_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)


@asynccontextmanager
async def mcp_tools(
    servers: McpServers, *, taken: frozenset[str] = frozenset()
) -> AsyncIterator[list[BaseTool]]:
    """The tools of every configured server, usable while the block runs (each server's session
    stays open until then; a panelist's tool loop is one block). Tool names are
    `<server>_<tool>`; one that collides with a name in `taken` is left out."""
    if not servers:
        yield []
        return
    from langchain_mcp_adapters.client import MultiServerMCPClient

    client = MultiServerMCPClient({name: server.connection() for name, server in servers.items()})
    tools: list[BaseTool] = []
    names = set(taken)
    async with AsyncExitStack() as stack:
        for name, server in servers.items():
            found = await _open_server(stack, client, name, server)
            for tool in found:
                fenced = _fenced(tool, name, server.timeout_s)
                if fenced.name in names:
                    logger.warning("MCP tool %s of %s left out: the name is taken", tool.name, name)
                    continue
                names.add(fenced.name)
                tools.append(fenced)
        yield tools


async def _open_server(
    stack: AsyncExitStack, client: Any, name: str, server: McpServerSettings
) -> list[BaseTool]:
    """Open the server's session on `stack` and list its tools; [] (logged) when it fails."""
    from langchain_mcp_adapters.tools import load_mcp_tools

    session_stack = AsyncExitStack()
    # On `stack` first: a panelist cancelled while the session opens still closes it.
    stack.push_async_callback(_close_quietly, session_stack, name)
    try:
        async with asyncio.timeout(server.connect_timeout_s):
            session = await session_stack.enter_async_context(client.session(name))
            return await load_mcp_tools(
                session, server_name=name, tool_name_prefix=True, handle_tool_errors=False
            )
    except Exception as exc:  # one broken server must not cost the panelist its other tools
        logger.warning("MCP server %s unavailable, its tools left out: %s", name, _describe(exc))
        await _close_quietly(session_stack, name)
        return []


async def _close_quietly(session_stack: AsyncExitStack, name: str) -> None:
    try:
        await session_stack.aclose()
    except Exception as exc:  # the answer is written; a server that closes badly changes nothing
        logger.warning("MCP server %s did not close cleanly: %s", name, _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fenced(tool: BaseTool, server: str, timeout_s: float) -> BaseTool:
    """The adapter's tool with its output (or error) fenced as untrusted, cut to size, within
    `timeout_s`, and never raising: a failure is text the model can route around."""
    name = _TOOL_NAME_BAD.sub("_", tool.name)[:64]
    source = f"MCP server {server}, tool {tool.name.removeprefix(f'{server}_')}"
    description = f"[MCP server {server!r}] {tool.description or tool.name}"

    async def call(**arguments: Any) -> tuple[str, Artifact]:
        try:
            async with asyncio.timeout(timeout_s):
                message = await tool.ainvoke(
                    {"name": tool.name, "args": arguments, "id": "mcp", "type": "tool_call"}
                )
        except TimeoutError:
            msg = f"no answer within {timeout_s:g} s"
            return f"{name} failed: {msg}", {"sources": [], "error": msg}
        except Exception as exc:  # the server's error text is its data too: fenced
            msg = _describe(exc)
            return f"{name} failed:\n{delimit_untrusted(msg, source)}", {
                "sources": [],
                "error": msg[:500],
            }
        text = result_text(message.content, getattr(message, "artifact", None))
        return f"{name} result:\n{delimit_untrusted(text, source)}", {"sources": [], "mcp": server}

    # load_mcp_tools gives every tool its server's inputSchema; BaseTool's may be None.
    assert tool.args_schema is not None
    return StructuredTool(
        name=name,
        description=description,
        args_schema=tool.args_schema,
        coroutine=call,
        response_format="content_and_artifact",
    )


def result_text(content: Any, artifact: Any = None) -> str:
    """An MCP result as text: its text blocks; other blocks named; the structured content when
    there is no text. Cut to MAX_RESULT_CHARS."""
    if isinstance(content, str):
        parts = [content]
    else:
        parts = []
        for block in content or []:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'non-text')} content omitted]")
    text = "\n".join(p for p in parts if p)
    structured = (artifact or {}).get("structured_content") if isinstance(artifact, dict) else None
    if not text.strip() and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    text = text or "(empty result)"
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + " [...truncated]"
    return text
