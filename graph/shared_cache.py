"""The panel-answer cache named by `--cache`: in-process, or Redis shared by every replica.

Why Redis through langgraph's own `RedisCache`: the node cache is LangGraph's (keys, TTLs,
serialisation), so a shared backend is only a different `BaseCache`; replicas that point at one
Redis answer an identical request from the panel answers another replica paid for.

Values (for `--cache` in the server and the CLI, or `FUSIONGRAPH_CACHE`):
  ""/None/off                 no cache
  memory (a bare `--cache`)   in this process only
  redis://host:port/db        Redis (`rediss://` for TLS, `unix://` sockets too)

`RedisCache` swallows connection errors (a cache must never fail a run), so a wrong URL would
silently cache nothing: the opener pings the server once and fails at start-up instead.
"""

from __future__ import annotations

from typing import Literal

from langgraph.cache.base import BaseCache

CACHE_PREFIX = "fusiongraph:cache:"
CONNECT_TIMEOUT_S = 5
MEMORY = "memory"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

CacheKind = Literal["none", "memory", "redis"]


def parse_cache_url(value: str | bool | None) -> tuple[CacheKind, str]:
    """Split a `--cache` value into its kind and the Redis URL (when there is one)."""
    if value is True:
        return "memory", ""
    text = (value or "").strip() if isinstance(value, str) else ""
    if not text or text.lower() in ("off", "none", "false", "0"):
        return "none", ""
    if text.lower() in (MEMORY, "memory://", "true", "1"):
        return "memory", ""
    if text.lower().startswith(REDIS_SCHEMES):
        return "redis", text
    raise ValueError(f"unknown cache {value!r}: use memory or redis://host:port/db")


def open_cache(value: str | bool | None) -> bool | BaseCache | None:
    """What `build_graph(cache=...)` takes for a `--cache` value; Redis is reached once here."""
    kind, url = parse_cache_url(value)
    if kind == "none":
        return None
    if kind == "memory":
        return True
    try:
        import redis
        from langgraph.cache.redis import RedisCache
    except ImportError as exc:
        raise ImportError(
            f"the Redis cache needs the extra `durable`: pip install 'fusiongraph[durable]' ({exc})"
        ) from exc
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise ValueError(f"cannot reach the Redis cache at {_where(url)}: {exc}") from exc
    return RedisCache(client, prefix=CACHE_PREFIX)


def _where(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
