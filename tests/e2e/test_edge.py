"""The edge under attack and overload, end to end: the real daemon over real UDP sockets.

Datagrams are built by hand (pyrad packets with the packaged dictionary, or raw bytes) and
sent from loopback addresses: 127.0.0.1 is NAS "nas-a" (the conftest's first [[nas]]),
127.0.0.2 / 127.0.0.3 are further NAS entries added per test, 127.0.0.9 is no NAS at all.
The protocol object itself is covered without sockets by tests/unit/test_transport.py and
test_fuzz.py; these tests check what a switch and an operator see: replies, /metrics, the
log, the database, exit codes and signals.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyrad import packet as rp
from sqlalchemy import create_engine, text

from radiusd.codec import load_dictionary

from .conftest import BIN, SECRET, Daemon, make_daemon

D: Any = load_dictionary()
A_SECRET = SECRET.encode()
B_SECRET = b"b-secret-Lq2v"
C_SECRET = b"c-secret-reloaded-Hw4x"
ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_RESPONSE = 2, 3, 5
MESSAGE_AUTHENTICATOR, PROXY_STATE = 80, 33

PASSWORD = "Pw-sesame-7f3Kq9"  # the login account's password: must never be shown
PROVISIONING = f"""
rate_tables:
  - name: flat
    currency: USD
    rates:
      - {{code: "1", name: USA, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2020-01-01T00:00:00Z"}}
clients:
  - name: Edge
    postpaid: true
    rate_table: flat
    accounts:
      - {{name: edge-login, ident: login, value: edge}}
      - {{name: guarded-login, ident: login, value: guarded, password: "{PASSWORD}"}}
"""
CALLED = "15550001111"

# nas-a is the conftest's 127.0.0.1 entry (secret SECRET); nas-b insists on a
# Message-Authenticator.
TWO_NAS = f"""name = "nas-a"

[[nas]]
address = "127.0.0.2"
name = "nas-b"
secret = "{B_SECRET.decode()}"
require_message_authenticator = true
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """make(db_url, extra=..., server=...): a provisioned daemon, not started; killed after."""
    made: list[Daemon] = []

    def make(db_url: str, *, extra: str = TWO_NAS, server: str = "", billing: str = "") -> Daemon:
        daemon = make_daemon(tmp_path, (db_url, ""), billing=billing, extra=extra, server=server)
        (tmp_path / "edge.yaml").write_text(PROVISIONING)
        daemon.billingctl("load", str(tmp_path / "edge.yaml"))
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:  # SIGTERM first: the workers of a supervisor stop with it
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.terminate()
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


# --------------------------------------------------------------------------- packets


def access_request(
    secret: bytes = A_SECRET,
    *,
    ma: bool = False,
    user: str = "edge",
    called: str | None = CALLED,
    password: str | None = None,
    proxy_state: Sequence[bytes] = (),
    extra: Sequence[tuple[str, Any]] = (),
) -> tuple[Any, bytes]:
    pkt = rp.AuthPacket(dict=D, secret=secret, id=random.randrange(256))
    if ma:
        pkt.add_message_authenticator()
    pkt.AddAttribute("User-Name", user)
    if password is not None:
        pkt["User-Password"] = pkt.PwCrypt(password)
    if called is not None:
        pkt.AddAttribute("Called-Station-Id", called)
    for name, value in extra:
        pkt.AddAttribute(name, value)
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, bytes(pkt.RequestPacket())


def acct_request(
    secret: bytes = A_SECRET,
    *,
    session: str,
    status: str | None = "Start",
    session_time: int | None = None,
    proxy_state: Sequence[bytes] = (),
) -> tuple[Any, bytes]:
    pkt = rp.AcctPacket(dict=D, secret=secret, id=random.randrange(256))
    if status is not None:
        pkt.AddAttribute("Acct-Status-Type", status)
    pkt.AddAttribute("Acct-Session-Id", session)
    pkt.AddAttribute("User-Name", "edge")
    pkt.AddAttribute("Called-Station-Id", CALLED)
    if session_time is not None:
        pkt.AddAttribute("Acct-Session-Time", session_time)
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, bytes(pkt.RequestPacket())


def status_server(secret: bytes = A_SECRET, *, ma: bool, accounting: bool) -> tuple[Any, bytes]:
    cls = rp.AcctPacket if accounting else rp.AuthPacket
    pkt = cls(code=rp.StatusServer, dict=D, secret=secret, id=random.randrange(256))
    pkt.message_authenticator = ma
    return pkt, bytes(pkt.RequestPacket())


def raw_packet(code: int, attributes: bytes = b"", *, length: int | None = None) -> bytes:
    """A header and raw attribute bytes; ``length`` overrides the Length field."""
    size = 20 + len(attributes) if length is None else length
    return struct.pack("!BBH", code, 42, size) + os.urandom(16) + attributes


def attributes_of(raw: bytes) -> list[tuple[int, bytes]]:
    """A reply's attributes in wire order."""
    (length,) = struct.unpack_from("!H", raw, 2)
    out, pos = [], 20
    while pos < length:
        kind, size = raw[pos], raw[pos + 1]
        out.append((kind, raw[pos + 2 : pos + size]))
        pos += size
    return out


def verified(pkt: Any, raw: bytes) -> bool:
    return bool(pkt.VerifyReply(pkt.CreateReply(packet=raw), raw, enforce_ma=True))


class Nas:
    """A switch: one UDP socket bound to a loopback source address."""

    def __init__(self, daemon: Daemon, source: str = "127.0.0.1") -> None:
        self.daemon = daemon
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.tries = 0  # how many sends the last ask() needed

    def close(self) -> None:
        self.sock.close()

    def port(self, accounting: bool) -> int:
        return self.daemon.acct_port if accounting else self.daemon.auth_port

    def send(self, data: bytes, *, accounting: bool = False) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port(accounting)))

    def receive(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return None
        data, _addr = self.sock.recvfrom(65535)
        return data

    def ask(
        self,
        request: tuple[Any, bytes],
        *,
        accounting: bool = False,
        timeout: float = 2.0,
        tries: int = 1,
    ) -> bytes | None:
        """Send and wait for the verified reply, re-sending the same bytes like a switch."""
        pkt, data = request
        for attempt in range(1, tries + 1):
            self.tries = attempt
            self.send(data, accounting=accounting)
            deadline = time.monotonic() + timeout
            while (raw := self.receive(deadline - time.monotonic())) is not None:
                if raw[1] == pkt.id and verified(pkt, raw):
                    return raw
        return None


def metrics_text(daemon: Daemon) -> str:
    status, body = daemon.http("/metrics")
    assert status == 200
    return body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics(daemon: Daemon) -> Samples:
    """/metrics as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics_text(daemon))
        for sample in family.samples
    }


def value(sampled: Samples, name: str, **labels: str) -> float:
    return sampled.get((name, frozenset(labels.items())), 0.0)


def total(sampled: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in sampled.items() if n == name and wanted <= lab)


def count_rows(db_url: str, sql: str, **params: Any) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())
    finally:
        engine.dispose()


def rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def requests_logged(daemon: Daemon, **fields: object) -> int:
    return sum(
        1
        for record in daemon.log_events("radius_request")
        if all(record.get(k) == v for k, v in fields.items())
    )


def no_reply(nases: Sequence[Nas], timeout: float = 0.6) -> list[bytes]:
    """Whatever the sockets receive within ``timeout`` (expected: nothing)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([n.sock for n in nases], [], [], left)
        for sock in ready:
            got.append(sock.recvfrom(65535)[0])
    return got


def launch(daemon: Daemon) -> subprocess.Popen[bytes]:
    """Start the daemon without waiting for it to be ready (Daemon.start waits)."""
    log = (daemon.workdir / "daemon.log").open("ab")
    daemon.process = subprocess.Popen(
        [str(BIN / "radiusd"), "serve", "--config", str(daemon.config)],
        cwd=daemon.workdir,
        env=daemon.env,
        stdout=log,
        stderr=log,
    )
    return daemon.process


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(daemon: Daemon, event: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(daemon.log_events(event)) < count:
        assert time.monotonic() < deadline, f"no {event}:\n{daemon.log()[-3000:]}"
        assert daemon.process is None or daemon.process.poll() is None, daemon.log()[-3000:]
        time.sleep(0.01)


# --------------------------------------------------------------------------- 1. forged, broken


def test_forged_and_broken_packets_get_no_reply_and_are_counted_by_reason(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url)
    daemon.start()
    a, b, stranger = Nas(daemon), Nas(daemon, "127.0.0.2"), Nas(daemon, "127.0.0.9")
    before = metrics(daemon)

    def corrupt(data: bytes, offset: int) -> bytes:
        return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]

    _, with_ma = access_request(ma=True)
    assert attributes_of(with_ma)[0][0] == MESSAGE_AUTHENTICATOR  # its value is at 22..38
    _, acct = acct_request(session="forged-1")
    _, valid_access = access_request()
    oversized = raw_packet(1, bytes(4980))
    assert len(oversized) == 5000
    # (sender, accounting port?, datagram, reason, counted for which NAS)
    cases: list[tuple[Nas, bool, bytes, str, str]] = [
        (a, False, corrupt(with_ma, 30), "bad_message_authenticator", "nas-a"),
        (
            a,
            False,
            access_request(b"wrong-secret", ma=True)[1],
            "bad_message_authenticator",
            "nas-a",
        ),
        (b, False, access_request(A_SECRET, ma=True)[1], "bad_message_authenticator", "nas-b"),
        (a, True, corrupt(acct, 10), "bad_authenticator", "nas-a"),
        (
            a,
            True,
            acct_request(b"wrong-secret", session="forged-2")[1],
            "bad_authenticator",
            "nas-a",
        ),
        (a, False, valid_access[:12], "truncated", "nas-a"),
        (a, True, acct[:19], "truncated", "nas-a"),
        (
            a,
            False,
            valid_access[:2] + struct.pack("!H", len(valid_access) + 40) + valid_access[4:],
            "bad_length",
            "nas-a",
        ),
        (a, False, raw_packet(1, length=19), "bad_length", "nas-a"),
        (a, False, raw_packet(1, bytes([1, 0, 0, 0])), "bad_attribute", "nas-a"),
        (a, False, raw_packet(1, bytes([1, 1, 0, 0])), "bad_attribute", "nas-a"),
        (a, False, raw_packet(1, bytes([1, 6, 97, 98])), "bad_attribute", "nas-a"),
        (a, False, raw_packet(99, bytes([1, 3, 97])), "unknown_code", "nas-a"),
        (a, False, raw_packet(ACCESS_ACCEPT), "unknown_code", "nas-a"),
        (a, True, raw_packet(40), "unknown_code", "nas-a"),
        (a, False, oversized, "oversized", "nas-a"),
        (
            a,
            False,
            access_request(proxy_state=[b"ps"])[1],
            "proxy_state_without_message_authenticator",
            "nas-a",
        ),
        (b, False, access_request(B_SECRET)[1], "missing_message_authenticator", "nas-b"),
        (a, False, acct, "wrong_port", "nas-a"),
        (a, True, valid_access, "wrong_port", "nas-a"),
        (stranger, False, access_request()[1], "unknown_nas", "unknown"),
        (stranger, True, acct_request(session="forged-3")[1], "unknown_nas", "unknown"),
    ]
    for sender, accounting, data, _reason, _nas in cases:
        sender.send(data, accounting=accounting)
    # random bytes, each datagram dropped and counted once under some reason
    rng = random.Random(3596)
    noise = [rng.randbytes(rng.choice([1, 19, 20, 21, 40, 100, 300, 4096])) for _ in range(300)]
    for i, data in enumerate(noise):
        a.send(data, accounting=bool(i % 2))
    # well-formed accounting without Acct-Status-Type: dropped by the handler as malformed
    a.send(acct_request(session="no-status", status=None)[1], accounting=True)

    assert no_reply([a, b, stranger]) == []
    deadline = time.monotonic() + 5
    expected_drops = len(cases) + len(noise) + 1
    while time.monotonic() < deadline:
        after = metrics(daemon)
        if (
            total(after, "radiusd_dropped_total") - total(before, "radiusd_dropped_total")
            >= expected_drops
        ):
            break
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    by_reason: dict[str, int] = {}
    by_nas_reason: dict[tuple[str, str], int] = {}
    for _sender, _acct, _data, reason, nas in cases:
        by_reason[reason] = by_reason.get(reason, 0) + 1
        by_nas_reason[(nas, reason)] = by_nas_reason.get((nas, reason), 0) + 1
    noisy = {"truncated", "bad_length", "bad_attribute", "unknown_code", "undecodable"}
    for reason, count in by_reason.items():  # the random bytes add to the framing reasons
        got = delta("radiusd_dropped_total", reason=reason)
        assert got >= count if reason in noisy else got == count, (reason, got)
    for (nas, reason), count in by_nas_reason.items():
        got = delta("radiusd_nas_dropped_total", nas=nas, reason=reason)
        assert got >= count if reason in noisy else got == count, (nas, reason, got)
    assert delta("radiusd_dropped_total", reason="malformed_accounting") == 1
    # every datagram counted exactly once, as a drop and as a dropped request
    assert total(after, "radiusd_dropped_total") - total(before, "radiusd_dropped_total") == (
        expected_drops
    )
    assert (
        total(after, "radiusd_requests_total", result="dropped")
        - total(before, "radiusd_requests_total", result="dropped")
        == expected_drops
    )
    assert total(after, "radiusd_requests_total") - total(before, "radiusd_requests_total") == (
        expected_drops
    )
    assert requests_logged(daemon) == 0

    # the server is alive and answers valid requests from both NAS entries
    reply = a.ask(access_request())
    assert reply is not None and reply[0] == ACCESS_ACCEPT
    reply = b.ask(access_request(B_SECRET, ma=True))
    assert reply is not None and reply[0] == ACCESS_ACCEPT
    reply = a.ask(acct_request(session="after-the-noise"), accounting=True)
    assert reply is not None and reply[0] == ACCOUNTING_RESPONSE
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 2. replies


def test_replies_sign_first_echo_proxy_state_and_answer_status_server(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url)
    daemon.start()
    a, b = Nas(daemon), Nas(daemon, "127.0.0.2")

    # Access-Accept and Access-Reject: Message-Authenticator first, whether or not the
    # request had one, and valid (verified() checks it against the request)
    for sender, request, code in [
        (a, access_request(), ACCESS_ACCEPT),
        (a, access_request(ma=True), ACCESS_ACCEPT),
        (a, access_request(user="nobody"), ACCESS_REJECT),
        (a, access_request(user="guarded", password="wrong"), ACCESS_REJECT),
        (a, access_request(ma=True, called=None), ACCESS_ACCEPT),  # authentication only
        (b, access_request(B_SECRET, ma=True), ACCESS_ACCEPT),
        (b, access_request(B_SECRET, ma=True, user="nobody"), ACCESS_REJECT),
    ]:
        raw = sender.ask(request)
        assert raw is not None and raw[0] == code, (request[0].code, raw)
        first_kind, first_value = attributes_of(raw)[0]
        assert first_kind == MESSAGE_AUTHENTICATOR and len(first_value) == 16

    # Proxy-State: copied unmodified and in order (with a Message-Authenticator present)
    states = [b"\x00second-hop\xff", b"first-hop"]
    for sender, request, accounting in [
        (a, access_request(ma=True, proxy_state=states), False),
        (a, access_request(ma=True, user="nobody", proxy_state=states), False),
        (b, access_request(B_SECRET, ma=True, proxy_state=states), False),
        (a, acct_request(session="ps-1", proxy_state=states), True),
    ]:
        raw = sender.ask(request, accounting=accounting)
        assert raw is not None
        echoed = [v for kind, v in attributes_of(raw) if kind == PROXY_STATE]
        assert echoed == states
        if not accounting:
            assert attributes_of(raw)[0][0] == MESSAGE_AUTHENTICATOR

    # Status-Server with a Message-Authenticator: Access-Accept on the auth port,
    # Accounting-Response on the accounting port; both signed
    for sender, secret in ((a, A_SECRET), (b, B_SECRET)):
        raw = sender.ask(status_server(secret, ma=True, accounting=False))
        assert raw is not None and raw[0] == ACCESS_ACCEPT
        assert attributes_of(raw)[0][0] == MESSAGE_AUTHENTICATOR
        raw = sender.ask(status_server(secret, ma=True, accounting=True), accounting=True)
        assert raw is not None and raw[0] == ACCOUNTING_RESPONSE
        assert MESSAGE_AUTHENTICATOR in [kind for kind, _ in attributes_of(raw)]

    # ... and without one: dropped on both ports, counted
    before = metrics(daemon)
    a.send(status_server(ma=False, accounting=False)[1])
    a.send(status_server(ma=False, accounting=True)[1], accounting=True)
    assert no_reply([a]) == []
    after = metrics(daemon)
    reason = "missing_message_authenticator"
    assert (
        value(after, "radiusd_dropped_total", reason=reason)
        - value(before, "radiusd_dropped_total", reason=reason)
        == 2
    )
    assert value(after, "radiusd_nas_dropped_total", nas="nas-a", reason=reason) == 2
    assert value(after, "radiusd_requests_total", type="status", result="answered") == 4
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 3. duplicates


def test_a_retransmission_is_answered_from_the_cache_and_processed_once(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url, server="duplicate_cache_seconds = 1.5\nduplicate_cache_size = 2")
    daemon.start()
    nas = Nas(daemon)

    def replies(window: float) -> list[bytes]:
        got = []
        while (raw := nas.receive(window)) is not None:
            got.append(raw)
        return got

    def events(session: str) -> int:
        return count_rows(
            sqlite_url, "SELECT count(*) FROM acct_events WHERE acct_session_id = :s", s=session
        )

    # accounting: twice back to back (the copy arrives while the first is in flight or just
    # answered), then again after the reply
    _, start = acct_request(session="dup-acct")
    nas.send(start, accounting=True)
    nas.send(start, accounting=True)
    first = replies(0.5)
    nas.send(start, accounting=True)
    again = replies(0.3)
    assert len(first) in (1, 2) and len(again) == 1
    assert all(raw == first[0] for raw in first + again)  # the same bytes
    assert first[0][0] == ACCOUNTING_RESPONSE
    assert events("dup-acct") == 1
    first_acct = first[:1]
    assert requests_logged(daemon, session_id="dup-acct") == 1

    # authorization: the same for an Access-Request (its reply carries a fresh
    # Message-Authenticator; a re-run would also hold a second call)
    pkt, access = access_request(ma=True, extra=[("Acct-Session-Id", "dup-auth")])
    nas.send(access)
    nas.send(access)
    first = replies(0.5)
    nas.send(access)
    again = replies(0.3)
    assert len(first) in (1, 2) and len(again) == 1
    assert all(raw == first[0] for raw in first + again)
    assert verified(pkt, first[0]) and first[0][0] == ACCESS_ACCEPT
    assert requests_logged(daemon, session_id="dup-auth") == 1

    sampled = metrics(daemon)
    replayed = total(sampled, "radiusd_requests_total", result="duplicate")
    dropped = value(sampled, "radiusd_dropped_total", reason="duplicate_in_flight")
    assert replayed >= 2 and replayed + dropped == 4, (replayed, dropped)
    assert dropped == value(
        sampled, "radiusd_nas_dropped_total", nas="nas-a", reason="duplicate_in_flight"
    )

    # the cache is bounded (duplicate_cache_size = 2 here, least recently stored out first):
    # a third reply evicts the accounting one, whose copy is then a new request
    # (accounting is idempotent: recorded again, never charged twice)
    _, other = acct_request(session="dup-other")
    nas.send(other, accounting=True)
    assert len(replies(0.5)) == 1
    nas.send(start, accounting=True)
    assert replies(0.5) == first_acct
    assert events("dup-acct") == 2

    # and it lives duplicate_cache_seconds (1.5 s here): later, the same bytes are new too
    nas.send(other, accounting=True)
    assert len(replies(0.3)) == 1 and events("dup-other") == 1  # still cached
    time.sleep(1.6)
    nas.send(other, accounting=True)
    late = replies(0.5)
    assert len(late) == 1 and late[0][0] == ACCOUNTING_RESPONSE
    assert events("dup-other") == 2
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 4. overload


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_flood_is_shed_while_another_nas_keeps_being_answered(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url, server="max_in_flight = 4")
    daemon.start()
    assert daemon.process is not None
    b = Nas(daemon, "127.0.0.2")
    assert b.ask(access_request(B_SECRET, ma=True)) is not None  # warm up
    rss_before = rss_kib(daemon.process.pid)

    done = threading.Event()
    flooded = [0]

    def flood() -> None:
        """NAS A, until B's stream is over: new Access-Requests (fresh authenticators) from
        16 source ports, one each every 4 ms: some 4,000 a second, far beyond what 4 in
        flight get through, yet below what the daemon reads and sheds (a faster flood
        would only overflow the socket's buffer in the kernel, uncounted)."""
        template = access_request()[1]
        socks = [Nas(daemon).sock for _ in range(16)]
        target = ("127.0.0.1", daemon.auth_port)
        try:
            while not done.is_set():
                for sock in socks:
                    data = template[:1] + os.urandom(1) + template[2:4] + os.urandom(16)
                    sock.sendto(data + template[20:], target)
                    flooded[0] += 1
                time.sleep(0.004)
        finally:
            for sock in socks:
                sock.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    answered, tries = 0, []
    started = time.monotonic()
    try:
        time.sleep(0.2)  # the flood is on
        for _ in range(50):  # NAS B: a steady stream, retried like a switch
            if b.ask(access_request(B_SECRET, ma=True), timeout=0.5, tries=3) is not None:
                answered += 1
            tries.append(b.tries)
            time.sleep(0.01)
    finally:
        done.set()
        flooder.join()
    elapsed = time.monotonic() - started
    sampled = metrics(daemon)
    assert answered == 50, tries
    assert flooded[0] >= 2000 and elapsed < 15
    assert value(sampled, "radiusd_dropped_total", reason="overload") > 0
    assert value(sampled, "radiusd_nas_dropped_total", nas="nas-a", reason="overload") > 0
    assert total(sampled, "radiusd_nas_dropped_total", nas="nas-b") == 0
    assert rss_kib(daemon.process.pid) - rss_before < 64 * 1024  # memory stays bounded

    # recovery: as soon as the flood is over, A is answered again
    a = Nas(daemon)
    reply = a.ask(access_request(), timeout=0.5, tries=3)
    assert reply is not None and reply[0] == ACCESS_ACCEPT
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 5. SIGTERM


@dataclass
class Ledger:
    """What the switches saw answered, shared by the caller threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: list[tuple[str, str]] = field(default_factory=list)  # (session, Start|Stop)

    def add(self, session: str, status: str) -> None:
        with self.lock:
            self.answered.append((session, status))

    def stops(self) -> list[str]:
        with self.lock:
            return [session for session, status in self.answered if status == "Stop"]


def test_sigterm_under_load_exits_0_and_every_answered_stop_is_billed_once(
    daemons: Callable[..., Daemon], any_db: str
) -> None:
    daemon = daemons(any_db, server="drain_seconds = 10")
    daemon.start()
    assert daemon.process is not None
    ledger = Ledger()
    over = threading.Event()

    def caller(n: int) -> None:
        """Whole calls, one after another: Access-Request, Start, Stop (30 s)."""
        nas = Nas(daemon)
        for i in range(10_000):
            if over.is_set():
                break
            session = f"sigterm-{n}-{i}"
            steps = [
                (access_request(extra=[("Acct-Session-Id", session)]), None),
                (acct_request(session=session, status="Start"), "Start"),
                (acct_request(session=session, status="Stop", session_time=30), "Stop"),
            ]
            for request, status in steps:
                if nas.ask(request, accounting=status is not None, timeout=0.5, tries=2) is None:
                    break  # the daemon is gone: this call is abandoned
                if status is not None:
                    ledger.add(session, status)
        nas.close()

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in callers:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(ledger.stops()) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(ledger.stops()) >= 40, daemon.log()[-2000:]
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=30)
    finally:
        over.set()
        for thread in callers:
            thread.join()
    assert code == 0, daemon.log()[-2000:]
    stopping = daemon.log_events("stopping")
    assert len(stopping) == 1 and daemon.log_events("stopped")[0]["drained"] is True

    cdrs = json.loads(daemon.billingctl("cdrs", "list", "--format", "json").stdout)
    billed: dict[str, int] = {}
    for cdr in cdrs:
        billed[cdr["acct_session_id"]] = billed.get(cdr["acct_session_id"], 0) + 1
    stops = ledger.stops()
    assert len(set(stops)) == len(stops)
    missing = [s for s in stops if billed.get(s) != 1]
    assert missing == [], (missing, billed)
    # and every answered Accounting-Request is in the durable record, once
    recorded = rows(any_db, "SELECT acct_session_id, status FROM acct_events")
    names = {1: "Start", 2: "Stop"}
    events: dict[tuple[str, str], int] = {}
    for session, status in recorded:
        key = (str(session), names.get(int(status), str(status)))
        events[key] = events.get(key, 0) + 1
    assert [a for a in ledger.answered if events.get(a) != 1] == []
    # no CDR without its Stop having been sent (a sanity check of the bookkeeping)
    assert all(s.startswith("sigterm-") for s in billed)


def test_work_stuck_past_drain_seconds_is_given_up_unanswered(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    """A database that does not answer must not hold the stop beyond its deadline: what is
    still in flight then stays unanswered (the switch retries it) and is not recorded."""
    daemon = daemons(sqlite_url, server="drain_seconds = 1")
    daemon.start()
    assert daemon.process is not None
    nas = Nas(daemon)
    assert nas.ask(acct_request(session="before"), accounting=True) is not None
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")  # the daemon's next write waits (busy_timeout)
        nas.send(acct_request(session="stuck")[1], accounting=True)
        time.sleep(0.3)
        assert daemon.log_events("stopping") == []
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=30)
        took = time.monotonic() - started
        conn.exec_driver_sql("ROLLBACK")
    engine.dispose()
    assert code == 0
    assert took < 1 + 1 + 1, took  # drain_seconds, a second to flush, some slack
    assert daemon.log_events("stopping")[0]["in_flight"] == 1
    assert daemon.log_events("stopped")[0]["drained"] is False
    assert nas.receive(0.2) is None
    recorded = rows(sqlite_url, "SELECT acct_session_id FROM acct_events")
    assert recorded == [("before",)]


# --------------------------------------------------------------------------- 6. SIGHUP


def test_sighup_adds_a_nas_without_losing_a_request(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url)
    daemon.start()
    assert daemon.process is not None
    newcomer = Nas(daemon, "127.0.0.3")
    assert newcomer.ask(access_request(C_SECRET, ma=True), timeout=0.3) is None  # unknown yet

    over = threading.Event()
    results: list[tuple[bool, int]] = []  # (answered, tries) of each request of the stream

    def stream() -> None:
        nas = Nas(daemon)
        while not over.is_set():
            request = (
                access_request()
                if len(results) % 2
                else acct_request(session=f"hup-{len(results)}")
            )
            accounting = request[0].code == rp.AccountingRequest
            answered = nas.ask(request, accounting=accounting, timeout=0.5, tries=3) is not None
            results.append((answered, nas.tries))
            time.sleep(0.005)
        nas.close()

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        time.sleep(0.5)
        # rewrite the file atomically (a reader never sees half of it), then reload
        config = daemon.config.read_text() + (
            f'\n[[nas]]\naddress = "127.0.0.3"\nname = "nas-c"\nsecret = "{C_SECRET.decode()}"\n'
        )
        fresh = daemon.config.with_suffix(".new")
        fresh.write_text(config)
        os.replace(fresh, daemon.config)
        reloads = len(daemon.log_events("nas_reloaded"))
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while len(daemon.log_events("nas_reloaded")) == reloads and time.monotonic() < deadline:
            time.sleep(0.02)
        assert daemon.log_events("nas_reloaded")[-1]["nas"] == 3
        reply = newcomer.ask(access_request(C_SECRET, ma=True), timeout=1.0)
        assert reply is not None and reply[0] == ACCESS_ACCEPT
        reply = newcomer.ask(acct_request(C_SECRET, session="from-c"), accounting=True)
        assert reply is not None and reply[0] == ACCOUNTING_RESPONSE
        # an invalid file is refused and the running list kept
        fresh.write_text(config + "limit_proxy_state = false\n")
        os.replace(fresh, daemon.config)
        daemon.process.send_signal(signal.SIGHUP)
        while not daemon.log_events("reload_failed") and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert "nas[2]" in str(daemon.log_events("reload_failed")[0]["error"])
        assert newcomer.ask(access_request(C_SECRET, ma=True), timeout=1.0) is not None
        time.sleep(0.3)
    finally:
        over.set()
        streamer.join()
    assert len(results) > 20
    assert all(answered for answered, _tries in results), results
    assert max(tries for _answered, tries in results) <= 2  # at most the switch's normal retry
    assert total(metrics(daemon), "radiusd_dropped_total") == 1  # the newcomer before the reload

    # SIGINT stops it like SIGTERM
    daemon.process.send_signal(signal.SIGINT)
    assert daemon.process.wait(timeout=20) == 0


# --------------------------------------------------------------------------- 7. workers


def test_two_workers_share_the_ports_and_one_metrics_endpoint(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url, server="workers = 2")
    daemon.start()
    deadline = time.monotonic() + 20
    while len(daemon.log_events("started")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(daemon.log_events("started")) == 2
    assert len(daemon.log_events("supervisor_started")) == 1

    sent = [0]
    lock = threading.Lock()
    failures: list[str] = []

    def switch(n: int) -> None:
        """Each its own source port: access and accounting requests, retried if lost."""
        nas = Nas(daemon, "127.0.0.2" if n % 4 == 3 else "127.0.0.1")
        secret = B_SECRET if n % 4 == 3 else A_SECRET
        for i in range(6):
            if i % 2:
                request = acct_request(secret, session=f"w-{n}-{i}")
            else:
                request = access_request(secret, ma=True)
            accounting = bool(i % 2)
            raw = nas.ask(request, accounting=accounting, timeout=1.0, tries=3)
            with lock:
                sent[0] += nas.tries
                if raw is None:
                    failures.append(f"w-{n}-{i}")
        nas.close()

    switches = [threading.Thread(target=switch, args=(n,)) for n in range(40)]
    for thread in switches:
        thread.start()
    for thread in switches:
        thread.join()
    # 40 source ports spread over both workers: every request answered means both serve
    assert failures == []
    assert sent[0] >= 240

    # a switch's retransmission reaches the worker that answered it (SO_REUSEPORT hashes
    # the 4-tuple), whose own duplicate cache replays the reply
    for n in range(10):
        nas = Nas(daemon)
        request = acct_request(session=f"w-dup-{n}")
        first = nas.ask(request, accounting=True)
        assert first is not None
        nas.send(request[1], accounting=True)
        assert nas.receive(2.0) == first
        nas.close()
        sent[0] += 2

    sampled = metrics(daemon)  # one endpoint, the sum over the workers
    assert total(sampled, "radiusd_requests_total") == sent[0]
    answered = total(sampled, "radiusd_requests_total", type="auth", result="accept") + total(
        sampled, "radiusd_requests_total", type="acct", result="answered"
    )
    assert answered == 250
    assert total(sampled, "radiusd_requests_total", result="duplicate") >= 10
    assert daemon.http("/healthz") == (200, "ok\n")
    # the dependencies of this deployment, as a single process reports them: no Redis here
    health = {
        dict(labels)["dependency"]: up
        for (name, labels), up in metrics(daemon).items()
        if name == "radiusd_dependency_up"
    }
    assert health == {"database": 1.0}
    assert count_rows(sqlite_url, "SELECT count(*) FROM acct_events") == 130

    assert daemon.stop() == 0
    assert [
        record["exit_codes"] for record in daemon.log_events("stopped") if "exit_codes" in record
    ] == [[0, 0]]


def test_worker_lifecycle_start_up_signals_a_killed_supervisor_and_a_taken_port(
    daemons: Callable[..., Daemon], sqlite_url: str
) -> None:
    daemon = daemons(sqlite_url, server="workers = 2")
    # SIGHUP while the workers are still starting: each reloads once it is up
    process = launch(daemon)
    wait_for(daemon, "supervisor_started")
    process.send_signal(signal.SIGHUP)
    wait_for(daemon, "started", 2)
    wait_for(daemon, "nas_reloaded", 2, timeout=5)
    assert daemon.log_events("worker_died") == [], daemon.log()[-3000:]
    nas = Nas(daemon)
    assert nas.ask(access_request(), timeout=1.0, tries=3) is not None
    nas.close()
    assert daemon.stop() == 0

    # SIGTERM while they start: they stop cleanly and the supervisor exits 0
    process = launch(daemon)
    wait_for(daemon, "supervisor_started", 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, daemon.log()[-3000:]
    assert daemon.log_events("stopped")[-1]["exit_codes"] == [0, 0], daemon.log()[-3000:]

    # the supervisor killed outright: its workers drain and stop, no orphan keeps the ports
    process = launch(daemon)
    wait_for(daemon, "started", 6)
    workers = [int(str(r["pid"])) for r in daemon.log_events("worker_started")[-2:]]
    process.kill()
    process.wait()
    daemon.process = None
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, (workers, daemon.log()[-3000:])
        time.sleep(0.05)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", daemon.auth_port))  # free again

    # a metrics port already taken: one line and exit 1, before any worker is started
    before = len(daemon.log())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", daemon.metrics_port))
        taken.listen()
        process = launch(daemon)
        assert process.wait(timeout=20) == 1, daemon.log()[before:]
    daemon.process = None
    said = daemon.log()[before:]
    assert said.startswith("radiusd: cannot start: ") and said.count("\n") == 1, said
    assert "address already in use" in said

    # a RADIUS port already taken: the workers cannot bind it; no restart loop, exit 1
    before = len(daemon.log())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", daemon.auth_port))
        process = launch(daemon)
        assert process.wait(timeout=20) == 1, daemon.log()[before:]
    daemon.process = None
    said = daemon.log()[before:]
    assert said.count("radiusd: cannot start: [Errno 98] Address already in use") == 2, said
    assert said.count('"worker_started"') == 2 and "Traceback" not in said, said


# --------------------------------------------------------------------------- 8. secrets


def radiusd(
    daemon: Daemon, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "radiusd"), *args, "--config", str(config or daemon.config)],
        cwd=daemon.workdir,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secrets_never_show_and_may_come_from_the_environment_or_a_file(
    daemons: Callable[..., Daemon], sqlite_url: str, tmp_path: Path
) -> None:
    b_secret, env_secret, file_secret = "Nas-Secret-q8Zr4W", "Env-Secret-3kWpV", "File-Secret-9mQtX"
    wrong_password = "Wrong-Pw-Zz91"
    secret_file = tmp_path / "nas.secret"
    secret_file.write_text(file_secret + "\n")
    secret_file.chmod(0o600)
    daemon = daemons(
        sqlite_url,
        extra=f"""name = "nas-a"

[[nas]]
address = "127.0.0.2"
name = "nas-b"
secret = "{b_secret}"
require_message_authenticator = true

[[nas]]
address = "127.0.0.3"
name = "nas-env"
secret_env = "EDGE_NAS_SECRET"

[[nas]]
address = "127.0.0.4"
name = "nas-file"
secret_file = "{secret_file}"
""",
    )
    daemon.env["EDGE_NAS_SECRET"] = env_secret
    daemon.start()

    b = Nas(daemon, "127.0.0.2")
    reply = b.ask(access_request(b_secret.encode(), ma=True, user="guarded", password=PASSWORD))
    assert reply is not None and reply[0] == ACCESS_ACCEPT
    reply = b.ask(
        access_request(b_secret.encode(), ma=True, user="guarded", password=wrong_password)
    )
    assert reply is not None and reply[0] == ACCESS_REJECT
    assert (
        b.ask(
            access_request(b"Forged-Secret", ma=True, user="guarded", password=PASSWORD),
            timeout=0.3,
        )
        is None
    )
    assert (
        b.ask(acct_request(b"Forged-Secret", session="forged"), accounting=True, timeout=0.3)
        is None
    )
    for source, secret in (("127.0.0.3", env_secret), ("127.0.0.4", file_secret)):
        nas = Nas(daemon, source)
        reply = nas.ask(access_request(secret.encode(), ma=True))
        assert reply is not None and reply[0] == ACCESS_ACCEPT, source
        session = f"from-{source}"
        for status, seconds in (("Start", None), ("Stop", 42)):
            reply = nas.ask(
                acct_request(secret.encode(), session=session, status=status, session_time=seconds),
                accounting=True,
            )
            assert reply is not None and reply[0] == ACCOUNTING_RESPONSE, (source, status)
        nas.close()

    outputs = {"metrics": metrics_text(daemon)}
    assert daemon.stop() == 0
    outputs["log"] = daemon.log()
    assert len(daemon.log_events("radius_request")) == 8

    open_config = tmp_path / "open.toml"  # a NAS open to BlastRADIUS
    open_config.write_text(
        daemon.config.read_text().replace(
            'name = "nas-a"',
            'name = "nas-a"\nrequire_message_authenticator = false\nlimit_proxy_state = false',
        )
    )
    billingctl = [
        ("load", str(tmp_path / "edge.yaml")),
        ("clients", "show", "Edge", "--format", "json"),
        ("clients", "list", "--format", "csv"),
        ("accounts", "list", "--format", "json"),
        ("sessions", "list", "--format", "json"),
        ("cdrs", "list", "--format", "json"),
        ("audit", "list"),
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        ran = {
            " ".join(args): pool.submit(daemon.billingctl, *args, check=False)
            for args in billingctl
        }
        ran["check-config"] = pool.submit(radiusd, daemon, "check-config")
        for command in ("check-config", "serve"):
            ran[f"open {command}"] = pool.submit(radiusd, daemon, command, config=open_config)
        results = {name: future.result() for name, future in ran.items()}
    for name, result in results.items():
        outputs[name] = result.stdout + result.stderr
    for name in ("cdrs list --format json", "check-config", "load " + str(tmp_path / "edge.yaml")):
        assert results[name].returncode == 0, (name, results[name].stderr)
    cdrs = json.loads(results["cdrs list --format json"].stdout)
    assert sorted(c["acct_session_id"] for c in cdrs) == ["from-127.0.0.3", "from-127.0.0.4"]
    assert results["check-config"].stdout.count('secret = "***"') == 4
    for command in ("check-config", "serve"):  # refused: exit 2, one line naming the entry
        refused = results[f"open {command}"]
        assert refused.returncode == 2 and refused.stdout == "", (command, refused.stderr)
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("radiusd: nas[0]: "), refused.stderr
        assert "require_message_authenticator and limit_proxy_state" in refused.stderr
    for name, shown in outputs.items():
        for hidden in (b_secret, env_secret, file_secret, SECRET, PASSWORD, wrong_password):
            assert hidden not in shown, (hidden, name)

    # a secret file that others may read is refused, without showing what it holds
    secret_file.chmod(0o644)
    refused = radiusd(daemon, "check-config")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "nas[3].secret_file" in refused.stderr
    assert file_secret not in refused.stderr
