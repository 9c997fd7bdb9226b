"""The shared HTTP transport of a loop's models: several small connection pools, not one big one.

httpcore walks every connection of a pool each time a request is queued or a response is closed
(closed? expired? idle? and, per idle connection, a count of all the idle ones), so a pool's CPU
per request grows with the connections it holds. A server with 200 runs in flight holds 600
panel connections: in one pool that walk was the largest single item of the server's CPU under
load (bench item 4). `ShardedTransport` spreads requests over a few pools, each
request to the pool with the fewest in flight (the first on a tie, so a quiet server keeps
reusing one pool's warm connections), which cuts the walk by the number of pools.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx

POOLS = 8
IDLE_PER_POOL = 8  # keep-alive connections kept per pool (idle ones are walked too)


class _Released(httpx.AsyncByteStream):
    """A response body that gives its pool's slot back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: _Slot) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()


class _Slot:
    """One request's claim on a pool, released once."""

    __slots__ = ("_counts", "_index")

    def __init__(self, counts: list[int], index: int) -> None:
        self._counts = counts
        self._index: int | None = index
        counts[index] += 1

    def __call__(self) -> None:
        if self._index is not None:
            self._counts[self._index] -= 1
            self._index = None


class ShardedTransport(httpx.AsyncBaseTransport):
    """`pools` httpx transports behind one; a request goes to the least busy."""

    def __init__(
        self, *, verify: ssl.SSLContext, pools: int = POOLS, idle_per_pool: int = IDLE_PER_POOL
    ) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=idle_per_pool)
        self._pools = [httpx.AsyncHTTPTransport(verify=verify, limits=limits) for _ in range(pools)]
        self._in_flight = [0] * pools

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Requests each pool is serving now (a streamed response counts until it is closed)."""
        return tuple(self._in_flight)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counts = self._in_flight
        index = counts.index(min(counts))
        slot = _Slot(counts, index)
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            slot()
            raise
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _Released(response.stream, slot)
        else:  # nothing to see it closed by (httpx's own transports never get here)
            slot()
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()
