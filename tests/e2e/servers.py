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

from bench.ports import free_port

from ..servers import PrivatePostgres, PrivateRedis

__all__ = [
    "CommitCutter",
    "PrivatePostgres",
    "PrivateRedis",
    "TcpProxy",
    "postgres_template",
    "private_postgres",
    "private_redis",
]


class TcpProxy:
    """A TCP proxy on a free loopback port in front of ``target_port``. ``sever()`` breaks
    every connection through it and refuses new ones (a network cut between one client and
    its server, while other clients still reach the server); ``mend()`` ends the cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port(socket.SOCK_STREAM)
        self._passing = threading.Event()
        self._passing.set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                if not self._passing.is_set():
                    raise ConnectionRefusedError
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            self._connect(client, server)

    def _connect(self, client: socket.socket, server: socket.socket) -> None:
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        _shut(source, sink)

    def sever(self) -> None:
        self._passing.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        _shut(*sockets)
        for sock in sockets:
            sock.close()

    def mend(self) -> None:
        self._passing.set()

    def close(self) -> None:
        self._listener.close()
        self.sever()


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class CommitCutter(TcpProxy):
    """A TCP proxy in front of PostgreSQL that can lose the answer to one COMMIT: the
    transaction commits, and the client sees its connection die instead of the answer (a
    network failure or a crash at the worst moment, made deterministic)."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # a simple-protocol Query message

    def __init__(self, target_port: int) -> None:
        self.cut = threading.Event()  # set once an answer was lost
        self._armed = threading.Event()
        super().__init__(target_port)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def lose_next_commit(self) -> None:
        self.cut.clear()
        self._armed.set()

    def _connect(self, client: socket.socket, server: socket.socket) -> None:
        muted = threading.Event()
        for args in ((client, server, muted, True), (server, client, muted, False)):
            threading.Thread(target=self._pump_commit, args=args, daemon=True).start()

    def _pump_commit(
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
        _shut(source, sink)


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
