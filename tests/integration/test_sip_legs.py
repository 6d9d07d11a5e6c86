"""Legs of SIP calls (CONTRACT §3, Legs and Start of a closed leg) through the accounting
service on real SQLite and PostgreSQL: Kamailio's accounting carries no Acct-Session-Time,
a Call-ID the caller chooses and the dialog's tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.identification import CallerFacts
from billing_core.ports import ClosedLeg, LedgerConflict, LegIdentity
from billing_core.services.accounting import AccountingService
from billingctl.adapters import admin
from billingctl.services import load

from .test_sql_store import services, spec

_BASE = [datetime.now(UTC).replace(microsecond=0)]


@pytest.fixture(autouse=True)
def _base_now() -> None:
    """Each test's events start at its own start (holds lapse against the real clock)."""
    _BASE[0] = datetime.now(UTC).replace(microsecond=0)


def sip(
    status: int,
    at: float,
    *,
    call_id: str = "a84b4c76e66710@192.0.2.4",
    tags: str = "1928301774;314159",
    final: bool = True,
) -> AccountingEvent:
    """A Kamailio accounting event arriving ``at`` seconds after the test's start."""
    return AccountingEvent(
        nas_key="kam|127.0.0.1",
        bill_leg="originate",
        status=status,
        acct_session_id=call_id,
        conf_id=None,
        avpair_call_id=None,
        origin=None,
        session_time=None,
        delay=None,
        arrived=_BASE[0] + timedelta(seconds=at),
        caller=CallerFacts(user_name="acme", called="sip:15550001111@sip.example.net"),
        tags=tags,
        zero_final=final,
    )


def results(acct: AccountingService, *events: AccountingEvent) -> list[str]:
    return [acct.record(event).result for event in events]


def test_a_reused_call_id_is_a_new_leg_charged_again(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    store, _authz, acct = services(db_url)
    first = results(acct, sip(1, 0), sip(1, 1), sip(2, 61))
    # a retransmitted Start (its event time before the Stop) changes nothing
    assert first == ["recorded", "recorded", "charged"]
    assert results(acct, sip(1, 30)) == ["recorded"]
    assert store.count_active_calls() == 0
    # the same Call-ID and tags later: a new call, charged again
    assert results(acct, sip(1, 100), sip(2, 161)) == ["recorded", "charged"]
    cdrs = admin.list_cdrs(engine)
    assert [(c["duration"], c["cost"]) for c in cdrs] == [(61, "0.20"), (61, "0.20")]
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.60"


def test_a_stop_resent_later_is_known_by_its_leg_not_by_its_duration(db_url: str) -> None:
    """Without Acct-Session-Time the duration comes from the event times: a copy arriving
    later would compute a longer one."""
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    assert results(acct, sip(1, 0), sip(2, 61)) == ["recorded", "charged"]
    assert results(acct, sip(2, 75), sip(2, 200)) == ["duplicate", "duplicate"]
    assert len(admin.list_cdrs(engine)) == 1
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"


def test_other_tags_are_another_leg(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    assert results(acct, sip(1, 0), sip(2, 61)) == ["recorded", "charged"]
    # a second dialog on the same Call-ID (a fork, a reused Call-ID) started meanwhile
    other = "77aa0912;a6c85cf"
    assert results(acct, sip(1, 10, tags=other), sip(2, 70, tags=other)) == [
        "recorded",
        "charged",
    ]
    assert len(admin.list_cdrs(engine)) == 2


def test_zero_duration_stop_final_ends_the_call_and_retry_holds_it_again(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    store, _authz, acct = services(db_url)
    # a BYE right after the 200: 0 s; final: the call is gone at once
    assert results(acct, sip(1, 0), sip(2, 0)) == ["recorded", "ended"]
    assert store.count_active_calls() == 0
    assert admin.list_sessions(engine) == []
    # retry (cisco's rule): back to held, still counting toward capacity
    assert results(acct, sip(1, 5, call_id="b"), sip(2, 5, call_id="b", final=False)) == [
        "recorded",
        "ended",
    ]
    assert [s["state"] for s in admin.list_sessions(engine)] == ["held"]
    assert admin.list_cdrs(engine) == []


def _leg(duration: int, once: str) -> ClosedLeg:
    return ClosedLeg(
        identity=LegIdentity("kam|127.0.0.1", 0, "c@h", "", "", "t1;t2"),
        client_id=1,
        account_id=None,
        call_id=None,
        called="15550001111",
        duration=duration,
        billed_duration=duration,
        cost=Decimal("0.01"),
        rate_code="1",
        rated_at=_BASE[0],
        started_at=_BASE[0],
        stopped_at=_BASE[0] + timedelta(seconds=duration),
        closed_by="stop",
        once=once,  # the leg's Start, and "t": no duration of its own
    )


def test_a_leg_is_stored_once_per_start(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    store = SqlStore(make_engine(db_url))
    with store.accounting() as tx:
        assert tx.store_leg(_leg(61, "1700000000000000/t")) is not None
    with store.accounting() as tx:  # another node's copy, with another arrival
        assert tx.store_leg(_leg(64, "1700000000000000/t")) is None
    with store.accounting() as tx:  # another Start of the same identity: another leg
        assert tx.store_leg(_leg(61, "1700000100000000/t")) is not None
    assert len(admin.list_cdrs(engine)) == 2


def test_the_database_keeps_one_cdr_per_leg_and_start(pg_url: str) -> None:
    """PostgreSQL (SQLite has one writer): two nodes that both saw the call compute their
    own durations; the copy committed while this transaction ran breaks the unique key
    (the leg and its Start) at the write, and the batch is run again (LedgerConflict)."""
    engine = make_engine(pg_url)
    load.apply_provisioning(engine, spec("5.00"))
    store = SqlStore(make_engine(pg_url))
    other = SqlStore(make_engine(pg_url))
    with pytest.raises(LedgerConflict), store.accounting() as tx:
        assert tx.find_legs(_leg(0, "").identity) == []
        with other.accounting() as first:
            assert first.store_leg(_leg(61, "1700000000000000/t")) is not None
        tx.store_leg(_leg(64, "1700000000000000/t"))
    assert [c["duration"] for c in admin.list_cdrs(engine)] == [61]
