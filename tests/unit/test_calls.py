"""The call rules of billing_core/domain/calls.py and live_balance.py: tables in, values out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.accounting_packets import AcctStatus
from billing_core.domain.calls import (
    CLOSED_BY_SERVER,
    ENDING,
    LEG_STATUSES,
    LIFECYCLE,
    NAS_RESTARTS,
    OPENING,
    CallMove,
    CallState,
    ClosedBy,
    counts,
    late_epochs,
    leg_epoch,
    live_uid,
    mark_of,
    mark_start,
    once,
    possible_epochs,
    start_mark,
    state_after,
)
from billing_core.domain.live_balance import NO_BALANCE, LiveBalance, moved

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=180)


def test_every_move_has_a_row_of_the_lifecycle() -> None:
    assert set(LIFECYCLE) == set(CallMove)


@pytest.mark.parametrize(
    ("move", "state"),
    [
        (CallMove.AUTHORIZED, CallState.HELD),
        (CallMove.ACCOUNTED, CallState.ACTIVE),
        (CallMove.REHELD, CallState.HELD),
        (CallMove.STOPPED, CallState.CLOSED),
        (CallMove.CLOSED_BY_SERVER, CallState.CLOSED),
        (CallMove.LAPSED, CallState.CLOSED),
        (CallMove.CORRECTED, CallState.CLOSED),
        (CallMove.NEW_EPOCH, CallState.CLOSED),
    ],
)
def test_the_state_each_move_leaves_a_call_in(move: CallMove, state: CallState) -> None:
    assert state_after(move) == state


@pytest.mark.parametrize("move", list(CallMove))
def test_a_call_holds_after_a_move_exactly_when_the_table_says(move: CallMove) -> None:
    step = LIFECYCLE[move]
    assert counts(step.target, LATER, NOW) == step.holds


@pytest.mark.parametrize(
    ("state", "expires", "expected"),
    [
        ("active", None, True),
        ("active", NOW - timedelta(seconds=1), True),  # an active call keeps counting
        ("held", LATER, True),
        ("held", NOW, False),  # lapsed at its expiry
        ("held", None, False),
        ("closed", LATER, False),
    ],
)
def test_which_calls_count(state: str, expires: datetime | None, expected: bool) -> None:
    assert counts(state, expires, NOW) is expected


def test_leg_statuses() -> None:
    assert OPENING | ENDING == LEG_STATUSES
    assert not OPENING & ENDING
    assert AcctStatus.ACCOUNTING_ON not in LEG_STATUSES
    assert set(NAS_RESTARTS.values()) <= CLOSED_BY_SERVER
    assert ClosedBy.STOP.value not in CLOSED_BY_SERVER


@pytest.mark.parametrize(
    ("epoch", "changed_at", "when", "expected"),
    [
        (0, None, NOW, 0),
        (3, NOW, LATER, 3),
        (3, NOW, NOW, 3),  # at the restart: the new epoch
        (3, LATER, NOW, 2),  # a late packet of a call the restart closed
    ],
)
def test_the_epoch_of_a_packet(
    epoch: int, changed_at: datetime | None, when: datetime, expected: int
) -> None:
    assert leg_epoch(epoch, changed_at, when) == expected


@given(
    st.integers(min_value=1, max_value=1000),
    st.one_of(st.none(), st.integers(min_value=-3600, max_value=3600)),
    st.integers(min_value=-3600, max_value=3600),
)
def test_a_packet_epoch_is_one_read_ahead(epoch: int, changed: int | None, offset: int) -> None:
    changed_at = None if changed is None else NOW + timedelta(seconds=changed)
    when = NOW + timedelta(seconds=offset)
    assert leg_epoch(epoch, changed_at, when) in possible_epochs(epoch, changed_at)


def test_a_late_stop_looks_back_four_epochs_newest_first_never_below_zero() -> None:
    assert list(late_epochs(6)) == [6, 5, 4, 3]
    assert list(late_epochs(1)) == [1, 0]
    assert list(late_epochs(0)) == [0]


def test_names_of_a_call_and_of_its_stops() -> None:
    assert live_uid(7, "abc") == "abc"
    assert live_uid(7, "") == "db7"
    started = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    mark = start_mark(started)
    assert mark == "1772366400250000"
    assert start_mark(started.replace(tzinfo=None)) == mark  # naive times are UTC
    assert mark_start(mark) == started
    assert once(mark, 42) == f"{mark}/42"
    assert once(mark, None) == f"{mark}/t"
    assert once("", 0) == "/0"
    assert mark_of(once(mark, 42)) == mark
    assert mark_of(once("", None)) == ""


@pytest.mark.parametrize(
    ("current", "amount", "expected"),
    [
        (None, Decimal("10.00"), LiveBalance(Decimal("10.00"), 1)),
        (NO_BALANCE, Decimal("-0.5"), LiveBalance(Decimal("-0.5"), 1)),
        (LiveBalance(Decimal("3.000001"), 41), Decimal("-1"), LiveBalance(Decimal("2.000001"), 42)),
        (LiveBalance(Decimal("3"), 5), Decimal("0"), LiveBalance(Decimal("3"), 6)),  # touched
    ],
)
def test_adding_to_a_live_balance(
    current: LiveBalance | None, amount: Decimal, expected: LiveBalance
) -> None:
    assert moved(current, amount) == expected
