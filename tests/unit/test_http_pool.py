"""The models' shared transport: requests in flight spread over small pools, slots come back."""

from __future__ import annotations

import contextlib

import httpx

from fusiongraph.graph.http_pool import ShardedTransport
from tests.support.servers import free_port
from tests.support.upstream import UpstreamServer


def _body(stream: bool) -> dict[str, object]:
    return {"model": "m-0.0s", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def _connections(transport: ShardedTransport) -> list[int]:
    return [len(pool._pool.connections) for pool in transport._pools]


async def test_requests_in_flight_go_to_the_least_busy_pool(upstream: UpstreamServer) -> None:
    transport = ShardedTransport(verify=httpx.create_ssl_context(), pools=3)
    url = f"{upstream.base_url}/chat/completions"
    async with httpx.AsyncClient(transport=transport) as client:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(4):  # four streamed answers held open: 2 + 1 + 1
                await stack.enter_async_context(client.stream("POST", url, json=_body(True)))
            assert transport.in_flight == (2, 1, 1)
        assert transport.in_flight == (0, 0, 0)  # closing a response gives its slot back


async def test_a_quiet_client_keeps_reusing_one_pool(upstream: UpstreamServer) -> None:
    transport = ShardedTransport(verify=httpx.create_ssl_context(), pools=3)
    url = f"{upstream.base_url}/chat/completions"
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            (await client.post(url, json=_body(False))).raise_for_status()
        assert _connections(transport) == [1, 0, 0]  # one warm connection, reused


async def test_a_failed_request_gives_its_slot_back() -> None:
    transport = ShardedTransport(verify=httpx.create_ssl_context(), pools=2)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with contextlib.suppress(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/")
        assert transport.in_flight == (0, 0)
