"""Outages of the backing servers under the real daemon (issue 6; CONTRACT §3 and §6).

Each test runs its own throwaway PostgreSQL (and Redis) from ``servers.py``, so it can stop,
kill and restart them without disturbing the machine's shared servers. The switches are
threads with their own UDP sockets that behave like real ones: one request at a time,
re-sent after a timeout a bounded number of times (some re-send the very same bytes, some
rebuild accounting with a grown Acct-Delay-Time and a new Identifier, as Cisco does).

The rate is 0.60 a minute by the second (0.01 a second), so a grant in seconds is the funds
in cents and every cost is a whole number of cents: the grants and the h323-credit-amount
an authorization answers show the live state the daemon sees exactly.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyrad import packet as rp

from radiusd.codec import load_dictionary

from .conftest import SECRET, Daemon, make_daemon
from .servers import (
    CommitCutter,
    PrivatePostgres,
    PrivateRedis,
    postgres_template,
    private_postgres,
    private_redis,
)

__all__ = ["postgres_template", "private_postgres", "private_redis"]  # fixtures used below

D: Any = load_dictionary()
CALLED = "15550001111"
CENT = Decimal("0.01")
ACCESS_ACCEPT = rp.AccessAccept


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    daemon: Daemon
    postgres: PrivatePostgres
    redis: PrivateRedis | None


@pytest.fixture(params=["postgresql", "postgresql+redis"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, private_postgres: PrivatePostgres
) -> Iterator[Stack]:
    """A migrated ``billing`` database on a private PostgreSQL (and a private Redis), and a
    daemon configured on them, not started yet; the daemon is killed before the servers."""
    redis_server: PrivateRedis | None = None
    if request.param == "postgresql+redis":
        redis_server = request.getfixturevalue("private_redis")
    db_url = private_postgres.create_database("billing")
    daemon = make_daemon(tmp_path, (db_url, redis_server.url if redis_server else ""))
    daemon.billingctl("db", "upgrade")
    yield Stack(daemon, private_postgres, redis_server)
    if daemon.process is not None:
        daemon.process.kill()
        daemon.process.wait()


def provision(daemon: Daemon, tmp_path: Path, document: str) -> None:
    path = tmp_path / "outage.yaml"
    path.write_text(document)
    daemon.billingctl("load", str(path))


def provisioning(max_call_length: int, payments: dict[str, str]) -> str:
    """Clients named after their login account, each with one opening payment."""
    clients = "".join(
        f"""
  - name: {name.capitalize()}
    rate_table: flat
    payments: [{{id: {name}-opening, amount: "{amount}"}}]
    accounts:
      - {{name: {name}-login, ident: login, value: {name}}}"""
        for name, amount in payments.items()
    )
    return f"""
settings:
  max_call_length: {max_call_length}
rate_tables:
  - name: flat
    currency: USD
    rates:
      - {{code: "1", name: USA, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2020-01-01T00:00:00Z"}}
clients:{clients}
"""


# --------------------------------------------------------------------------- a switch


def auth_packet(
    ident: int, *, user: str, session: str | None, nas_ip: str, called: str | None = CALLED
) -> Any:
    """An Access-Request; without ``called`` an authentication only (no hold)."""
    pkt = rp.AuthPacket(dict=D, secret=SECRET.encode(), id=ident)
    pkt.AddAttribute("User-Name", user)
    pkt.AddAttribute("NAS-IP-Address", nas_ip)
    if called is not None:
        pkt.AddAttribute("Called-Station-Id", called)
    if session is not None:
        pkt.AddAttribute("Acct-Session-Id", session)
    return pkt


def acct_packet(
    ident: int,
    *,
    status: str,
    user: str,
    session: str,
    nas_ip: str,
    session_time: int | None = None,
    delay: int = 0,
) -> Any:
    pkt = rp.AcctPacket(dict=D, secret=SECRET.encode(), id=ident)
    pkt.AddAttribute("Acct-Status-Type", status)
    pkt.AddAttribute("Acct-Session-Id", session)
    pkt.AddAttribute("User-Name", user)
    pkt.AddAttribute("NAS-IP-Address", nas_ip)
    pkt.AddAttribute("Called-Station-Id", CALLED)
    if session_time is not None:
        pkt.AddAttribute("Acct-Session-Time", session_time)
    if delay:
        pkt.AddAttribute("Acct-Delay-Time", delay)
    return pkt


@dataclass
class Exchange:
    """One request as the switch saw it: how many sends, and the verified reply if any."""

    sends: int = 0
    code: int | None = None
    reply: Any = None  # the decoded pyrad packet
    answered_at: float | None = None  # time.monotonic()

    @property
    def answered(self) -> bool:
        return self.code is not None

    def cisco(self, name: str) -> str:
        (value,) = self.reply[name]
        return _text(value).removeprefix(name + "=")

    @property
    def grant(self) -> int:
        return int(self.cisco("h323-credit-time"))

    @property
    def credit(self) -> Decimal:
        return Decimal(self.cisco("h323-credit-amount"))


class Switch:
    """One UDP socket, one request at a time. An unanswered request is re-sent every
    ``timeout`` seconds, at most ``tries`` sends in all: the same bytes, or (with
    ``delay_on_retry``, accounting only) rebuilt with Acct-Delay-Time = the seconds waited
    and a new Identifier. A reply to any of the copies sent answers the request."""

    def __init__(
        self,
        daemon: Daemon,
        nas_ip: str,
        *,
        timeout: float = 0.25,
        tries: int = 40,
        delay_on_retry: bool = False,
    ) -> None:
        self.daemon = daemon
        self.nas_ip = nas_ip
        self.timeout = timeout
        self.tries = tries
        self.delay_on_retry = delay_on_retry
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self._ids = itertools.cycle(range(256))
        for _ in range(random.randrange(256)):
            next(self._ids)

    def close(self) -> None:
        self.sock.close()

    def ask(
        self,
        build: Callable[[int, int], Any],
        *,
        accounting: bool,
        tries: int | None = None,
    ) -> Exchange:
        """``build(identifier, acct_delay_time)`` makes the packet."""
        port = self.daemon.acct_port if accounting else self.daemon.auth_port
        exchange = Exchange()
        began = time.monotonic()
        pkt = build(next(self._ids), 0)
        data = bytes(pkt.RequestPacket())
        sent: dict[int, Any] = {}
        for attempt in range(tries or self.tries):
            if attempt and accounting and self.delay_on_retry:
                waited = max(1, round(time.monotonic() - began))
                pkt = build(next(self._ids), waited)
                data = bytes(pkt.RequestPacket())
            sent[pkt.id] = pkt
            exchange.sends += 1
            self.sock.sendto(data, ("127.0.0.1", port))
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                raw, _addr = self.sock.recvfrom(65535)
                mine = sent.get(raw[1])
                if mine is None:
                    continue  # a late reply to an earlier request
                reply = mine.CreateReply(packet=raw)
                if not mine.VerifyReply(reply, raw, enforce_ma=not accounting):
                    continue
                exchange.code = int(reply.code)
                exchange.answered_at = time.monotonic()
                exchange.reply = reply
                return exchange
        return exchange


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Call:
    client: str
    session: str
    duration: int
    auth: Exchange | None = None
    start: Exchange | None = None
    stop: Exchange | None = None

    @property
    def abandoned(self) -> str | None:
        for name in ("auth", "start", "stop"):
            exchange = getattr(self, name)
            if exchange is None or not exchange.answered:
                return name
        return None

    @property
    def cost(self) -> Decimal:
        return CENT * self.duration


def place_call(switch: Switch, call: Call) -> None:
    """Access-Request, Start, Stop; stops at the first request left unanswered or refused."""
    call.auth = switch.ask(
        lambda i, _d: auth_packet(
            i, user=call.client.lower(), session=call.session, nas_ip=switch.nas_ip
        ),
        accounting=False,
    )
    if call.auth.code == ACCESS_ACCEPT:
        connect_call(switch, call)


def connect_call(switch: Switch, call: Call) -> None:
    """Start and Stop of an authorized call."""
    user, session, nas_ip = call.client.lower(), call.session, switch.nas_ip
    call.start = switch.ask(
        lambda i, d: acct_packet(
            i, status="Start", user=user, session=session, nas_ip=nas_ip, delay=d
        ),
        accounting=True,
    )
    if not call.start.answered:
        return
    call.stop = switch.ask(
        lambda i, d: acct_packet(
            i,
            status="Stop",
            user=user,
            session=session,
            nas_ip=nas_ip,
            session_time=call.duration,
            delay=d,
        ),
        accounting=True,
    )


def funds_of(switch: Switch, user: str, *, tries: int | None = None) -> Exchange:
    """Authentication only (no Called-Station-Id): h323-credit-amount is the funds the
    live state shows (available minus the holds of calls in progress), holding nothing."""
    return switch.ask(
        lambda i, _d: auth_packet(i, user=user, session=None, nas_ip=switch.nas_ip, called=None),
        accounting=False,
        tries=tries,
    )


# --------------------------------------------------------------------------- observations


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    status, body = daemon.http("/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def dropped(daemon: Daemon) -> dict[str, float]:
    """Every reason of ``radiusd_dropped_total`` with its count (a failure's diagnosis)."""
    status, body = daemon.http("/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "radiusd_dropped_total":
                reason = sample.labels.get("reason", "")
                out[reason] = out.get(reason, 0.0) + sample.value
    return out


def healthz(daemon: Daemon, timeout: float = 4.0) -> tuple[int, str]:
    """GET /healthz: (status, body), or (0, why) when it does not answer within ``timeout``."""
    url = f"http://127.0.0.1:{daemon.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (TimeoutError, urllib.error.URLError) as err:
        return 0, f"no answer within {timeout} s: {err}"


def wait_healthy(daemon: Daemon, seconds: float) -> float:
    """Poll /healthz until 200; the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if healthz(daemon)[0] == 200:
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"/healthz not 200 within {seconds} s: {healthz(daemon)}")


def cdrs(daemon: Daemon) -> list[dict[str, Any]]:
    return list(json.loads(daemon.billingctl("cdrs", "list", "--format", "json").stdout))


def shown(daemon: Daemon, client: str) -> dict[str, Any]:
    return daemon.client(client)


def money(value: object) -> Decimal:
    return Decimal(str(value))


def senders(
    daemon: Daemon,
    plan: Sequence[tuple[str, Callable[[int], int]]],
    *,
    tries: int = 80,
    network: str = "10.0.1",
    prefix: str = "",
) -> tuple[threading.Event, list[list[Call]], list[BaseException], list[threading.Thread]]:
    """One thread per (client, duration of its n-th call), each a switch of its own (NAS
    ``network``.N) placing whole calls one after another until told to finish; a request
    is re-sent every 0.25 s, at most ``tries`` sends (20 s: longer than a restart). Call
    ids are ``prefix`` (else the client's name) - thread - n."""
    finish = threading.Event()
    calls: list[list[Call]] = [[] for _ in plan]
    failures: list[BaseException] = []

    def run(index: int) -> None:
        client, duration = plan[index]
        nas = f"{network}.{index + 1}"
        switch = Switch(daemon, nas, tries=tries, delay_on_retry=index % 2 == 1)
        try:
            for n in itertools.count():
                if finish.is_set():
                    return
                session = f"{prefix or client.lower()}-{index}-{n}"
                call = Call(client, session, duration=duration(n))
                calls[index].append(call)
                place_call(switch, call)
                if call.abandoned:
                    return
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failures.append(exc)
        finally:
            switch.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(plan))]
    for thread in threads:
        thread.start()
    return finish, calls, failures, threads


def settle(
    finish: threading.Event, threads: list[threading.Thread], failures: list[BaseException]
) -> None:
    finish.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads), "a sender is still waiting for a reply"


# --------------------------------------------------------------------------- 1. PostgreSQL


SENDERS = 4
OPENING = Decimal("500.00")
MAX_CALL = 120  # every grant: the funds are far larger, so nobody is ever refused


def _outage_duration(index: int, n: int) -> int:
    return 1 + (7 * n + 13 * index) % 90


def test_postgresql_stopped_mid_traffic_and_started_again(stack: Stack, tmp_path: Path) -> None:
    daemon, postgres = stack.daemon, stack.postgres
    with_redis = stack.redis is not None
    names = ["Alpha", "Bravo"]
    provision(daemon, tmp_path, provisioning(MAX_CALL, {n.lower(): str(OPENING) for n in names}))
    daemon.start()
    pid = daemon.process.pid if daemon.process else None

    plan = [(names[i % 2], functools.partial(_outage_duration, i)) for i in range(SENDERS)]
    finish, calls, failures, threads = senders(
        daemon, plan, tries=40, network="10.0.0", prefix="out"
    )
    try:
        time.sleep(1.0)
        before = sum(1 for c in itertools.chain(*calls) if c.stop and c.stop.answered)
        postgres.stop("fast")
        down_from = time.monotonic()
        health: list[tuple[int, str]] = []
        # a call authorized while PostgreSQL is down (answered only with Redis)
        probe = Switch(daemon, "10.0.0.99", timeout=0.2, tries=3)
        during = Call("Alpha", "probe-during", duration=33)
        during.auth = probe.ask(
            lambda i, _d: auth_packet(i, user="alpha", session=during.session, nas_ip=probe.nas_ip),
            accounting=False,
        )
        answered_during = during.auth.code
        while time.monotonic() - down_from < 2.0:
            health.append(healthz(daemon))
            time.sleep(0.2)
        down_until = time.monotonic()
        postgres.start()
        recovered_in = wait_healthy(daemon, 20)
        probe.timeout, probe.tries = 0.25, 40
        if during.auth.code == ACCESS_ACCEPT:
            connect_call(probe, during)
        else:
            place_call(probe, during)
        time.sleep(1.0)
    finally:
        settle(finish, threads, failures)
    assert daemon.process is not None and daemon.process.pid == pid
    assert daemon.process.poll() is None, "the daemon died"

    every = [*itertools.chain(*calls), during]
    abandoned = [(c.session, c.abandoned) for c in every if c.abandoned]
    assert not abandoned, f"requests never answered after recovery ({recovered_in:.1f} s)"
    for call in every:
        assert call.auth is not None and call.auth.grant == MAX_CALL, call
    assert before >= SENDERS, "the traffic had not started when PostgreSQL stopped"
    retried = [c for c in every if any(ex and ex.sends > 1 for ex in (c.auth, c.start, c.stop))]
    assert retried, "nothing had to be re-sent: the outage was not in the traffic"

    # while PostgreSQL was down: /healthz 503 naming the database only, no accounting answered
    assert health and all(status == 503 for status, _ in health), health
    assert all(body.split() == ["database"] for _, body in health), health
    margin = 0.3  # replies of transactions committed just before the stop
    # without Redis the live state is in the database: no authorization either
    kinds = ("start", "stop") if with_redis else ("auth", "start", "stop")
    answered_while_down = [
        (c.session, name)
        for c in every
        for name in kinds
        if (ex := getattr(c, name)) is not None
        and ex.answered_at is not None
        and down_from + margin < ex.answered_at < down_until
    ]
    assert not answered_while_down, answered_while_down
    if with_redis:  # authorization goes on from the in-memory indexes and Redis
        assert answered_during == ACCESS_ACCEPT, "no authorization while PostgreSQL was down"
    else:  # the live state is in the database itself: nothing to authorize with
        assert answered_during is None, answered_during
    assert metric(daemon, "radiusd_dropped_total", reason="database_unavailable") > 0, dropped(
        daemon
    )

    # exactly once: every answered Stop has one CDR, no session has two
    rated = cdrs(daemon)
    per_session = Counter(str(cdr["acct_session_id"]) for cdr in rated)
    twice = {s: n for s, n in per_session.items() if n > 1}
    assert not twice, f"sessions charged more than once: {twice}"
    by_session = {str(cdr["acct_session_id"]): cdr for cdr in rated}
    for call in every:
        cdr = by_session.get(call.session)
        assert cdr is not None, f"{call.session}: Stop answered but no CDR"
        assert (cdr["client"], cdr["duration"], cdr["closed_by"]) == (
            call.client,
            call.duration,
            "stop",
        ), cdr
        assert money(cdr["cost"]) == call.cost, cdr
    assert set(by_session) == {c.session for c in every}

    # the ledger and the live balance agree, in billingctl and in what authorization sees
    assert json.loads(daemon.billingctl("sessions", "list", "--format", "json").stdout) == []
    for name in names:
        charged = sum(
            (money(cdr["cost"]) for cdr in rated if cdr["client"] == name), start=Decimal(0)
        )
        client = shown(daemon, name)
        assert money(client["live_balance"]) == OPENING - charged, (name, client)
        assert money(client["held"]) == 0 and client["active_calls"] == 0, client
        seen = funds_of(probe, name.lower())
        assert seen.code == ACCESS_ACCEPT and seen.credit == OPENING - charged, (name, seen)
    probe.close()
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 2. Redis


@pytest.mark.parametrize("stack", ["postgresql+redis"], indirect=True)
def test_redis_restarted_empty_is_rebuilt_from_the_database(stack: Stack, tmp_path: Path) -> None:
    daemon, redis_server = stack.daemon, stack.redis
    assert redis_server is not None
    # 0.01 a second; Alpha 10.00 and Bravo 3.00; every grant at most 400 s (a hold of 4.00)
    provision(daemon, tmp_path, provisioning(400, {"alpha": "10.00", "bravo": "3.00"}))
    daemon.start()
    nas = "10.0.1.1"
    switch = Switch(daemon, nas, timeout=0.3, tries=10)

    def authorize(user: str, session: str, *, tries: int | None = None) -> Exchange:
        return switch.ask(
            lambda i, _d: auth_packet(i, user=user, session=session, nas_ip=nas),
            accounting=False,
            tries=tries,
        )

    def funds(user: str, *, tries: int | None = None) -> Exchange:
        return funds_of(switch, user, tries=tries)

    def account(user: str, session: str, status: str, seconds: int | None = None) -> Exchange:
        return switch.ask(
            lambda i, d: acct_packet(
                i,
                status=status,
                user=user,
                session=session,
                nas_ip=nas,
                session_time=seconds,
                delay=d,
            ),
            accounting=True,
        )

    def whole_call(user: str, session: str, seconds: int) -> None:
        assert authorize(user, session).code == ACCESS_ACCEPT
        assert account(user, session, "Start").answered
        assert account(user, session, "Stop", seconds).answered

    # completed calls: Alpha 10.00 - 0.61 - 0.45 = 8.94; Bravo 3.00 - 0.30 = 2.70
    whole_call("alpha", "done-a1", 61)
    whole_call("alpha", "done-a2", 45)
    whole_call("bravo", "done-b1", 30)
    # calls in progress (authorized, started): Alpha holds 4.00 + 4.00, Bravo 2.70
    for user, session, grant in (
        ("alpha", "live-a1", 400),
        ("alpha", "live-a2", 400),
        ("bravo", "live-b1", 270),
    ):
        granted = authorize(user, session)
        assert granted.code == ACCESS_ACCEPT and granted.grant == grant, (session, granted)
        assert account(user, session, "Start").answered
    assert funds("alpha").credit == Decimal("0.94")
    assert funds("bravo").credit == Decimal("0.00")
    # an authorization whose accounting has not come yet: its hold lives in Redis only
    pending = authorize("alpha", "pending-a1")
    assert pending.code == ACCESS_ACCEPT and pending.grant == 94
    assert funds("alpha").credit == Decimal("0.00")

    redis_server.stop(kill=True)
    status, body = healthz(daemon)
    assert (status, body.split()) == (503, ["redis"]), body
    # no Access-Request is answered without Redis ...
    assert not funds("alpha", tries=2).answered
    assert not authorize("bravo", "while-down", tries=2).answered
    assert metric(daemon, "radiusd_dropped_total", reason="redis_unavailable") > 0
    # ... but accounting is: the database is the truth (Bravo 2.70 - 1.00 = 1.70)
    stopped = account("bravo", "live-b1", "Stop", 100)
    assert stopped.answered, "a Stop was not answered while only Redis was down"
    charged = [c for c in cdrs(daemon) if c["acct_session_id"] == "live-b1"]
    assert [money(c["cost"]) for c in charged] == [Decimal("1.00")], charged

    redis_server.start()  # same port, empty
    wait_healthy(daemon, 10)
    # the live state comes back from the database: balances from the ledger, the holds of
    # the calls whose accounting was recorded (the pending authorization's hold is lost)
    assert funds("bravo").credit == Decimal("1.70")
    assert funds("alpha").credit == Decimal("0.94")
    granted = authorize("alpha", "after-a1")
    assert granted.code == ACCESS_ACCEPT and granted.grant == 94, granted
    assert granted.credit == Decimal("0.94")

    # the Stops of the calls in progress charge once (a re-sent copy is not charged again)
    assert account("alpha", "live-a1", "Stop", 50).answered
    assert account("alpha", "live-a2", "Stop", 20).answered
    resent = switch.ask(
        lambda i, _d: acct_packet(
            i,
            status="Stop",
            user="alpha",
            session="live-a1",
            nas_ip=nas,
            session_time=50,
            delay=7,
        ),
        accounting=True,
    )
    assert resent.answered
    rated = cdrs(daemon)
    per_session = Counter(str(cdr["acct_session_id"]) for cdr in rated)
    assert per_session == dict.fromkeys(
        ["done-a1", "done-a2", "done-b1", "live-b1", "live-a1", "live-a2"], 1
    ), per_session
    alpha = money(shown(daemon, "Alpha")["live_balance"])
    assert alpha == Decimal("8.24")  # 8.94 - 0.50 - 0.20
    assert money(shown(daemon, "Bravo")["live_balance"]) == Decimal("1.70")
    # what authorization sees: 8.24 minus the hold of after-a1 (0.94)
    assert funds("alpha").credit == Decimal("7.30")
    assert funds("bravo").credit == Decimal("1.70")

    # once more, with no accounting while Redis is away (nothing marks the live state stale,
    # no rebuild runs): each client is loaded from the database when it is first used
    assert account("alpha", "after-a1", "Start").answered
    redis_server.restart(kill=True)
    wait_healthy(daemon, 10)
    assert funds("alpha").credit == Decimal("7.30")  # after-a1 is accounted: its hold is back
    assert funds("bravo").credit == Decimal("1.70")
    assert account("alpha", "after-a1", "Stop", 15).answered
    assert funds("alpha").credit == Decimal("8.09")
    assert money(shown(daemon, "Alpha")["live_balance"]) == Decimal("8.09")
    assert Counter(str(cdr["acct_session_id"]) for cdr in cdrs(daemon))["after-a1"] == 1
    switch.close()
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 3. a hung server


def test_postgresql_hung_then_resumed(stack: Stack, tmp_path: Path) -> None:
    """PostgreSQL that accepts connections but never answers (every process stopped, as on a
    hung host or a stalled disk) is unreachable too: /healthz says so promptly, accounting
    waits, authorization goes on with Redis, and everything resumes with the server."""
    daemon, postgres = stack.daemon, stack.postgres
    provision(daemon, tmp_path, provisioning(120, {"alpha": "10.00"}))
    daemon.start()
    switch = Switch(daemon, "10.0.2.1", timeout=0.3, tries=2)
    user, nas_ip = "alpha", switch.nas_ip

    def stop_first() -> Exchange:
        return switch.ask(
            lambda i, d: acct_packet(
                i,
                status="Stop",
                user=user,
                session="hung-1",
                nas_ip=nas_ip,
                session_time=42,
                delay=d,
            ),
            accounting=True,
        )

    def authorize_second() -> Exchange:
        return switch.ask(
            lambda i, _d: auth_packet(i, user=user, session="hung-2", nas_ip=nas_ip),
            accounting=False,
        )

    granted = switch.ask(
        lambda i, _d: auth_packet(i, user=user, session="hung-1", nas_ip=nas_ip),
        accounting=False,
    )
    assert granted.code == ACCESS_ACCEPT and granted.grant == 120
    started = switch.ask(
        lambda i, d: acct_packet(
            i, status="Start", user=user, session="hung-1", nas_ip=nas_ip, delay=d
        ),
        accounting=True,
    )
    assert started.answered

    postgres.freeze()
    try:
        health = [healthz(daemon) for _ in range(2)]  # the second waits for the same check
        stop_while_hung = stop_first()
        auth_while_hung = authorize_second()
    finally:
        postgres.thaw()
    assert all(h[0] == 503 and h[1].split() == ["database"] for h in health), health
    assert not stop_while_hung.answered, "accounting answered while the database hung"
    if stack.redis is not None:
        assert auth_while_hung.code == ACCESS_ACCEPT, "no authorization while the database hung"
    else:
        assert not auth_while_hung.answered

    wait_healthy(daemon, 20)
    switch.tries = 40
    assert stop_first().answered  # the switch goes on re-sending its Stop
    second = Call("Alpha", "hung-2", duration=10, auth=auth_while_hung)
    if auth_while_hung.code != ACCESS_ACCEPT:
        second.auth = authorize_second()
    assert second.auth is not None and second.auth.code == ACCESS_ACCEPT
    connect_call(switch, second)
    assert second.abandoned is None, second
    rated = Counter(str(cdr["acct_session_id"]) for cdr in cdrs(daemon))
    assert rated == {"hung-1": 1, "hung-2": 1}, rated
    assert money(shown(daemon, "Alpha")["live_balance"]) == Decimal("9.48")
    assert funds_of(switch, "alpha").credit == Decimal("9.48")
    switch.close()
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- 4. a lost answer


@pytest.fixture
def cut_stack(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> Iterator[tuple[Daemon, CommitCutter]]:
    """A daemon on PostgreSQL + Redis that reaches the database through a CommitCutter."""
    private_postgres.create_database("billing")
    cutter = CommitCutter(private_postgres.port)
    daemon = make_daemon(tmp_path, (cutter.url("billing"), private_redis.url))
    try:
        daemon.billingctl("db", "upgrade")
        yield daemon, cutter
    finally:
        if daemon.process is not None:
            daemon.process.kill()
            daemon.process.wait()
        cutter.close()


def test_a_stop_committed_whose_answer_was_lost_still_reaches_the_live_state(
    cut_stack: tuple[Daemon, CommitCutter], tmp_path: Path
) -> None:
    """PostgreSQL commits a Stop but the daemon loses the connection before hearing so: the
    packet is not answered, the switch re-sends it, and the copy is a duplicate that charges
    nothing. The charge and the released hold must still reach Redis (it is rebuilt from the
    database), or authorization would go on from a balance and holds the ledger no longer has."""
    daemon, cutter = cut_stack
    provision(daemon, tmp_path, provisioning(400, {"alpha": "10.00"}))
    daemon.start()
    switch = Switch(daemon, "10.0.3.1", timeout=0.5, tries=20)
    call = Call("Alpha", "cut-1", duration=100)
    call.auth = switch.ask(
        lambda i, _d: auth_packet(i, user="alpha", session=call.session, nas_ip=switch.nas_ip),
        accounting=False,
    )
    assert call.auth.code == ACCESS_ACCEPT and call.auth.grant == 400
    assert funds_of(switch, "alpha").credit == Decimal("6.00")  # 10.00 - the hold of 4.00

    cutter.lose_next_commit()  # first the Start's
    call.start = switch.ask(
        lambda i, d: acct_packet(
            i, status="Start", user="alpha", session=call.session, nas_ip=switch.nas_ip, delay=d
        ),
        accounting=True,
    )
    assert cutter.cut.is_set(), "no COMMIT went through the proxy"
    assert call.start.answered
    assert funds_of(switch, "alpha").credit == Decimal("6.00")
    cutter.lose_next_commit()  # then the Stop's
    call.stop = switch.ask(
        lambda i, d: acct_packet(
            i,
            status="Stop",
            user="alpha",
            session=call.session,
            nas_ip=switch.nas_ip,
            session_time=call.duration,
            delay=d,
        ),
        accounting=True,
    )
    assert cutter.cut.is_set() and call.stop.answered
    rated = [c for c in cdrs(daemon) if c["acct_session_id"] == call.session]
    assert [money(c["cost"]) for c in rated] == [Decimal("1.00")], rated

    # authorization's view follows the ledger (9.00, nothing held) once Redis is rebuilt
    deadline = time.monotonic() + 5
    while (seen := funds_of(switch, "alpha").credit) != Decimal("9.00"):
        assert time.monotonic() < deadline, f"the live state shows funds of {seen}, not 9.00"
        time.sleep(0.2)
    granted = switch.ask(
        lambda i, _d: auth_packet(i, user="alpha", session="cut-2", nas_ip=switch.nas_ip),
        accounting=False,
    )
    assert granted.code == ACCESS_ACCEPT and granted.credit == Decimal("9.00"), granted
    switch.close()
    assert daemon.stop() == 0
