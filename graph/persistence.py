"""Durable runs and the panel-answer cache: checkpointers opened from a URL, a cache wrapper.

Why a checkpointer: LangGraph saves the writes of every task of a superstep as soon as that task
finishes ("pending writes"), so a run that dies after some panelists answered (crash, SIGKILL,
cancelled request) resumes on the same `thread_id` with `graph.ainvoke(None, config)` and calls
only the panelists that had not finished. That needs the default `durability="async"` (or
`"sync"`); `"exit"` saves nothing until the run ends.

URLs (for `--checkpointer` in the server and the CLI, or `FUSIONGRAPH_CHECKPOINTER`):
  ""/None                         no checkpointer (every run stands alone)
  memory                          in-process only (`InMemorySaver`): survives nothing, for tests
  sqlite:///runs.db, ./runs.db    SQLite file (relative path; `sqlite:////abs/runs.db` absolute)
  postgresql://user:pw@host/db    PostgreSQL (`postgres://` too), through a connection pool

Why the cache wrapper: LangGraph's node cache stores whatever a node returned, and the panelist
returns its failures as ordinary results; a cached timeout would answer every identical request
with that timeout until it expired. `PanelAnswerCache` keeps only successful panel answers and
marks the ones it serves (`cached: True`, zero usage: this run did not pay for them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langgraph.cache.base import BaseCache, FullKey, Namespace
from langgraph.cache.memory import InMemoryCache
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph


SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# Concurrent runs each hold a connection only while they write a checkpoint.
POSTGRES_POOL_MAX = 10
CONNECT_TIMEOUT_S = 10
CLOSE_WAIT_S = 10  # bounds the wait for checkpoint writes a cancelled run left behind
DEFAULT_CACHE_TTL_S = 3600  # panel answers go stale (news, prices): an hour unless told otherwise

Kind = Literal["none", "memory", "sqlite", "postgres"]


def parse_checkpointer_url(url: str | None) -> tuple[Kind, str]:
    """Split a checkpointer URL into its kind and the target (file path or libpq URL)."""
    text = (url or "").strip()
    if not text:
        return "none", ""
    if text.lower() in ("memory", "memory://", "inmemory"):
        return "memory", ""
    lowered = text.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        return "postgres", text
    if lowered.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise ValueError(f"checkpointer URL {url!r} names no SQLite file")
        return "sqlite", path
    if "://" not in text and lowered.endswith(SQLITE_SUFFIXES):
        return "sqlite", text
    raise ValueError(
        f"unknown checkpointer {url!r}: use memory, sqlite:///path.db (or a path ending in "
        f"{', '.join(SQLITE_SUFFIXES)}), or postgresql://user:password@host:port/db"
    )


def _sqlite_path(path: str) -> str:
    if path == ":memory:":
        return path
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(target)


async def _finish_writes(saver: Any) -> None:
    """Let checkpoint writes still in flight finish before the saver's connections close.

    A cancelled run leaves its last checkpoint writes running: LangGraph stops waiting for them
    when the run is cancelled. Closed under them, a write is lost, and on SQLite its transaction
    stays open on a half-closed connection, so every later run on the same file, in this
    process, fails with "database is locked". Both savers serialise their statements on
    `saver.lock`, so the writes are done once nobody holds it or waits for it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_WAIT_S):
            while True:
                async with saver.lock:
                    pass
                await asyncio.sleep(0)  # a write that was waiting takes the lock now
                if not saver.lock.locked():
                    return


def _postgres_kwargs() -> dict[str, Any]:
    """What langgraph's Postgres savers require of every connection."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def _missing(kind: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"the {kind} checkpointer needs the extra `durable`: pip install 'fusiongraph[durable]' "
        f"({exc})"
    )


@asynccontextmanager
async def open_checkpointer(url: str | None) -> AsyncIterator[BaseCheckpointSaver | None]:
    """Open the checkpointer a URL names for async use (`ainvoke`, `astream`); close it after.

    The tables are created on first use (`setup()`), so a fresh database just works.
    """
    kind, target = parse_checkpointer_url(url)
    if kind == "none":
        yield None
    elif kind == "memory":
        yield InMemorySaver()
    elif kind == "sqlite":
        try:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        except ImportError as exc:
            raise _missing("SQLite", exc) from exc
        async with AsyncSqliteSaver.from_conn_string(_sqlite_path(target)) as saver:
            await saver.setup()
            try:
                yield saver
            finally:
                await _finish_writes(saver)
    else:
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg import AsyncConnection
            from psycopg.rows import DictRow
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:
            raise _missing("PostgreSQL", exc) from exc
        # One plain connection first: a wrong URL fails at once with libpq's reason, where the
        # pool would retry quietly until its timeout.
        probe = await AsyncConnection.connect(target, connect_timeout=CONNECT_TIMEOUT_S)
        await probe.close()
        # The rows are dicts (_postgres_kwargs' row_factory), as the saver requires.
        pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            target,
            min_size=1,
            max_size=POSTGRES_POOL_MAX,
            kwargs=_postgres_kwargs(),
            open=False,
        )
        await pool.open(wait=True, timeout=30)
        postgres = AsyncPostgresSaver(pool)
        try:
            await postgres.setup()
            yield postgres
        finally:
            await _finish_writes(postgres)
            await pool.close()


@contextmanager
def open_checkpointer_sync(url: str | None) -> Iterator[BaseCheckpointSaver | None]:
    """The same for synchronous callers (`graph.invoke`, `graph.stream`).

    Async savers cannot serve `invoke` from their own event loop, hence the second function.
    """
    kind, target = parse_checkpointer_url(url)
    if kind == "none":
        yield None
    elif kind == "memory":
        yield InMemorySaver()
    elif kind == "sqlite":
        try:
            from langgraph.checkpoint.sqlite import SqliteSaver
        except ImportError as exc:
            raise _missing("SQLite", exc) from exc
        with SqliteSaver.from_conn_string(_sqlite_path(target)) as saver:
            saver.setup()
            yield saver
    else:
        try:
            import psycopg
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import DictRow
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise _missing("PostgreSQL", exc) from exc
        psycopg.connect(target, connect_timeout=CONNECT_TIMEOUT_S).close()
        # The rows are dicts (_postgres_kwargs' row_factory), as the saver requires.
        pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            target,
            min_size=1,
            max_size=POSTGRES_POOL_MAX,
            kwargs=_postgres_kwargs(),
            open=False,
        )
        with pool:
            pool.wait(timeout=30)
            postgres = PostgresSaver(pool)
            postgres.setup()
            yield postgres


async def has_unfinished_run(
    graph: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig
) -> bool:
    """Whether the thread holds a run that stopped midway; resume it with `ainvoke(None, ...)`.

    A finished run leaves nothing to do (`next` empty); an interrupted one still has the tasks
    that had not finished, e.g. ("panelist",) after a crash during the panel.
    """
    if graph.checkpointer is None:
        return False
    state = await graph.aget_state(config)
    return bool(state.next)


class PanelAnswerCache(BaseCache):
    """Wraps any LangGraph cache for the panelist node: successes only, hits marked and free."""

    def __init__(self, inner: BaseCache | None = None) -> None:
        self.inner = inner if inner is not None else InMemoryCache()
        super().__init__(serde=self.inner.serde)

    @staticmethod
    def _keep(value: Any) -> bool:
        for channel, update in value:
            if channel == "panel" and any(r.get("error") for r in update or []):
                return False
        return True

    @staticmethod
    def _mark(value: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out = []
        for channel, update in value:
            if channel == "panel" and update:
                update = [
                    {
                        **r,
                        "cached": True,
                        "latency_s": 0.0,
                        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                    }
                    for r in update
                ]
            out.append((channel, update))
        return out

    def _filter(
        self, pairs: Mapping[FullKey, tuple[Any, int | None]]
    ) -> dict[FullKey, tuple[Any, int | None]]:
        return {k: v for k, v in pairs.items() if self._keep(v[0])}

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return {k: self._mark(v) for k, v in self.inner.get(keys).items()}

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return {k: self._mark(v) for k, v in (await self.inner.aget(keys)).items()}

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        if kept := self._filter(pairs):
            self.inner.set(kept)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        if kept := self._filter(pairs):
            await self.inner.aset(kept)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.inner.clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        await self.inner.aclear(namespaces)


def panel_cache(cache: bool | BaseCache | None) -> PanelAnswerCache | None:
    """`True` -> an in-memory cache; a BaseCache (e.g. SqliteCache, RedisCache) -> wrapped."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, PanelAnswerCache):
        return cache
    if cache is True:
        return PanelAnswerCache()
    if isinstance(cache, BaseCache):
        return PanelAnswerCache(cache)
    raise TypeError(f"cache must be a bool or a langgraph BaseCache, not {type(cache).__name__}")
