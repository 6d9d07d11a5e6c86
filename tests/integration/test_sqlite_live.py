"""The embedded default's batched check-and-hold (``SqliteLiveState``) against real SQLite:
it decides and writes exactly what ``SqlLiveState`` (one SQLAlchemy transaction per
request) does, however the requests are batched; a batch is committed whole or not at
all; a payment committed by another connection counts at the next batch."""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from billing_core.adapters.sql.bulk import bulk_for
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.live import SqlLiveState, change_balance
from billing_core.adapters.sql.live_sqlite import SqliteLiveState
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import call_keys_t, calls_t, live_t
from billing_core.domain.model import Client
from billing_core.domain.policy import Accept, Decision, GrantTerms, Reject
from billing_core.domain.rating import Rate
from billing_core.errors import Unavailable
from billing_core.ports import HoldRequest, LockoutProbe
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RATE = Rate(
    code="1",
    name="",
    rate=Decimal("0.60"),
    setup_fee=Decimal("0.05"),
    min_volume=30,
    interval=6,
    grace_volume=0,
    effective_date=datetime(2020, 1, 1, tzinfo=UTC),
)
CLIENTS = 4


def _provisioned(url: str) -> dict[int, Client]:
    """Four clients, one login account each; the last one has never been paid (no
    live-balance row until the live state makes it)."""
    document = {
        "settings": {"max_call_length": 3600},
        "rate_tables": [{"name": "t", "currency": "USD", "rates": []}],
        "clients": [
            {
                "name": f"C{n}",
                "rate_table": "t",
                "payments": [{"id": f"p{n}", "amount": "3.00"}] if n < CLIENTS else [],
                "accounts": [{"name": f"a{n}", "ident": "login", "value": f"a{n}"}],
            }
            for n in range(1, CLIENTS + 1)
        ],
    }
    engine = make_engine(url)
    load.apply_provisioning(engine, parse_provisioning(document, lambda _path: iter(())))
    clients = dict(SqlStore(engine).load_catalog().clients)
    engine.dispose()
    return clients


def _requests(clients: dict[int, Client], seed: int, count: int) -> list[HoldRequest]:
    """Calls of the clients, some asked for again (the same identifier), some for
    authentication only, some under a capacity or a lockout check."""
    rng = random.Random(seed)
    out: list[HoldRequest] = []
    for n in range(count):
        cid = rng.choice(sorted(clients))
        client = clients[cid]
        if rng.random() < 0.3:
            client = replace(client, capacity=rng.choice([1, 2, 3]))
        call = f"call-{rng.randrange(n + 1)}" if rng.random() < 0.3 else f"call-{n}"
        out.append(
            HoldRequest(
                terms=GrantTerms(client, None if rng.random() < 0.1 else RATE, 600),
                nas_key=rng.choice(["nas|a", "nas|b"]),
                account_id=cid,  # the loader numbers accounts as it numbers clients
                called="15550001111",
                identifiers=(call, f"s-{call}") if rng.random() < 0.9 else (),
                acct_session_id=f"s-{call}",
                now=T0 + timedelta(seconds=n * rng.choice([1, 5, 40])),
                hold_seconds=180,
                uid=f"u{n}",
                lock_check=rng.random() < 0.2,
            )
        )
    return out


def _rows(engine: Engine) -> tuple[list[Any], ...]:
    with engine.connect() as conn:
        return (
            list(conn.execute(select(calls_t).order_by(calls_t.c.id))),
            list(conn.execute(select(call_keys_t).order_by(*call_keys_t.c))),
            list(conn.execute(select(live_t).order_by(live_t.c.client_id))),
        )


def _lock(live: SqlLiveState, account_id: int) -> None:
    for _ in range(3):
        probe = LockoutProbe(account_id, account_id, T0, True, 3, 3600)
        live.auth_lockout(probe)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_decide_and_write_what_one_transaction_per_request_does(
    sqlite_url: str, tmp_path: Path, seed: int
) -> None:
    clients = _provisioned(sqlite_url)
    twin_url = f"sqlite:///{tmp_path / 'twin.db'}"
    shutil.copy(sqlite_url.removeprefix("sqlite:///"), tmp_path / "twin.db")
    one, batched = make_engine(sqlite_url), make_engine(twin_url)
    reference, live = SqlLiveState(one), SqliteLiveState(batched)
    _lock(reference, 2)
    _lock(live, 2)
    requests = _requests(clients, seed, 240)
    expected = [reference.authorize(r) for r in requests]
    rng, got, at = random.Random(seed), list[Decision](), 0
    while at < len(requests):
        size = rng.choice([1, 2, 5, 17, 64])
        got.extend(live.authorize_many(requests[at : at + size]))
        at += size
    assert got == expected
    assert {type(d) for d in got} == {Accept, Reject}
    assert _rows(batched) == _rows(one)
    assert live.view(sorted(clients), T0) == reference.view(sorted(clients), T0)


def test_a_payment_by_another_connection_counts_at_the_next_batch(sqlite_url: str) -> None:
    clients = _provisioned(sqlite_url)
    engine = make_engine(sqlite_url)
    live = SqliteLiveState(engine)
    other = make_engine(sqlite_url)  # billingctl, in its own process in real life

    def ask(n: int) -> HoldRequest:
        return HoldRequest(
            GrantTerms(clients[1], RATE, 600), "nas", 1, "1555", (f"c{n}",), "", T0, 180
        )

    first = live.authorize(ask(1))
    assert isinstance(first, Accept) and first.funds == Decimal("3.00")
    with other.begin() as conn:
        change_balance(conn, 1, Decimal("10.00"))
    second = live.authorize(ask(2))
    assert isinstance(second, Accept)
    assert second.funds == Decimal("13.00") - first.hold


def test_a_failed_batch_writes_nothing_and_the_next_one_works(sqlite_url: str) -> None:
    clients = _provisioned(sqlite_url)
    engine = make_engine(sqlite_url)
    live = SqliteLiveState(engine)
    good = HoldRequest(GrantTerms(clients[1], RATE, 600), "nas", 1, "1555", ("g",), "", T0, 180)
    ghost = replace(clients[1], id=999)  # no such client: the calls row breaks a foreign key
    bad = HoldRequest(GrantTerms(ghost, RATE, 600), "nas", 1, "1555", ("b",), "", T0, 180)
    with pytest.raises(Exception) as caught:
        live.authorize_many([good, bad])
    assert not isinstance(caught.value, Unavailable)  # a broken row is no outage
    assert _rows(engine)[0] == []
    assert isinstance(live.authorize_many([good])[0], Accept)
    assert len(_rows(engine)[0]) == 1


def test_accountings_lookups_reach_calls_and_cdrs_through_indexes(sqlite_url: str) -> None:
    """A row-value IN reaches no index on SQLite: accounting scanned every call in
    progress and every CDR ever stored, per batch. Each lookup must be an index search."""
    _provisioned(sqlite_url)
    engine = make_engine(sqlite_url)
    rows = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 3000) "
    with engine.begin() as conn:
        conn.exec_driver_sql(
            rows + "INSERT INTO cdrs (client_id, nas_key, epoch, acct_session_id, conf_id, "
            "origin, called, duration, billed_duration, cost, rated_at, stopped_at, closed_by, "
            "created_at, once, tags) SELECT 1, 'nas', 0, 's' || n, '', '', '1', 1, 1, 0, "
            "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', 'stop', "
            "'2026-01-01 00:00:00.000000', 1, '' FROM g"
        )
        conn.exec_driver_sql(
            rows + "INSERT INTO calls (id, client_id, nas_key, acct_session_id, conf_id, origin, "
            "called, state, hold, max_session_time, charged, epoch, live_uid, accounted, tags) "
            "SELECT n, 1, 'nas', 's' || n, '', '', '1', 'active', 0, 0, 0, 0, '', 1, '' FROM g"
        )
        conn.exec_driver_sql(
            rows + "INSERT INTO call_keys (call_id, nas_key, key) SELECT n, 'nas', 's' || n FROM g"
        )
    seen: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
    with engine.begin() as conn:
        bulk = bulk_for(conn)
        assert [c.id for c, _n, _k in bulk.calls([("nas", "s5"), ("nas", "s7")])] == [5, 7]
        assert len(bulk.legs([("nas", 0, "s5"), ("other", 1, "s6")])) == 1
        raw = conn.connection.driver_connection
        assert raw is not None
        for sql, params in seen[-2:]:
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert not [step for step in plan if step.startswith("SCAN ") and "ROWS" not in step], (
                sql,
                plan,
            )
