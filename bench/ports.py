"""Free ports for the daemons the bench and the tests start (one definition for both)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on 127.0.0.1 now, drawn below the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) may be taken again, before the server binds it, by any
    outgoing connection of the parallel tests; below the range only another draw can."""
    low, _high = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as sock:  # every draw was taken: the kernel's
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999
