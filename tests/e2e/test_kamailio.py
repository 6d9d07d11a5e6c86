"""Real SIP calls through Debian's Kamailio (the shipped contrib/kamailio/kamailio.cfg), which
authorizes them with the daemon (auth_radius) and accounts them to it (acc_radius): on
SQLite and on PostgreSQL with Redis."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from .conftest import Daemon, make_daemon
from .kamailio import Kamailio, KamailioOptions
from .sipua import Callee, Caller

PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "44", name: UK, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Alice
    rate_table: retail
    capacity: 1
    payments: [{id: opening, amount: "10.00"}]
    accounts:
      - {name: alice-login, ident: login, value: alice}
  - name: Tiny
    rate_table: retail
    payments: [{id: tiny-opening, amount: "0.03"}]
    accounts:
      - {name: tiny-login, ident: login, value: tiny}
"""
NUMBER = "4420794600123"  # 0.60 a minute: 0.01 a second


@pytest.fixture(scope="module", autouse=True)
def _kamailio_present() -> None:
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        pytest.fail("kamailio is missing: install kamailio and kamailio-radius-modules (.ci/run)")


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def sip_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url")), ""
    return str(request.getfixturevalue("pg_url")), str(request.getfixturevalue("redis_url"))


@dataclass
class Setup:
    daemon: Daemon
    kamailio: Kamailio
    callee: Callee
    db_url: str

    def events(self) -> list[tuple[int, dict[str, list[str]]]]:
        """The stored accounting events: (Acct-Status-Type, attributes by name)."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, attributes FROM acct_events ORDER BY id"))
                return [(int(status), json.loads(attrs)) for status, attrs in rows]
        finally:
            engine.dispose()

    def caller(self, user: str = "alice") -> Caller:
        return Caller(("127.0.0.1", self.kamailio.port), user)

    def cdrs(self) -> list[dict[str, object]]:
        out = self.daemon.billingctl("cdrs", "list", "--format", "json").stdout
        return list(json.loads(out))

    def sessions(self) -> list[dict[str, object]]:
        out = self.daemon.billingctl("sessions", "list", "--format", "json").stdout
        return list(json.loads(out))


def _setup(
    tmp_path: Path,
    backend: tuple[str, str],
    *,
    behaviour: str = "answer",
    to_tag: str = "",
    acct_ports_of: Callable[[int], tuple[int, ...]] | None = None,
    **options: object,
) -> Iterator[Setup]:
    daemon = make_daemon(tmp_path, backend, extra='dialect = "kamailio"')
    (tmp_path / "sip.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "sip.yaml"))
    daemon.start()
    kamailio = Kamailio(
        tmp_path,
        KamailioOptions(
            auth_ports=(daemon.auth_port,),
            acct_ports=acct_ports_of(daemon.acct_port) if acct_ports_of else (daemon.acct_port,),
            **options,  # type: ignore[arg-type]
        ),
    )
    callee = Callee(behaviour, to_tag=to_tag)
    try:
        kamailio.start()
        yield Setup(daemon, kamailio, callee, backend[0])
    finally:
        callee.close()
        kamailio.stop()
        if daemon.process is not None:
            daemon.stop()


@pytest.fixture
def sip(tmp_path: Path, sip_backend: tuple[str, str]) -> Iterator[Setup]:
    yield from _setup(tmp_path, sip_backend)


def _cost(value: object) -> Decimal:
    return Decimal(str(value))


def test_a_5_second_call_of_a_user_at_domain_caller_is_charged_once(sip: Setup) -> None:
    """auth_radius sends User-Name "alice@sip.example.net" (strip_realm: alice), the grant
    comes back; Start and Stop carry no Acct-Session-Time: 5 s from their event times."""
    caller = sip.caller()
    try:
        result = caller.call(NUMBER, sip.callee.port, talk=5.0)
    finally:
        caller.close()
    assert result.status == 200, (result, sip.kamailio.log()[-3000:])
    assert 407 in result.responses  # challenged, then authorized by the daemon
    cdrs = sip.cdrs()
    assert [(c["client"], c["called"], c["closed_by"]) for c in cdrs] == [
        ("Alice", NUMBER, "stop")
    ], sip.daemon.log()[-3000:]
    assert cdrs[0]["duration"] in (5, 6)  # the event times of Start and Stop, rounded
    assert _cost(cdrs[0]["cost"]) == Decimal("0.01") * int(str(cdrs[0]["duration"]))
    alice = sip.daemon.client("Alice")
    assert _cost(alice["live_balance"]) == Decimal("10.00") - _cost(cdrs[0]["cost"])
    assert sip.sessions() == [] and alice["held"] == "0.00"
    accepts = [
        e for e in sip.daemon.log_events("radius_request") if e.get("code") == "Access-Request"
    ]
    assert [(e["user"], e["outcome"]) for e in accepts] == [("alice", "accept")]
    # Kamailio's own attributes decoded by name and stored with each event
    events = sip.events()
    assert [status for status, _ in events] == [1, 2]
    (_, start), (_, stop) = events
    assert start["Sip-Method"] == ["Invite"] and stop["Sip-Method"] == ["Bye"]
    assert start["Sip-Response-Code"] == ["200"]
    assert start["Sip-From-Tag"] == [result.from_tag] == stop["Sip-From-Tag"]
    assert start["Sip-To-Tag"] == [result.to_tag] == stop["Sip-To-Tag"]
    assert start["Acct-Session-Id"] == [result.call_id]
    assert start["User-Name"] == ["alice@sip.example.net"]
    assert "Error-Cause" not in start


def test_cancel_and_486_charge_nothing_and_hold_no_channel(
    tmp_path: Path, sip_backend: tuple[str, str]
) -> None:
    """Failed (15) with zero_duration_stop = final (the kamailio default): the call ends at
    once. Alice's capacity is 1: a held channel would refuse her next call."""
    for setup in _setup(tmp_path, sip_backend, behaviour="ring"):
        caller = setup.caller()
        try:
            cancelled = caller.call(NUMBER, setup.callee.port, cancel_after_ringing=True)
            assert cancelled.status == 487, cancelled
            setup.callee.behaviour = "busy"
            busy = caller.call(NUMBER, setup.callee.port)
            assert busy.status == 486, busy
            assert setup.sessions() == []  # no hold, no channel
            setup.callee.behaviour = "answer"
            answered = caller.call(NUMBER, setup.callee.port, talk=1.0)
            assert answered.status == 200, answered  # capacity 1 is free again
        finally:
            caller.close()
        cdrs = setup.cdrs()
        assert [c["acct_session_id"] for c in cdrs] == [answered.call_id]
        failed = [attrs for status, attrs in setup.events() if status == 15]
        assert sorted(a["Sip-Response-Code"][0] for a in failed) == ["486", "487"]
        assert setup.daemon.client("Alice")["held"] == "0.00"


def test_a_reused_call_id_is_charged_again(tmp_path: Path, sip_backend: tuple[str, str]) -> None:
    """The caller reuses Call-ID and From-tag, the callee its To-tag: the same leg identity.
    The second call's Start comes after the first's Stop: a new leg, charged again."""
    for setup in _setup(tmp_path, sip_backend, to_tag="fixed-to-tag"):
        caller = setup.caller()
        try:
            first = caller.call(NUMBER, setup.callee.port, talk=1.0)
            second = caller.call(
                NUMBER, setup.callee.port, talk=1.0, call_id=first.call_id, from_tag=first.from_tag
            )
        finally:
            caller.close()
        assert first.status == second.status == 200
        assert (second.call_id, second.from_tag, second.to_tag) == (
            first.call_id,
            first.from_tag,
            first.to_tag,
        )
        cdrs = setup.cdrs()
        assert [c["acct_session_id"] for c in cdrs] == [first.call_id] * 2
        assert all(int(str(c["duration"])) >= 1 for c in cdrs)
        charged = sum(_cost(c["cost"]) for c in cdrs)
        assert _cost(setup.daemon.client("Alice")["live_balance"]) == Decimal("10.00") - charged
        assert setup.sessions() == []


class FailoverRelay:
    """The accounting server radcli knows: it passes each request to node A, except that
    the answer to the first Stop is lost, and the Stop that radcli sends again (with a larger
    Acct-Delay-Time) goes to node B, another daemon on the same database: a failover of a
    Stop that the first node had recorded."""

    def __init__(self, node_a: int, node_b: int) -> None:
        self.node_a = ("127.0.0.1", node_a)
        self.node_b = ("127.0.0.1", node_b)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.pending: dict[tuple[tuple[str, int], int], tuple[str, int]] = {}
        self.stops = 0
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _is_stop(data: bytes) -> bool:
        pos = 20
        while pos + 2 <= len(data):
            kind, size = data[pos], data[pos + 1]
            if size < 2:
                return False
            if kind == 40 and data[pos + 2 : pos + size] == b"\x00\x00\x00\x02":
                return True
            pos += size
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr in (self.node_a, self.node_b):
                client = self.pending.pop((addr, data[1]), None)
                if client is None:
                    continue
                if addr == self.node_a and self.stops == 1 and self.lost == 0:
                    self.lost += 1  # the first Stop's answer: lost
                    continue
                self.sock.sendto(data, client)
                continue
            node = self.node_a
            if self._is_stop(data):
                self.stops += 1
                node = self.node_a if self.stops == 1 else self.node_b
            self.pending[(node, data[1])] = addr
            self.sock.sendto(data, node)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _stops(daemon: Daemon) -> list[object]:
    return [
        e["outcome"]
        for e in daemon.log_events("radius_request")
        if e.get("code") == "Accounting-Request" and e.get("status") == 2
    ]


def test_a_stop_sent_again_after_a_failover_is_charged_once(
    tmp_path: Path, sip_backend: tuple[str, str]
) -> None:
    """Kamailio's accounting has no Acct-Session-Time: the second node computes another
    duration from the Stop's later arrival, and still knows the leg as stopped."""
    relay: FailoverRelay | None = None
    (tmp_path / "node-b").mkdir()
    node_b = make_daemon(tmp_path / "node-b", sip_backend, extra='dialect = "kamailio"')

    def via_relay(node_a: int) -> tuple[int, ...]:
        nonlocal relay
        node_b.start()
        relay = FailoverRelay(node_a, node_b.acct_port)
        return (relay.port,)

    try:
        for setup in _setup(tmp_path, sip_backend, acct_ports_of=via_relay, radius_timeout=1):
            caller = setup.caller()
            try:
                result = caller.call(NUMBER, setup.callee.port, talk=1.0)
            finally:
                caller.close()
            assert result.status == 200
            deadline = time.monotonic() + 10
            while not _stops(node_b) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert relay is not None and relay.lost == 1
            assert _stops(setup.daemon) == ["charged"]
            assert _stops(node_b) == ["duplicate"]
            cdrs = setup.cdrs()
            assert len(cdrs) == 1
            balance = _cost(setup.daemon.client("Alice")["live_balance"])
            assert balance == Decimal("10.00") - _cost(cdrs[0]["cost"])
    finally:
        if relay is not None:
            relay.close()
        if node_b.process is not None:
            node_b.stop()


def test_microsecond_event_timestamps_are_kept_raw_and_the_call_billed(
    tmp_path: Path, sip_backend: tuple[str, str]
) -> None:
    """rad_time_mode = 1: Event-Timestamp "1445590624.377372" does not fit its date type;
    counted, kept raw, and the packets processed."""
    for setup in _setup(tmp_path, sip_backend, rad_time_mode=1):
        caller = setup.caller()
        try:
            result = caller.call(NUMBER, setup.callee.port, talk=1.0)
        finally:
            caller.close()
        assert result.status == 200
        assert len(setup.cdrs()) == 1
        _status, body = setup.daemon.http("/metrics")
        line = 'radiusd_attribute_errors_total{attribute="Event-Timestamp",nas="127.0.0.1/32"} 2.0'
        assert line in body
        stamps = [attrs["Event-Timestamp"][0] for _status, attrs in setup.events()]
        assert all(bytes.fromhex(s).decode().count(".") == 1 for s in stamps), stamps


def test_the_grant_ends_the_dialog(tmp_path: Path, sip_backend: tuple[str, str]) -> None:
    """Tiny has 0.03 USD at 0.01 a second: a 3 s grant, sent as SIP-AVP credit_time:3; the
    dialog module ends the call with a BYE to both sides."""
    for setup in _setup(tmp_path, sip_backend):
        caller = setup.caller("tiny")
        try:
            result = caller.call(NUMBER, setup.callee.port, wait_bye=15.0)
        finally:
            caller.close()
        assert result.status == 200
        assert result.bye_from_network, setup.kamailio.log()[-2000:]
        assert setup.callee.calls[result.call_id].bye_received
        accepts = [
            e
            for e in setup.daemon.log_events("radius_request")
            if e.get("code") == "Access-Request"
        ]
        assert [(e["client"], e["grant"]) for e in accepts] == [("Tiny", 3)]
