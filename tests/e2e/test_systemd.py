"""contrib/systemd: the units pass `systemd-analyze verify`, and the real daemon speaks the
notify protocol (READY=1, WATCHDOG=1, STOPPING=1) over a real AF_UNIX datagram socket."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BIN, Daemon, make_daemon

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package (.ci/run does)")
    units = []
    for name in ("radiusd.service", "radiusd-upgrade.service"):
        text = (UNITS / name).read_text()
        assert "/opt/radiusd/bin/" in text
        # the binaries verify looks for: this test's own installation
        (tmp_path / name).write_text(text.replace("/opt/radiusd/bin/", f"{BIN}/"))
        units.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "radiusd" not in output, output  # no warning about our units either
    service = (UNITS / "radiusd.service").read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=radiusd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ReadWritePaths=/var/lib/radiusd",
    ):
        assert f"\n{line}\n" in service, line
    assert "Type=oneshot" in (UNITS / "radiusd-upgrade.service").read_text()


class NotifySocket:
    """What systemd listens on: messages with the sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, str]] = []

    def collect(self, until: str, count: int = 1, timeout: float = 20) -> None:
        """Receive until ``count`` messages start with ``until``."""
        deadline = time.monotonic() + timeout
        while sum(text.startswith(until) for _pid, text in self.messages) < count:
            assert time.monotonic() < deadline, f"no {until!r} in {self.messages}"
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode()))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def notified_daemon(tmp_path: Path, sqlite_url: str, notify: NotifySocket, server: str) -> Daemon:
    daemon = make_daemon(tmp_path, (sqlite_url, ""), server=server)
    daemon.billingctl("db", "upgrade")
    daemon.env["NOTIFY_SOCKET"] = str(notify.path)
    daemon.env["WATCHDOG_USEC"] = "300000"  # WATCHDOG=1 every 0.15 s
    return daemon


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_watchdog_stopping_over_a_real_socket(
    tmp_path: Path, sqlite_url: str, notify: NotifySocket, workers: int
) -> None:
    daemon = notified_daemon(tmp_path, sqlite_url, notify, f"workers = {workers}")
    daemon.start()
    assert daemon.process is not None
    main = daemon.process.pid
    try:
        notify.collect("READY=1")
        # READY=1 means it answers
        reply = daemon.radclient("auth", {"User-Name": "nobody", "Called-Station-Id": "1"})
        assert reply is not None and reply.code == "Access-Reject"
        notify.collect("WATCHDOG=1", count=3)
    finally:
        code = daemon.stop()
    notify.collect("STOPPING=1")
    assert code == 0
    texts = [text for _pid, text in notify.messages]
    ready = [t for t in texts if t.startswith("READY=1")]
    assert len(ready) == 1, texts
    assert texts.index(ready[0]) < next(i for i, t in enumerate(texts) if t.startswith("STOPPING"))
    # only the main process notifies (NotifyAccess=main): with workers, the supervisor
    assert {pid for pid, _text in notify.messages} == {main}
