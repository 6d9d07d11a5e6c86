"""Servers an outage test starts, stops, freezes and kills itself, and a proxy that loses a
COMMIT's answer.

The session's own servers (tests/conftest.py) serve every other test and are never touched
here: an outage test gets its own instances of tests/servers.py's PrivatePostgres and
PrivateRedis, removed at teardown whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..servers import PrivatePostgres, PrivateRedis, free_port

__all__ = [
    "CommitCutter",
    "PrivatePostgres",
    "PrivateRedis",
    "postgres_template",
    "private_postgres",
    "private_redis",
]


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that can lose the answer to one COMMIT: the
    transaction commits, and the client sees its connection die instead of the answer (a
    network failure or a crash at the worst moment, made deterministic)."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # a simple-protocol Query message

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port(socket.SOCK_STREAM)
        self.cut = threading.Event()  # set once an answer was lost
        self._armed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, name="commit-cutter", daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def lose_next_commit(self) -> None:
        self.cut.clear()
        self._armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            muted = threading.Event()
            for args in ((client, server, muted, True), (server, client, muted, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, muted: threading.Event, up: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                if up and self.COMMIT in data and self._armed.is_set():
                    self._armed.clear()
                    muted.set()  # from now on nothing comes back on this connection
                    sink.sendall(data)
                    time.sleep(0.2)  # PostgreSQL commits meanwhile
                    self.cut.set()
                    break
                if not (muted.is_set() and not up):
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    """One initdb per session: every private cluster starts as a copy of this one."""
    server = PrivatePostgres()
    try:
        server.init()
        yield server.data
    finally:
        server.destroy()


@pytest.fixture
def private_postgres(postgres_template: Path) -> Iterator[PrivatePostgres]:
    """A started throwaway PostgreSQL cluster; stopped and removed after the test."""
    server = PrivatePostgres()
    try:
        server.init(postgres_template)
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started throwaway Redis; killed after the test."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
