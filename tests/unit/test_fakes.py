"""The fakes keep the adapters' rules the accounting service leans on (each mirrors an
integration test of the SQL adapter): a fake that lost one would let a rule test pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing_core.ports import ClosedLeg, LedgerConflict, LegIdentity
from tests.fakes import FakeLedger

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NAS = "kam|127.0.0.1"


def leg(duration: int, once: str, epoch: int = 0) -> ClosedLeg:
    return ClosedLeg(
        identity=LegIdentity(NAS, epoch, "c@h", "", "", "t1;t2"),
        client_id=1,
        account_id=None,
        call_id=None,
        called="15550001111",
        duration=duration,
        billed_duration=duration,
        cost=Decimal("0.01"),
        rate_code="1",
        rated_at=T0,
        started_at=T0,
        stopped_at=T0 + timedelta(seconds=duration),
        closed_by="stop",
        once=once,
    )


def test_a_leg_is_stored_once_per_start() -> None:
    """test_sip_legs.test_a_leg_is_stored_once_per_start: uq_cdrs_leg_once."""
    ledger = FakeLedger()
    with ledger.accounting() as tx:
        assert tx.store_leg(leg(61, "1700000000000000/t")) is not None
    with ledger.accounting() as tx:  # another node's copy, with another arrival
        assert tx.store_leg(leg(64, "1700000000000000/t")) is None
    with ledger.accounting() as tx:  # another Start of the same identity: another leg
        assert tx.store_leg(leg(61, "1700000100000000/t")) is not None
    with ledger.accounting() as tx:  # the same in another epoch: another leg
        assert tx.store_leg(leg(61, "1700000000000000/t", epoch=1)) is not None
    assert len(ledger.cdrs()) == 3


def test_each_nas_key_counts_its_own_epochs() -> None:
    ledger = FakeLedger()
    with ledger.accounting() as tx:
        assert tx.current_epoch(NAS) == (0, None)
        assert tx.new_epoch(NAS, T0) == 1
        assert tx.new_epoch(NAS, T0 + timedelta(seconds=5)) == 2
        assert tx.current_epoch("other") == (0, None)
    with ledger.accounting() as tx:
        assert tx.current_epoch(NAS) == (2, T0 + timedelta(seconds=5))


def test_a_transaction_that_fails_writes_nothing() -> None:
    ledger = FakeLedger()
    with pytest.raises(RuntimeError), ledger.accounting() as tx:
        tx.store_leg(leg(61, "x/t"))
        tx.new_epoch(NAS, T0)
        raise RuntimeError
    assert ledger.cdrs() == []
    with ledger.accounting() as tx:
        assert tx.current_epoch(NAS) == (0, None)


def test_a_transaction_another_committed_under_is_a_conflict_and_writes_nothing() -> None:
    """test_sip_legs.test_the_database_keeps_one_cdr_per_leg_and_start (PostgreSQL)."""
    ledger = FakeLedger()
    with pytest.raises(LedgerConflict), ledger.accounting() as tx:
        assert tx.find_legs(leg(0, "").identity) == []
        with ledger.accounting() as first:
            assert first.store_leg(leg(61, "1700000000000000/t")) is not None
        tx.store_leg(leg(64, "1700000000000000/t"))
    assert [c.duration for c in ledger.cdrs()] == [61]
