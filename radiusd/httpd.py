"""A tiny asyncio HTTP endpoint: GET /metrics (Prometheus text) and GET /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Health = Callable[[], Awaitable[list[str]]]  # names of unreachable parts


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
    host: str, port: int, registry: CollectorRegistry, health: Health
) -> asyncio.Server:
    return await asyncio.start_server(
        lambda r, w: _serve(r, w, registry, health), host=host, port=port
    )
