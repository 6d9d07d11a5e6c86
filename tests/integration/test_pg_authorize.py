"""The live state on PostgreSQL alone: ``billing_authorize`` (migration 0009), one statement,
against the Python check-and-hold it replaced and the policy it mirrors, on real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.domain.money import from_micros, to_micros
from billing_core.domain.policy import Accept, Decision, GrantTerms, LiveSnapshot, decide
from billing_core.ports import HoldRequest
from billingctl.services import load
from tests import builders

from ..authorize import decide as run_authorization
from .test_sql_store import call, services, spec, stop

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
amounts = st.integers(min_value=-5_000_000, max_value=20_000_000).map(from_micros)
NAS = "nas|10.0.0.1"


client = builders.client
rate = builders.rate


def hold_request(
    terms: GrantTerms, ids: tuple[str, ...], at: datetime, uid: str = "u"
) -> HoldRequest:
    return HoldRequest(
        terms=terms,
        nas_key=NAS,
        account_id=1,
        called="15550001111",
        identifiers=ids,
        acct_session_id=ids[0] if ids else "",
        now=at,
        hold_seconds=180,
        uid=uid,
    )


@pytest.fixture
def pg_store(pg_url: str) -> SqlStore:
    engine = make_engine(pg_url)
    load.apply_provisioning(engine, spec("0"))  # client 1 and its live balance row
    return SqlStore(engine)


def sql_decide(engine: Engine, terms: GrantTerms, live: LiveSnapshot) -> Decision:
    from billing_core.adapters.sql.live import pg_decision

    c, r = terms.client, terms.rate
    threshold = c.low_balance_threshold
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT reason, grant_seconds, hold, funds FROM billing_decide("
                ":b, :h, :n, :credit, :postpaid, :cap, :thr, :lowcap, :rate, :setup, :mv, :iv,"
                " :grace, :mcl)"
            ),
            {
                "b": to_micros(live.balance),
                "h": to_micros(live.held_by_others),
                "n": live.calls_in_use,
                "credit": to_micros(c.credit),
                "postpaid": c.postpaid,
                "cap": c.capacity,
                "thr": None if threshold is None else to_micros(threshold),
                "lowcap": c.low_balance_capacity,
                "rate": None if r is None else to_micros(r.rate),
                "setup": None if r is None else to_micros(r.setup_fee),
                "mv": None if r is None else r.min_volume,
                "iv": None if r is None else r.interval,
                "grace": None if r is None else r.grace_volume,
                "mcl": terms.max_call_length,
            },
        ).one()
    return pg_decision(*row)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    balance=amounts,
    credit=st.sampled_from([Decimal(0), Decimal("5"), Decimal("-2")]),
    postpaid=st.booleans(),
    capacity=st.one_of(st.none(), st.integers(0, 4)),
    low=st.one_of(st.none(), st.tuples(amounts, st.integers(0, 3))),
    held=st.integers(0, 12_000_000).map(from_micros),
    in_use=st.integers(0, 5),
    price=st.integers(0, 2_000_000).map(from_micros),
    setup=st.integers(0, 100_000).map(from_micros),
    min_volume=st.integers(0, 120),
    interval=st.integers(1, 90),
    grace=st.integers(0, 130),
    mcl=st.integers(1, 7200),
    auth_only=st.booleans(),
)
def test_the_sql_policy_decides_as_the_python_policy(
    pg_url: str,
    balance: Decimal,
    credit: Decimal,
    postpaid: bool,
    capacity: int | None,
    low: tuple[Decimal, int] | None,
    held: Decimal,
    in_use: int,
    price: Decimal,
    setup: Decimal,
    min_volume: int,
    interval: int,
    grace: int,
    mcl: int,
    auth_only: bool,
) -> None:
    """billing_decide is the twin of domain.policy.decide: grant, hold, funds, reason."""
    c = client(
        credit=credit,
        postpaid=postpaid,
        capacity=capacity,
        low_balance_threshold=low[0] if low else None,
        low_balance_capacity=low[1] if low else None,
    )
    the_rate = rate(
        rate=price, setup_fee=setup, min_volume=min_volume, interval=interval, grace_volume=grace
    )
    terms = GrantTerms(c, None if auth_only else the_rate, mcl)
    live = LiveSnapshot(balance, held, in_use)
    assert sql_decide(_engine(pg_url), terms, live) == decide(terms, live)


_ENGINES: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url, pool_size=1)
    return _ENGINES[url]


_CALL_COLUMNS = (
    "client_id, account_id, nas_key, acct_session_id, called, state, granted_seconds, hold,"
    " authorized_at, hold_expires_at, max_session_time, charged, epoch, live_uid, accounted,"
    " conf_id, origin, tags, (SELECT array_agg(k.key ORDER BY k.key) FROM call_keys k"
    " WHERE k.call_id = calls.id) AS keys"
)


def _reset(
    engine: Engine, balance: Decimal, others: list[tuple[str, int, int]], now: datetime
) -> None:
    """Client 1's live balance, and its other calls: (state, hold µ, seconds to expiry)."""
    at = now.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM calls"))
        conn.execute(
            text("UPDATE live_balances SET balance = :b WHERE client_id = 1"),
            {"b": to_micros(balance)},
        )
        for i, (state, hold, expiry) in enumerate(others):
            conn.execute(
                text(
                    "INSERT INTO calls (client_id, account_id, nas_key, acct_session_id, called,"
                    " state, hold, hold_expires_at, max_session_time, charged, epoch, live_uid,"
                    " accounted, conf_id, origin, tags)"
                    " VALUES (1, 1, :nas, :sid, '15550001111', :state, :hold, :exp, 0, false,"
                    " 0, '', false, '', '', '')"
                ),
                {
                    "nas": NAS,
                    "sid": f"other{i}",
                    "state": state,
                    "hold": hold,
                    "exp": at + timedelta(seconds=expiry),
                },
            )
            conn.execute(
                text(
                    "INSERT INTO call_keys (call_id, nas_key, key) SELECT max(id), :nas, :sid"
                    " FROM calls"
                ),
                {"nas": NAS, "sid": f"other{i}"},
            )


def _calls(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {_CALL_COLUMNS} FROM calls ORDER BY acct_session_id"))
        return [tuple(r) for r in rows]


others_st = st.lists(
    st.tuples(
        st.sampled_from(["held", "active"]),
        st.integers(0, 3_000_000),
        st.sampled_from([-10, 60]),
    ),
    max_size=4,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    balance=amounts,
    capacity=st.one_of(st.none(), st.integers(0, 4)),
    others=others_st,
    own=st.sampled_from([None, "other0", "fresh"]),
    auth_only=st.booleans(),
    mcl=st.integers(1, 7200),
)
def test_one_statement_holds_what_the_python_transaction_held(
    pg_store: SqlStore,
    balance: Decimal,
    capacity: int | None,
    others: list[tuple[str, int, int]],
    own: str | None,
    auth_only: bool,
    mcl: int,
) -> None:
    """The twin of the Python check-and-hold: same decision and same calls table after it,
    for a new call, a call asking again (its own hold not counted, refreshed, not held
    twice) and a call without identifiers."""
    engine = pg_store.engine
    terms = GrantTerms(client(capacity=capacity), None if auth_only else rate(), mcl)
    at = datetime.now(UTC).replace(microsecond=0)
    ids = () if own is None else (own,)
    outcomes = []
    for authorize in (pg_store._authorize_in_python, pg_store.authorize):
        _reset(engine, balance, others, at)
        outcomes.append((authorize(hold_request(terms, ids, at)), _calls(engine)))
    assert outcomes[1] == outcomes[0]


def test_concurrent_twins_of_one_call_hold_it_once(pg_store: SqlStore) -> None:
    """A re-sent Access-Request racing its first copy (each in its own database thread):
    one call, one hold, the same grant for every copy."""
    admin_balance(pg_store.engine, Decimal("1.00"))
    terms = GrantTerms(client(), rate(), 3600)
    at = datetime.now(UTC).replace(microsecond=0)
    start = threading.Barrier(6)
    decisions: list[Decision] = []

    def twin(uid: str) -> None:
        start.wait()
        decisions.append(pg_store.authorize(hold_request(terms, ("c1",), at, uid=uid)))

    threads = [threading.Thread(target=twin, args=(f"u{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert decisions == [Accept(600, Decimal("1.00"), Decimal("1.00"))] * 6
    assert [(row[3], row[7]) for row in _calls(pg_store.engine)] == [("c1", 1_000_000)]


def test_a_twin_that_waited_past_its_calls_stop_holds_nothing(pg_url: str) -> None:
    """The hung-database flake (tests/e2e/test_outages.py, PostgreSQL alone): an
    Access-Request stuck in a database thread while PostgreSQL was frozen ran after its
    re-sent twin was granted and the call charged; it held the ended call again, a hold
    nothing would release until it lapsed. The call has a CDR written after the request
    came: nothing is held."""
    engine = make_engine(pg_url)
    load.apply_provisioning(engine, spec("1.00"))
    store, authz, acct = services(pg_url)
    stuck_since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    granted = run_authorization(authz, call("c1"))  # the re-sent twin
    assert granted.decision == Accept(600, Decimal("1.00"), Decimal("1.00"))
    assert acct.record(stop("c1", 61)).result == "charged"
    assert _calls(engine) == []
    terms = GrantTerms(client(), rate(), 3600)
    late = store.authorize(hold_request(terms, ("c1",), stuck_since, uid="late"))
    assert isinstance(late, Accept)
    assert _calls(engine) == []  # before migration 0009: a second hold of the same call
    # a new call reusing the Call-ID after that Stop is held as any call
    again = store.authorize(hold_request(terms, ("c1",), datetime.now(UTC) + timedelta(0, 90)))
    assert isinstance(again, Accept)
    assert len(_calls(engine)) == 1


def admin_balance(engine: Engine, balance: Decimal) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE live_balances SET balance = :b WHERE client_id = 1"),
            {"b": to_micros(balance)},
        )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    balance=st.integers(0, 3_000_000).map(from_micros),
    capacity=st.one_of(st.none(), st.integers(0, 3)),
    calls=st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=1, max_size=8),
)
def test_a_batch_in_one_statement_decides_as_one_request_after_another(
    pg_store: SqlStore, balance: Decimal, capacity: int | None, calls: list[str]
) -> None:
    """authorize_many (the daemon's batches on PostgreSQL): the decisions and the holds of
    the requests one after another, twins of one call in the same batch held once."""
    engine = pg_store.engine
    terms = GrantTerms(client(capacity=capacity), rate(), 3600)
    at = datetime.now(UTC).replace(microsecond=0)
    requests = [
        hold_request(terms, (key,) if key else (), at, uid=f"u{n}") for n, key in enumerate(calls)
    ]
    _reset(engine, balance, [], at)
    one_by_one = [pg_store._authorize_in_python(r) for r in requests]
    expected = sorted(_calls(engine))
    _reset(engine, balance, [], at)
    assert pg_store.authorize_many(requests) == one_by_one
    assert sorted(_calls(engine)) == expected


def test_a_database_that_refuses_connections_is_an_outage_not_a_fault(pg_url: str) -> None:
    """The statement's own connection is taken from the pool outside SQLAlchemy's
    execution: a refused connection must still read as the database's outage (the daemon
    then counts ``database_unavailable``, not ``handler_error``)."""
    from sqlalchemy.engine import make_url

    from billing_core.adapters.errors import unavailable

    store = SqlStore(
        make_engine(make_url(pg_url).set(port=1).render_as_string(False))
    )  # nothing listens there
    terms = GrantTerms(client(), rate(), 600)
    at = datetime.now(UTC)
    for authorize in (store.authorize, lambda r: store.authorize_many([r])[0]):
        with pytest.raises(Exception) as caught:
            authorize(hold_request(terms, ("c1",), at))
        assert unavailable(caught.value) == "database", repr(caught.value)
