"""A tiny asyncio HTTP endpoint: GET /metrics (Prometheus text) and GET /healthz, and the
probe of the dependencies behind /healthz and ``radiusd_dependency_up``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from billing_core.config import ListenAddress

Health = Callable[[], Awaitable[list[str]]]  # names of unreachable parts
HealthCheck = tuple[str, Callable[[], bool]]  # a part's name, and its check (True: reachable)
Report = Callable[[str, bool], None]  # a part's name and whether it answered: the gauge's feed

HEALTH_TIMEOUT = 2.0  # seconds a part may take to answer /healthz before it counts as down
HEALTH_EVERY = 5.0  # seconds between the probes that feed radiusd_dependency_up


def health_probe(
    checks: Sequence[HealthCheck], report: Report, *, timeout: float = HEALTH_TIMEOUT
) -> Health:
    """/healthz: the names of the unreachable parts (database, redis), none when healthy;
    each part's state ``report``-ed on the way (``radiusd_dependency_up``).

    The parts are checked at once, each in a thread, and one that does not answer within
    ``timeout`` (a server that accepts connections but hangs) is unreachable too. Its check
    goes on in the background and the next requests wait for that same check rather than
    starting another, so a hung server holds one thread per part, never the whole pool."""
    parts = list(checks)
    running: dict[str, asyncio.Future[bool]] = {}

    async def probe(name: str, check: Callable[[], bool]) -> bool:
        future = running.get(name)
        if future is None or future.done():
            future = running[name] = asyncio.get_running_loop().run_in_executor(None, check)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False

    async def health() -> list[str]:
        results = await asyncio.gather(*(probe(name, check) for name, check in parts))
        down: list[str] = []
        for (name, _check), ok in zip(parts, results, strict=True):
            report(name, ok)
            if not ok:
                down.append(name)
        return down

    return health


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    registry: CollectorRegistry,
    health: Health,
) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        while True:  # skip headers
            header = await asyncio.wait_for(reader.readline(), timeout=5)
            if header in (b"\r\n", b"\n", b""):
                break
        parts = line.decode("latin-1").split()
        if len(parts) < 2 or parts[0] != "GET":
            writer.write(_response("405 Method Not Allowed", b"GET only\n"))
        else:
            path = parts[1].split("?", 1)[0]
            if path == "/metrics":
                writer.write(_response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST))
            elif path == "/healthz":
                down = await health()
                if down:
                    writer.write(
                        _response("503 Service Unavailable", ("\n".join(down) + "\n").encode())
                    )
                else:
                    writer.write(_response("200 OK", b"ok\n"))
            else:
                writer.write(_response("404 Not Found", b"not found\n"))
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def start_http(
    listen: ListenAddress, registry: CollectorRegistry, health: Health
) -> asyncio.Server:
    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Awaitable[None]:
        return _serve(reader, writer, registry, health)

    if not listen.dual_stack:
        return await asyncio.start_server(handler, host=listen.host, port=listen.port)
    # asyncio binds IPv6 with V6ONLY on: "[::]" would not serve IPv4 scrapers, and a
    # v4-mapped address would not bind at all (EINVAL)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((listen.host, listen.port))
    except OSError:
        sock.close()
        raise
    return await asyncio.start_server(handler, sock=sock)
