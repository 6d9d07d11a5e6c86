"""Real SIP calls through Debian's Kamailio (the shipped contrib/kamailio/kamailio.cfg), which
authorizes them with the daemon (auth_radius) and accounts them to it (acc_radius): on
SQLite and on PostgreSQL with Redis.

One daemon per backend serves the whole module (its start and the provisioning cost more
than a call); each test has its own client, its own Kamailio (half a second to start) and
its own callee."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from billing_core.adapters.sql.db import make_engine, upgrade

from ..conftest import throwaway_database
from .conftest import Daemon, make_daemon
from .kamailio import Kamailio, KamailioOptions
from .sipua import Callee, Caller

NUMBER = "4420794600123"  # 0.60 a minute: 0.01 a second
# one client per test, so that the tests share the daemon and not their balances
CLIENTS = {
    "alice": "10.00",  # the 5 s call
    "bob": "10.00",  # CANCEL and 486 (capacity 1)
    "carol": "10.00",  # a reused Call-ID
    "dave": "10.00",  # a failover
    "erin": "10.00",  # microsecond Event-Timestamps
    "tiny": "0.03",  # a 3 s grant
}
PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "44", name: UK, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
""" + "".join(
    f"""  - name: {name.title()}
    rate_table: retail
    capacity: 1
    payments: [{{id: {name}-opening, amount: "{amount}"}}]
    accounts:
      - {{name: {name}-login, ident: login, value: {name}}}
"""
    for name, amount in CLIENTS.items()
)


@pytest.fixture(scope="module", autouse=True)
def _kamailio_present() -> None:
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        pytest.fail("kamailio is missing: install kamailio and kamailio-radius-modules (.ci/run)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql+redis"])
def backend_of_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL or "") of the module's daemon, on real servers."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sip') / 'billing.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url, ""
        return
    template = request.getfixturevalue("pg_template")
    admin_url = request.getfixturevalue("pg_admin_url")
    redis_url = request.getfixturevalue("redis_server_url")
    live = redis.Redis.from_url(redis_url)
    live.flushdb()
    try:
        with throwaway_database(admin_url, template) as url:
            yield url, redis_url
    finally:
        live.flushdb()
        live.close()


@pytest.fixture(scope="module")
def node(
    backend_of_module: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """The module's daemon: [[nas]] 127.0.0.1 with dialect = "kamailio"."""
    workdir = tmp_path_factory.mktemp("node")
    daemon = make_daemon(workdir, backend_of_module, extra='dialect = "kamailio"')
    (workdir / "sip.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(workdir / "sip.yaml"))
    daemon.start()
    yield daemon
    if daemon.process is not None:
        daemon.stop()


@dataclass
class Setup:
    daemon: Daemon
    kamailio: Kamailio
    callee: Callee
    db_url: str

    def caller(self, user: str) -> Caller:
        return Caller(("127.0.0.1", self.kamailio.port), user)

    def cdrs(self, client: str) -> list[dict[str, object]]:
        args = ("cdrs", "list", "--client", client, "--format", "json")
        return list(json.loads(self.daemon.billingctl(*args).stdout))

    def events(self, call_id: str) -> list[tuple[int, dict[str, list[str]]]]:
        """One call's stored accounting events: (Acct-Status-Type, attributes by name)."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT status, attributes FROM acct_events "
                        "WHERE acct_session_id = :call_id ORDER BY id"
                    ),
                    {"call_id": call_id},
                )
                return [(int(status), json.loads(attrs)) for status, attrs in rows]
        finally:
            engine.dispose()

    def requests(self, code: str, client: str | None = None) -> list[dict[str, object]]:
        return [
            e
            for e in self.daemon.log_events("radius_request")
            if e.get("code") == code and (client is None or e.get("client") == client)
        ]


def _setup(
    node: Daemon,
    tmp_path: Path,
    db_url: str,
    *,
    behaviour: str = "answer",
    to_tag: str = "",
    acct_ports: tuple[int, ...] = (),
    **options: object,
) -> Iterator[Setup]:
    kamailio = Kamailio(
        tmp_path,
        KamailioOptions(
            auth_ports=(node.auth_port,),
            acct_ports=acct_ports or (node.acct_port,),
            **options,  # type: ignore[arg-type]
        ),
    )
    callee = Callee(behaviour, to_tag=to_tag)
    try:
        kamailio.start()
        yield Setup(node, kamailio, callee, db_url)
    finally:
        callee.close()
        kamailio.stop()


@pytest.fixture
def sip(node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]) -> Iterator[Setup]:
    yield from _setup(node, tmp_path, backend_of_module[0])


def _cost(value: object) -> Decimal:
    return Decimal(str(value))


def test_a_5_second_call_of_a_user_at_domain_caller_is_charged_once(sip: Setup) -> None:
    """auth_radius sends User-Name "alice@sip.example.net" (strip_realm: alice), the grant
    comes back; Start and Stop carry no Acct-Session-Time: 5 s from their event times."""
    caller = sip.caller("alice")
    try:
        result = caller.call(NUMBER, sip.callee.port, talk=5.0)
    finally:
        caller.close()
    assert result.status == 200, (result, sip.kamailio.log()[-3000:])
    assert 407 in result.responses  # challenged, then authorized by the daemon
    cdrs = sip.cdrs("Alice")
    assert [(c["called"], c["closed_by"]) for c in cdrs] == [(NUMBER, "stop")]
    assert cdrs[0]["duration"] in (5, 6)  # the event times of Start and Stop, rounded
    assert _cost(cdrs[0]["cost"]) == Decimal("0.01") * int(str(cdrs[0]["duration"]))
    alice = sip.daemon.client("Alice")
    assert _cost(alice["live_balance"]) == Decimal("10.00") - _cost(cdrs[0]["cost"])
    assert alice["held"] == "0.00" and alice["active_calls"] == 0
    accepts = sip.requests("Access-Request", "Alice")
    assert [(e["user"], e["outcome"]) for e in accepts] == [("alice", "accept")]
    # Kamailio's own attributes decoded by name and stored with each event
    events = sip.events(result.call_id)
    assert [status for status, _ in events] == [1, 2]
    (_, start), (_, stop) = events
    assert start["Sip-Method"] == ["Invite"] and stop["Sip-Method"] == ["Bye"]
    assert start["Sip-Response-Code"] == ["200"]
    assert start["Sip-From-Tag"] == [result.from_tag] == stop["Sip-From-Tag"]
    assert start["Sip-To-Tag"] == [result.to_tag] == stop["Sip-To-Tag"]
    assert start["User-Name"] == ["alice@sip.example.net"]
    assert "Error-Cause" not in start


def test_cancel_and_486_charge_nothing_and_hold_no_channel(
    node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]
) -> None:
    """Failed (15) with zero_duration_stop = final (the kamailio default): the call ends at
    once. Bob's capacity is 1: a held channel would refuse his next call (code 3)."""
    for setup in _setup(node, tmp_path, backend_of_module[0], behaviour="ring"):
        caller = setup.caller("bob")
        try:
            cancelled = caller.call(NUMBER, setup.callee.port, cancel_after_ringing=True)
            assert cancelled.status == 487, cancelled
            setup.callee.behaviour = "busy"
            busy = caller.call(NUMBER, setup.callee.port)
            assert busy.status == 486, busy
            setup.callee.behaviour = "answer"
            answered = caller.call(NUMBER, setup.callee.port, talk=1.0)
            assert answered.status == 200, answered  # capacity 1 is free again
        finally:
            caller.close()
        assert [c["acct_session_id"] for c in setup.cdrs("Bob")] == [answered.call_id]
        failed = [
            attrs
            for call in (cancelled, busy)
            for status, attrs in setup.events(call.call_id)
            if status == 15
        ]
        assert sorted(a["Sip-Response-Code"][0] for a in failed) == ["486", "487"]
        bob = setup.daemon.client("Bob")
        assert bob["held"] == "0.00" and bob["active_calls"] == 0
        rejects = [e for e in setup.requests("Access-Request", "Bob") if e["outcome"] != "accept"]
        assert rejects == []


def test_a_reused_call_id_is_charged_again(
    node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]
) -> None:
    """The caller reuses Call-ID and From-tag, the callee its To-tag: the same leg identity.
    The second call's Start comes after the first's Stop: a new leg, charged again."""
    for setup in _setup(node, tmp_path, backend_of_module[0], to_tag="fixed-to-tag"):
        caller = setup.caller("carol")
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
        cdrs = setup.cdrs("Carol")
        assert [c["acct_session_id"] for c in cdrs] == [first.call_id] * 2
        assert all(int(str(c["duration"])) >= 1 for c in cdrs)
        charged = sum(_cost(c["cost"]) for c in cdrs)
        carol = setup.daemon.client("Carol")
        assert _cost(carol["live_balance"]) == Decimal("10.00") - charged
        assert carol["active_calls"] == 0


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
    node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]
) -> None:
    """Kamailio's accounting has no Acct-Session-Time: the second node computes another
    duration from the Stop's later arrival, and still knows the leg as stopped."""
    (tmp_path / "node-b").mkdir()
    node_b = make_daemon(tmp_path / "node-b", backend_of_module, extra='dialect = "kamailio"')
    node_b.start()
    relay = FailoverRelay(node.acct_port, node_b.acct_port)
    stops_before = _stops(node)
    try:
        for setup in _setup(
            node, tmp_path, backend_of_module[0], acct_ports=(relay.port,), radius_timeout=1
        ):
            caller = setup.caller("dave")
            try:
                result = caller.call(NUMBER, setup.callee.port, talk=1.0)
            finally:
                caller.close()
            assert result.status == 200
            deadline = time.monotonic() + 10
            while not _stops(node_b) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert relay.lost == 1
            assert _stops(node)[len(stops_before) :] == ["charged"]
            assert _stops(node_b) == ["duplicate"]
            cdrs = setup.cdrs("Dave")
            assert len(cdrs) == 1
            balance = _cost(setup.daemon.client("Dave")["live_balance"])
            assert balance == Decimal("10.00") - _cost(cdrs[0]["cost"])
    finally:
        relay.close()
        node_b.stop()


def test_microsecond_event_timestamps_are_kept_raw_and_the_call_billed(
    node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]
) -> None:
    """rad_time_mode = 1: Event-Timestamp "1445590624.377372" does not fit its date type;
    counted, kept raw, and the packets processed."""
    for setup in _setup(node, tmp_path, backend_of_module[0], rad_time_mode=1):
        caller = setup.caller("erin")
        try:
            result = caller.call(NUMBER, setup.callee.port, talk=1.0)
        finally:
            caller.close()
        assert result.status == 200
        assert len(setup.cdrs("Erin")) == 1
        _status, body = setup.daemon.http("/metrics")
        line = 'radiusd_attribute_errors_total{attribute="Event-Timestamp",nas="127.0.0.1/32"} 2.0'
        assert line in body
        stamps = [attrs["Event-Timestamp"][0] for _status, attrs in setup.events(result.call_id)]
        assert len(stamps) == 2
        assert all(bytes.fromhex(s).decode().count(".") == 1 for s in stamps), stamps


def test_the_grant_ends_the_dialog(
    node: Daemon, tmp_path: Path, backend_of_module: tuple[str, str]
) -> None:
    """Tiny has 0.03 USD at 0.01 a second: a 3 s grant, sent as SIP-AVP credit_time:3; the
    dialog module ends the call with a BYE to both sides, and accounts it (a Stop)."""
    for setup in _setup(node, tmp_path, backend_of_module[0]):
        caller = setup.caller("tiny")
        try:
            result = caller.call(NUMBER, setup.callee.port, wait_bye=15.0)
        finally:
            caller.close()
        assert result.status == 200
        assert result.bye_from_network, setup.kamailio.log()[-2000:]
        assert setup.callee.calls[result.call_id].bye_received
        accepts = setup.requests("Access-Request", "Tiny")
        assert [e["grant"] for e in accepts] == [3]
        deadline = time.monotonic() + 5
        while len(setup.events(result.call_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        cdrs = setup.cdrs("Tiny")
        # cut at the grant (Kamailio's dialog timer ticks by the second: 2 to 4 s), charged
        assert [c["closed_by"] for c in cdrs] == ["stop"]
        assert 2 <= int(str(cdrs[0]["duration"])) <= 4
        tiny = setup.daemon.client("Tiny")
        assert (tiny["held"], tiny["active_calls"]) == ("0.00", 0)
