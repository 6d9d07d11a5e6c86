"""Restarts (issue 19): the real daemon over UDP, stopped and started again while switches
send, and started on a Redis that lacks some clients or holds an old copy of one.

- A restart during traffic (SIGTERM, then a new daemon) loses no accounting: every Stop a
  switch sent, re-sent across the restart, is charged exactly once; every Access-Request,
  re-sent across it, is answered with the grant the ledger allows.
- Clients missing from Redis at start load from the ledger on first use, under concurrent
  traffic; a client whose Redis copy is behind the database (a Redis restored from an
  older snapshot) is reloaded before the first answer, so even the first Access-Request
  is granted by the ledger's truth, not by the old copy.
"""

from __future__ import annotations

import functools
import itertools
import json
import socket
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from pyrad import packet as rp
from sqlalchemy import select

from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.tables import live_t

from .conftest import Daemon
from .test_outages import (
    ACCESS_ACCEPT,
    CENT,
    Call,
    Exchange,
    Switch,
    auth_packet,
    cdrs,
    connect_call,
    funds_of,
    money,
    place_call,
    provision,
    provisioning,
    senders,
    settle,
    shown,
)

OPENING = Decimal("500.00")
MAX_CALL = 120  # every grant while the funds are large (0.60 a minute: 0.01 a second)


def charged_once(daemon: Daemon, every: list[Call]) -> dict[str, Decimal]:
    """Each answered Stop has exactly one CDR of its duration and cost, and no CDR belongs
    to anything else; the charges per client."""
    abandoned = [(c.session, c.abandoned) for c in every if c.abandoned]
    assert not abandoned, f"requests never answered: {abandoned}"
    rated = cdrs(daemon)
    per_session = Counter(str(cdr["acct_session_id"]) for cdr in rated)
    assert not {s: n for s, n in per_session.items() if n > 1}, "charged twice"
    by_session = {str(cdr["acct_session_id"]): cdr for cdr in rated}
    assert set(by_session) == {c.session for c in every}
    charged: dict[str, Decimal] = {}
    for call in every:
        cdr = by_session[call.session]
        assert (cdr["client"], cdr["duration"]) == (call.client, call.duration), cdr
        assert money(cdr["cost"]) == CENT * call.duration, cdr
        charged[call.client] = charged.get(call.client, Decimal(0)) + CENT * call.duration
    return charged


def live_equals_ledger(daemon: Daemon, names: list[str], charged: dict[str, Decimal]) -> None:
    """billingctl and authorization both see the ledger's balance, nothing held."""
    assert json.loads(daemon.billingctl("sessions", "list", "--format", "json").stdout) == []
    switch = Switch(daemon, "10.0.9.9")
    for name in names:
        expected = OPENING - charged.get(name, Decimal(0))
        client = shown(daemon, name)
        assert money(client["live_balance"]) == expected, (name, client)
        assert money(client["held"]) == 0, client
        seen = funds_of(switch, name.lower())
        assert seen.code == ACCESS_ACCEPT and seen.credit == expected, (name, seen.credit)
    switch.close()


def _duration(sender: int, n: int) -> int:
    return 1 + (7 * n + 13 * sender) % 90


@pytest.mark.parametrize("backend", ["sqlite", "postgresql+redis"], indirect=True)
def test_a_restart_during_traffic_loses_no_accounting_and_answers_every_resend(
    daemon: Daemon, backend: tuple[str, str], tmp_path: Path
) -> None:
    names = ["Alpha", "Bravo"]
    provision(daemon, tmp_path, provisioning(MAX_CALL, {n.lower(): str(OPENING) for n in names}))
    daemon.start()
    # an Access-Request the old daemon answers, whose answer the switch never gets
    lost = Call("Alpha", "lost-answer", duration=17)
    resend = Resend(daemon, auth_packet(7, user="alpha", session=lost.session, nas_ip=LOST_NAS))
    first = resend.send()
    assert first is not None and first.grant == MAX_CALL, first
    finish, calls, failures, threads = senders(
        daemon, [(names[i % 2], functools.partial(_duration, i)) for i in range(4)]
    )
    late = Call("Bravo", "sent-while-down", duration=42)
    try:
        time.sleep(1.0)
        before = sum(1 for c in itertools.chain(*calls) if c.stop and c.stop.answered)
        assert daemon.stop() == 0  # SIGTERM: drains what it took, then exits
        # a call begun while no daemon listens: its Access-Request is sent until one answers
        late_switch = Switch(daemon, "10.0.5.2", tries=80)
        placing = threading.Thread(target=place_call, args=(late_switch, late), daemon=True)
        placing.start()
        time.sleep(0.3)
        daemon.start()  # a new process: its duplicate cache is empty
        again = resend.send()  # the same bytes again, to the new daemon
        placing.join(timeout=30)
        late_switch.close()
        time.sleep(1.0)
    finally:
        settle(finish, threads, failures)
    assert before >= 4, "the traffic had not started before the restart"
    # the re-sent request is the same call: the same grant, held once (its Start and Stop
    # below leave nothing held)
    assert again is not None and again.grant == MAX_CALL, again
    switch = Switch(daemon, LOST_NAS)
    lost.auth = first
    connect_call(switch, lost)
    switch.close()
    assert late.auth is not None and late.auth.sends > 1, late.auth  # sent across the restart
    every = [*itertools.chain(*calls), late, lost]
    # every Access-Request, re-sent or not, got the grant the ledger allows
    for call in every:
        assert call.auth is not None and call.auth.code == ACCESS_ACCEPT, call
        assert call.auth.grant == MAX_CALL, call

    charged = charged_once(daemon, every)
    live_equals_ledger(daemon, names, charged)
    if backend[1]:
        assert daemon.billingctl("live", "verify", check=False).returncode == 0


LOST_NAS = "10.0.5.1"


class Resend:
    """One Access-Request's bytes, sent as they are each time (a switch's retransmission),
    its answer read and verified."""

    def __init__(self, daemon: Daemon, packet: Any) -> None:
        self.daemon = daemon
        self.packet = packet
        self.data = bytes(packet.RequestPacket())

    def send(self, timeout: float = 20.0, every: float = 0.25) -> Exchange | None:
        """Send the bytes every ``every`` seconds until a verified answer (None after
        ``timeout``)."""
        exchange = Exchange()
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while time.monotonic() < deadline:
                exchange.sends += 1
                sock.sendto(self.data, ("127.0.0.1", self.daemon.auth_port))
                sock.settimeout(every)
                try:
                    raw = sock.recv(65535)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                reply = self.packet.CreateReply(packet=raw)
                if self.packet.VerifyReply(reply, raw, enforce_ma=True):
                    exchange.code, exchange.reply = int(reply.code), reply
                    exchange.answered_at = time.monotonic()
                    return exchange
        return None


def _client_keys(r: redis.Redis, client_id: int) -> list[bytes]:
    return sorted(r.scan_iter(match=f"{{c:{client_id}}}*"))


def _wait_applied(db_url: str, client_id: int) -> None:
    """Until the daemon's healer marked the client's last live effect applied (what the
    sweep then compares Redis with)."""
    engine = make_engine(db_url)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                seq, applied = conn.execute(
                    select(live_t.c.seq, live_t.c.applied).where(live_t.c.client_id == client_id)
                ).one()
            if seq == applied:
                return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError("the healer never marked the client's effects applied")


@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
def test_clients_missing_or_behind_in_redis_at_start_are_decided_by_the_ledger(
    daemon: Daemon, backend: tuple[str, str], tmp_path: Path
) -> None:
    names = ["Alpha", "Bravo", "Charlie"]
    provision(daemon, tmp_path, provisioning(MAX_CALL, {n.lower(): str(OPENING) for n in names}))
    ids = {name: int(shown(daemon, name)["id"]) for name in names}
    r = redis.Redis.from_url(backend[1])
    daemon.start()
    warm = Switch(daemon, "10.0.2.1")
    warmed = [Call(name, f"warm-{name}", duration=30) for name in names]
    for call in warmed:  # each client in Redis, one call charged
        place_call(warm, call)
        assert call.abandoned is None, call
    warm.close()
    # Bravo's Redis copy now, then a charge that leaves it 1.00 (0.30 charged already)
    old = {key: r.dump(key) for key in _client_keys(r, ids["Bravo"])}
    assert old and all(value is not None for value in old.values())
    daemon.billingctl("payments", "add", "Bravo", "--", "-498.70")
    _wait_applied(backend[0], ids["Bravo"])
    assert daemon.stop() == 0

    r.delete(*_client_keys(r, ids["Alpha"]))  # Alpha: missing
    r.delete(*_client_keys(r, ids["Bravo"]))  # Bravo: the old copy, 499.70 instead of 1.00
    for key, value in old.items():
        r.restore(key, 0, value)  # type: ignore[arg-type]
    assert money(shown(daemon, "Bravo")["live_balance"]) == Decimal("499.70")  # behind

    daemon.start()
    # at once, from several switches: Alpha loads on first use, twice concurrently
    finish, calls, failures, threads = senders(
        daemon,
        [
            ("Alpha", lambda n: 1 + n % 50),
            ("Alpha", lambda n: 7 + n % 40),
            ("Charlie", lambda n: 5),
        ],
    )
    bravo = Switch(daemon, "10.0.3.1")
    grants = []
    try:
        for n in range(4):  # 1.00, then 0.90, 0.80, 0.70: 0.01 a second
            call = Call("Bravo", f"bravo-after-{n}", duration=10)
            place_call(bravo, call)
            assert call.auth is not None and call.auth.code == ACCESS_ACCEPT, call
            grants.append((call.auth.grant, call.auth.credit))
            calls.append([call])
        time.sleep(1.0)
    finally:
        bravo.close()
        settle(finish, threads, failures)
    swept = [e for e in daemon.log_events("live_state_swept") if e.get("at") == "start"]
    assert [e["clients"] for e in swept] == [1], swept  # Bravo, before the first answer
    assert grants == [
        (100, Decimal("1.00")),
        (90, Decimal("0.90")),
        (80, Decimal("0.80")),
        (70, Decimal("0.70")),
    ], grants
    every = list(itertools.chain(*calls))
    assert sum(1 for c in every if c.client == "Alpha") >= 4, "too little Alpha traffic"
    charged = charged_once(daemon, [*every, *warmed])
    assert charged["Bravo"] == Decimal("0.70")  # 0.30 warm + 4 x 0.10
    charged["Bravo"] += Decimal("498.70")  # the manual charge
    live_equals_ledger(daemon, names, charged)
    assert daemon.billingctl("live", "verify", check=False).returncode == 0


HOLDING = 8  # concurrent calls, each holding 1.20 (120 s at 0.60 a minute): all the funds


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_embedded_default_keeps_every_hold_across_a_restart_and_sees_payments(
    daemon: Daemon, backend: tuple[str, str], tmp_path: Path
) -> None:
    """Holds decided together (one batch, one transaction) are all kept by a SIGTERM
    restart; a payment billingctl adds while the daemon runs counts at the next
    Access-Request."""
    provision(daemon, tmp_path, provisioning(MAX_CALL, {"alpha": str(HOLDING * Decimal("1.20"))}))
    daemon.start()
    answers: list[Exchange | None] = [None] * HOLDING

    def hold(n: int) -> None:  # each call from a switch of its own, all at once
        switch = Switch(daemon, f"10.0.6.{n + 1}")
        answers[n] = switch.ask(
            lambda i, _d: auth_packet(i, user="alpha", session=f"held-{n}", nas_ip=switch.nas_ip),
            accounting=False,
        )
        switch.close()

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(HOLDING)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [a.grant if a is not None else None for a in answers] == [MAX_CALL] * HOLDING
    assert daemon.stop() == 0  # SIGTERM
    daemon.start()
    held = json.loads(daemon.billingctl("sessions", "list", "--format", "json").stdout)
    assert len(held) == HOLDING, held
    switch = Switch(daemon, "10.0.6.100")
    assert funds_of(switch, "alpha").credit == 0
    refused = switch.ask(
        lambda i, _d: auth_packet(i, user="alpha", session="one-more", nas_ip=switch.nas_ip),
        accounting=False,
    )
    assert refused.code == rp.AccessReject, refused
    daemon.billingctl("payments", "add", "Alpha", "--", "0.60")  # while the daemon runs
    paid = switch.ask(
        lambda i, _d: auth_packet(i, user="alpha", session="paid", nas_ip=switch.nas_ip),
        accounting=False,
    )
    switch.close()
    assert paid.code == ACCESS_ACCEPT and paid.grant == 60, paid
