"""Throwaway PostgreSQL and Redis servers, started from the installed binaries on free
loopback ports in temporary directories, and removed afterwards whatever the outcome.

Two users: the test session (tests/conftest.py starts one of each for the whole session
when no ``RADIUSD_TEST_POSTGRES_URL`` / ``RADIUSD_TEST_REDIS_URL`` is given, so nothing has
to be running on the machine), and the outage tests (tests/e2e/servers.py), which start,
stop, freeze and kill their own.

PostgreSQL refuses to run as root, so its directory belongs to the ``postgres`` OS user and
``initdb`` / ``pg_ctl`` run through ``runuser`` when the tests run as root. The binaries
are found in ``$RADIUSD_TEST_PG_BIN``, else in the newest ``/usr/lib/postgresql/*/bin``
(Debian's layout).
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
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.ports import free_port

PG_OS_USER = "postgres"
MISSING_HINT = "install the Debian packages of .ci/deps (make test does, as root)"


def _pg_bin() -> Path:
    given = os.environ.get("RADIUSD_TEST_PG_BIN")
    if given:
        return Path(given)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary directory, on its own port (trust auth)."""

    def __init__(self) -> None:
        if not (PG_BIN / "pg_ctl").exists():
            pytest.fail(
                f"PostgreSQL binaries not found in {PG_BIN}: {MISSING_HINT}"
                " (or set RADIUSD_TEST_PG_BIN)"
            )
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

    def start(self, *, durable: bool = True) -> None:
        """``durable=False``: fsync off, for a server whose data is thrown away and which is
        never crashed on purpose (the test session's)."""
        fsync = "on" if durable else "off"
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            f" -c fsync={fsync} -c synchronous_commit=on"
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
            pytest.fail(f"redis-server is missing: {MISSING_HINT}")
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
