"""Low-balance e-mail through a real SMTP server, and Disconnect-Requests (RFC 5176) to a NAS
listener written for the tests, against the real daemon."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..smtp_server import SmtpServer
from .conftest import SECRET, Daemon, make_daemon

PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "1", name: USA, rate: "0.10", setup_fee: "0", min_volume: 60, interval: 60,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Acme
    rate_table: retail
    notify_client_below: "0.50"
    notify_admin_below: "0.50"
    company: {billing_email: "bill@acme.example"}
    payments: [{id: opening, amount: "1.00"}]
    accounts:
      - {name: acme-login, ident: login, value: acme, password: s3cret}
"""

CONF_ID = "h323-conf-id=3A7C0F21 8B1D11EF 9F2A0050 56A1B2C3"


@dataclass
class NasListener:
    """A NAS's RFC 5176 port: checks each Disconnect-Request's authenticators and answers
    ACK, NAK (with an Error-Cause) or nothing, as ``mode`` says."""

    mode: str = "ack"
    error_cause: int = 503
    received: list[dict[int, list[bytes]]] = field(default_factory=list)
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            attrs = self.check(data)
            self.received.append(attrs)
            if self.mode == "silent":
                continue
            code = 41 if self.mode == "ack" else 42
            body = b"" if self.mode == "ack" else struct.pack("!BBI", 101, 6, self.error_cause)
            header = struct.pack("!BBH", code, data[1], 20 + len(body))
            auth = hashlib.md5(
                header + data[4:20] + body + SECRET.encode(), usedforsecurity=False
            ).digest()
            self.sock.sendto(header + auth + body, peer)

    @staticmethod
    def check(data: bytes) -> dict[int, list[bytes]]:
        assert data[0] == 40  # Disconnect-Request
        zero = data[:4] + bytes(16) + data[20:]
        assert hashlib.md5(zero + SECRET.encode(), usedforsecurity=False).digest() == data[4:20]
        attrs: dict[int, list[bytes]] = {}
        offset = 20
        while offset < len(data):
            kind, size = data[offset], data[offset + 1]
            value = data[offset + 2 : offset + size]
            if kind == 80:
                blank = bytearray(zero)
                blank[offset + 2 : offset + size] = bytes(16)
                mac = hmac.new(SECRET.encode(), bytes(blank), hashlib.md5).digest()
                assert mac == value, "Message-Authenticator"
            if kind == 26:  # Cisco VSA: key them as 9000 + the vendor type
                kind, value = 9000 + value[4], value[6:]
            attrs.setdefault(kind, []).append(value)
            offset += size
        return attrs


@pytest.fixture
def nas() -> Iterator[NasListener]:
    listener = NasListener()
    listener.sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=listener.serve, daemon=True)
    thread.start()
    yield listener
    listener.stopped.set()
    thread.join()
    listener.sock.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _daemon(tmp_path: Path, backend: tuple[str, str], nas: NasListener, smtp: SmtpServer) -> Daemon:
    extra = (
        f'coa_port = {nas.port}\n\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\n'
        'from = "billing@carrier.example"\ntimeout_seconds = 2\n'
    )
    daemon = make_daemon(tmp_path, backend, billing="stale_grace_seconds = 60", extra=extra)
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    return daemon


def _until(what: Callable[[], object], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def _json(daemon: Daemon, *args: str) -> list[dict[str, object]]:
    result = json.loads(daemon.billingctl(*args, "--format", "json").stdout)
    assert isinstance(result, list)
    return result


def _call(
    daemon: Daemon, session: str, conf_id: str = CONF_ID, *, within: float = 0
) -> dict[str, str]:
    """An authorized and started call; ``within`` seconds allowed for a change made with
    billingctl to reach the daemon (its catalog is read again every second)."""
    request = {
        "User-Name": '"acme"',
        "User-Password": '"s3cret"',
        "Called-Station-Id": '"15550001111"',
        "h323-conf-id": f'"{conf_id}"',
        "Acct-Session-Id": f'"{session}"',
    }
    deadline = time.monotonic() + within
    reply = daemon.radclient("auth", request)
    while reply is not None and reply.code != "Access-Accept" and time.monotonic() < deadline:
        time.sleep(0.2)
        reply = daemon.radclient("auth", request)
    assert reply is not None and reply.code == "Access-Accept"
    call = {
        "User-Name": '"acme"',
        "Acct-Session-Id": f'"{session}"',
        "h323-conf-id": f'"{conf_id}"',
        "Called-Station-Id": '"15550001111"',
        "NAS-IP-Address": "127.0.0.1",
    }
    start = daemon.radclient("acct", {**call, "Acct-Status-Type": "Start"})
    assert start is not None and start.code == "Accounting-Response"
    return call


@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
def test_a_hold_mails_the_client_and_a_stop_cuts_the_call(
    tmp_path: Path, backend: tuple[str, str], nas: NasListener, smtp: SmtpServer
) -> None:
    daemon = _daemon(tmp_path, backend, nas, smtp)
    daemon.start()
    try:
        _call(daemon, "leg-1")  # the grant holds the whole 1.00: funds 0 < 0.50
        _until(lambda: smtp.recorder.received)
        [mail] = smtp.recorder.received
        assert mail["To"] == "bill@acme.example" and "Acme" in mail["Subject"]
        _until(lambda: _json(daemon, "mail", "list", "--status", "sent"))
        [event] = _json(daemon, "events", "list", "--kind", "low_balance")
        assert event["client"] == "Acme"
        shown = daemon.client("Acme")["notifications"]
        assert isinstance(shown, dict) and shown["client"]["armed"] is False

        daemon.billingctl("clients", "edit", "Acme", "--status", "stop")
        _until(lambda: _json(daemon, "events", "list", "--kind", "disconnect_ack"))
        [request] = nas.received
        assert request[1] == [b"acme"]  # User-Name
        assert request[44] == [b"leg-1"]  # Acct-Session-Id
        assert request[4] == [socket.inet_aton("127.0.0.1")]  # NAS-IP-Address
        assert request[9024] == [CONF_ID.encode()]  # h323-conf-id as the NAS sent it
        assert 80 in request  # Message-Authenticator (checked by the listener)
        kinds = {e["kind"] for e in _json(daemon, "events", "list", "--client", "Acme")}
        assert kinds == {"low_balance", "client_stopped", "disconnect_ack"}

        def counted() -> bool:
            _status, text = daemon.http("/metrics")
            return (
                'radiusd_disconnects_total{result="ack"} 1.0' in text
                and 'radiusd_events_total{kind="low_balance"} 1.0' in text
                and 'radiusd_events_total{kind="disconnect_ack"} 1.0' in text
            )

        _until(counted, 5)
        # one crossing, one message: a second call's hold sends nothing more
        assert len(_json(daemon, "mail", "list")) == 1
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_nak_and_silence_are_recorded(
    tmp_path: Path, backend: tuple[str, str], nas: NasListener, smtp: SmtpServer
) -> None:
    daemon = _daemon(tmp_path, backend, nas, smtp)
    daemon.start()
    try:
        nas.mode = "nak"
        _call(daemon, "leg-1")
        daemon.billingctl("accounts", "disable", "acme-login")
        _until(lambda: _json(daemon, "events", "list", "--kind", "disconnect_nak"))
        [nak] = _json(daemon, "events", "list", "--kind", "disconnect_nak")
        assert isinstance(nak["detail"], dict)
        assert nak["detail"]["error_cause"] == 503
        assert nak["detail"]["reason"] == "account_disabled"

        # a call past its grant (at most max_call_length) plus stale_grace_seconds (60)
        daemon.billingctl("accounts", "enable", "acme-login")
        daemon.billingctl("payments", "add", "Acme", "5")
        nas.mode = "silent"
        call = _call(daemon, "leg-2", CONF_ID.replace("C3", "C4"), within=10)
        interim = {**call, "Acct-Status-Type": "Interim-Update", "Acct-Session-Time": "7300"}
        assert daemon.radclient("acct", interim) is not None
        _until(lambda: _json(daemon, "events", "list", "--kind", "disconnect_timeout"), 20)
        # sent three times with the same Identifier, then given up
        assert [r[44] for r in nas.received[1:]] == [[b"leg-2"]] * 3
        [timeout] = _json(daemon, "events", "list", "--kind", "disconnect_timeout")
        assert isinstance(timeout["detail"], dict) and timeout["detail"]["reason"] == "overrun"
        _status, text = daemon.http("/metrics")
        assert 'radiusd_disconnects_total{result="nak"} 1.0' in text
        assert 'radiusd_disconnects_total{result="timeout"} 1.0' in text
    finally:
        assert daemon.stop() == 0
