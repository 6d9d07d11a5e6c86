"""Throwaway PostgreSQL and Redis servers that a test starts, stops and kills itself.

The machine's shared servers (PostgreSQL on 5432, Redis on 6379) serve every other test and
are never touched here: an outage test gets its own instances, started from the installed
binaries on free loopback ports, and removed at teardown whatever the test's outcome.

PostgreSQL refuses to run as root, so its directory belongs to the ``postgres`` OS user and
``initdb`` / ``pg_ctl`` run through ``runuser`` when the tests run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from .conftest import free_port

PG_BIN = Path(os.environ.get("RADIUSD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary directory, on its own port (trust auth)."""

    def __init__(self) -> None:
        if not (PG_BIN / "pg_ctl").exists():
            pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} (set RADIUSD_TEST_PG_BIN)")
        self.port = free_port(socket.SOCK_STREAM)
        self.root = Path(tempfile.mkdtemp(prefix="radiusd-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.sockets.mkdir()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            entry = pwd.getpwnam(PG_OS_USER)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.running = False
        self.frozen: list[int] = []

    def init(self, template: Path | None = None) -> None:
        """initdb: a new cluster, the ``postgres`` superuser, trust authentication; or a copy
        of ``template``, the data directory of such a cluster never started (faster)."""
        if template is not None:
            subprocess.run(["cp", "-a", str(template), str(self.data)], check=True, timeout=60)
            return
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",  # the cluster itself is throwaway; the server runs with fsync=on
            timeout=120,
        )

    def _run(self, program: Path, *args: str, timeout: float) -> None:
        command = [str(program), *args]
        if self._as_root:
            command = ["runuser", "-u", PG_OS_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{program.name} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{self.log()}"
            )

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            " -c fsync=on -c synchronous_commit=on"
        )
        self._run(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions, disconnect, shut down cleanly;
        ``immediate``: quit at once (crash recovery at the next start)."""
        assert mode in ("smart", "fast", "immediate"), mode
        self._run(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "stop",
            timeout=90,
        )
        self.running = False

    def processes(self) -> list[int]:
        """The postmaster and its children (backends and auxiliary processes)."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *(int(pid) for pid in children)]

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: a server that accepts TCP connections (the
        kernel does) but never answers, like a hung host or a stalled disk."""
        self.frozen = self.processes()
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; its URL."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server whatever its state (frozen too) and remove the directory."""
        self.thaw()
        if self.running or (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (AssertionError, subprocess.TimeoutExpired):
                for pid in self.processes():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """One redis-server in the foreground as a subprocess: no persistence, so a restart on
    the same port starts empty."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is missing (Debian: apt-get install redis-server)")
        self.port = free_port(socket.SOCK_STREAM)
        self.root = Path(tempfile.mkdtemp(prefix="radiusd-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.root),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited early:\n{self.log()}")
            if _port_open(self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not listen on {self.port}:\n{self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with ``kill``) and wait; nothing survives (no persistence)."""
        process, self.process = self.process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def log(self) -> str:
        try:
            return (self.root / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)


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
