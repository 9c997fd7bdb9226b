"""Keep a test on this machine: refuse, and remember, any connection to a non-loopback address.

The unit suite uses it (tests/unit/conftest.py): its servers and fake upstreams listen on
127.0.0.1, and a test that tries to reach anything else fails, even when the code under test
catches the refused connection and carries on.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def is_loopback(family: int, address: Any) -> bool:
    """A Unix socket, or an IPv4/IPv6 loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Within the block, connect()/connect_ex() to a non-loopback address raises ENETUNREACH;
    the list yielded collects every such attempt, so the caller can fail on it afterwards."""
    attempts: list[str] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if not is_loopback(sock.family, address):
            attempts.append(repr(address))
            raise OSError(errno.ENETUNREACH, f"a unit test may only reach loopback: {address!r}")

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return connect_ex(sock, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign]
