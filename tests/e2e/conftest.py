"""The real daemon on free loopback ports, driven by FreeRADIUS's radclient."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.ports import free_port

BIN = Path(sys.executable).parent
SECRET = "testing123"


@dataclass
class Reply:
    code: str
    attributes: dict[str, list[str]] = field(default_factory=dict)

    def one(self, name: str) -> str:
        values = self.attributes[name]
        assert len(values) == 1, values
        return values[0]

    def cisco(self, name: str) -> str:
        value = self.one(name)
        prefix = name + "="
        assert value.startswith(prefix), value
        return value[len(prefix) :]


def parse_radclient(output: str) -> Reply | None:
    reply: Reply | None = None
    for line in output.splitlines():
        if line.startswith("Received "):
            reply = Reply(line.split()[1])
        elif reply is not None and line.startswith(("\t", " ")) and " = " in line:
            name, value = line.strip().split(" = ", 1)
            reply.attributes.setdefault(name, []).append(value.strip('"'))
    return reply


@dataclass
class Daemon:
    workdir: Path
    config: Path
    auth_port: int
    acct_port: int
    metrics_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def billingctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "billingctl"), "--config", str(self.config), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"billingctl {args} failed: {result.stderr}")
        return result

    def start(self) -> None:
        log = (self.workdir / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "radiusd"), "serve", "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"radiusd exited early:\n{self.log()}")
            if '"event": "started"' in self.log():
                return
            time.sleep(0.05)
        raise AssertionError(f"radiusd did not start:\n{self.log()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self.process = None

    def log(self) -> str:
        path = self.workdir / "daemon.log"
        return path.read_text() if path.exists() else ""

    def log_events(self, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
        return out

    def radclient(
        self,
        kind: str,
        attributes: dict[str, str] | list[tuple[str, str]],
        *,
        retries: int = 2,
        timeout: float = 3,
    ) -> Reply | None:
        port = self.auth_port if kind == "auth" else self.acct_port
        pairs = attributes.items() if isinstance(attributes, dict) else attributes
        body = "".join(f"{name} = {value}\n" for name, value in pairs)
        result = subprocess.run(
            [
                "radclient",
                "-x",
                "-r",
                str(retries),
                "-t",
                str(timeout),
                f"127.0.0.1:{port}",
                kind,
                SECRET,
            ],
            input=body,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return parse_radclient(result.stdout)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def client(self, name: str) -> dict[str, object]:
        return dict(json.loads(self.billingctl("clients", "show", name, "--format", "json").stdout))


def write_config(
    path: Path,
    db_url: str,
    auth: int,
    acct: int,
    metrics: int,
    extra: str = "",
    redis_url: str = "",
    billing: str = "",
    server: str = "",
) -> None:
    path.write_text(
        f"""
[server]
auth_listen = "127.0.0.1:{auth}"
acct_listen = "127.0.0.1:{acct}"
metrics_listen = "127.0.0.1:{metrics}"
log_format = "json"
{server}

[database]
url = "{db_url}"

[redis]
url = "{redis_url}"

[billing]
max_call_length = 7200
auth_hold_seconds = 180
{billing}

[[nas]]
address = "127.0.0.1"
secret = "{SECRET}"
{extra}
"""
    )


@pytest.fixture(scope="session", autouse=True)
def _radclient_present() -> None:
    if shutil.which("radclient") is None:
        pytest.fail(
            "radclient is missing: install Debian's freeradius-utils"
            " (make test's .ci/install-deps does)"
        )


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(database URL, Redis URL or "") of each supported deployment, on real servers."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url")), ""
    pg = str(request.getfixturevalue("pg_url"))
    if request.param == "postgresql":
        return pg, ""
    return pg, str(request.getfixturevalue("redis_url"))


def make_daemon(
    tmp_path: Path,
    backend: tuple[str, str],
    billing: str = "",
    extra: str = "",
    server: str = "",
) -> Daemon:
    """``extra`` is appended after the first ``[[nas]]`` (127.0.0.1, SECRET): keys of that
    entry, then more ``[[nas]]`` tables; ``server`` adds lines to ``[server]``."""
    config = tmp_path / "radiusd.toml"
    ports = (free_port(), free_port(), free_port(socket.SOCK_STREAM))
    write_config(
        config,
        backend[0],
        *ports,
        extra=extra,
        redis_url=backend[1],
        billing=billing,
        server=server,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIUSD_")}
    return Daemon(tmp_path, config, *ports, env=env)


@pytest.fixture
def daemon(tmp_path: Path, backend: tuple[str, str]) -> Iterator[Daemon]:
    """A daemon (not started yet) on an empty migrated database of each backend."""
    d = make_daemon(tmp_path, backend)
    yield d
    if d.process is not None:
        d.process.kill()
        d.process.wait()
