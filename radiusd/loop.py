"""The event loop: uvloop (a libuv loop, about a quarter of asyncio's cost per datagram)
where it is installed, else the standard one; and what the daemon and the supervisor share
about it (the signals they handle, a server's address), light to import: the supervisor
starts its workers before it imports anything of the billing side."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1})


def bound_server(server: asyncio.Server) -> str:
    """``host:port`` (``[v6]:port``) a listening server is bound to."""
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)
