"""Loopback servers for tests and the benchmark: a free port, a bound socket, uvicorn in a thread.

Everything binds 127.0.0.1 with an OS-chosen port, so runs in parallel never collide.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import uvicorn

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (for a server in another process to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind(host: str = LOOPBACK, port: int = 0, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket (port 0: the OS picks one), inheritable by a child process.

    Binding before the server starts gives its URL up front, e.g. for an app that must know it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app: Any, **config: Any) -> uvicorn.Server:
    """uvicorn for `app`: warnings only, no lifespan; `config` adds uvicorn.Config settings."""
    return uvicorn.Server(
        uvicorn.Config(app, **{"log_level": "warning", "lifespan": "off", **config})
    )


class ThreadedServer:
    """Serve an ASGI app with uvicorn from a daemon thread (its own event loop) on `sock`, by
    default a fresh loopback socket. `with ThreadedServer(app) as server: server.url`."""

    start_timeout_s = 15.0

    def __init__(
        self, app: Any, sock: socket.socket | None = None, *, name: str = "uvicorn", **config: Any
    ) -> None:
        self.app = app
        self.sock = sock if sock is not None else bind()
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn_server(app, **config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=name, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float | None = None) -> Self:
        self.thread.start()
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.thread.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_server(app: Any, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Serve `app` on a loopback port (or on `sock`) in a thread; yield its base URL."""
    config.setdefault("timeout_graceful_shutdown", 2)
    with ThreadedServer(app, sock, name="uvicorn-test", **config) as server:
        yield server.url


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll `predicate` until true or `timeout`; a bound on waiting, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


async def wait_for_async(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """`wait_for` inside an event loop, which keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())
