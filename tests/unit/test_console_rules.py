"""The console's rules (billingctl.services), decided on plain values: no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing_core.errors import UserError
from billing_core.ports import BalanceMoved, LiveEffect
from billingctl.services.money import follow_payments, invoice_period


@dataclass(frozen=True)
class Client:
    name: str = "Acme"
    timezone: str = "UTC"
    last_invoiced: date | None = None


NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)  # 19:00 on the 9th in Honolulu


@pytest.mark.parametrize(
    ("client", "until", "period"),
    [
        (Client(), date(2026, 3, 9), (None, date(2026, 3, 9))),
        (
            Client(last_invoiced=date(2026, 2, 28)),
            date(2026, 3, 9),
            (date(2026, 3, 1), date(2026, 3, 9)),
        ),
        # 14:00 on the 10th in Tokyo: the 9th has ended there too
        (Client(timezone="Asia/Tokyo"), date(2026, 3, 9), (None, date(2026, 3, 9))),
    ],
)
def test_an_invoice_covers_the_days_after_the_last_one(
    client: Client, until: date, period: tuple[date | None, date]
) -> None:
    assert invoice_period(client, until, NOW) == period


@pytest.mark.parametrize(
    ("client", "until", "message"),
    [
        (
            Client(),
            date(2026, 3, 10),
            "until: 2026-03-10 has not ended yet in the client's time zone (UTC, ",
        ),
        (
            Client(timezone="Pacific/Honolulu"),
            date(2026, 3, 9),
            "(Pacific/Honolulu, today is 2026-03-09)",
        ),
        (
            Client(last_invoiced=date(2026, 3, 5)),
            date(2026, 3, 5),
            "until: Acme is invoiced through 2026-03-05 already",
        ),
        (Client(last_invoiced=date(2026, 3, 5)), date(2026, 3, 1), "invoiced through 2026-03-05"),
    ],
)
def test_an_invoice_is_refused_for_a_day_not_ended_or_invoiced_already(
    client: Client, until: date, message: str
) -> None:
    with pytest.raises(UserError) as caught:
        invoice_period(client, until, NOW)
    assert message in str(caught.value)


class FakeLive:
    """A live state that records what it is given and can be unreachable."""

    def __init__(self, reachable: list[bool]) -> None:
        self.reachable = reachable
        self.applied: list[tuple[list[LiveEffect], dict[int, int]]] = []
        self.missed = False

    def apply(self, effects: list[LiveEffect], seqs: dict[int, int]) -> None:
        self.missed = not self.reachable.pop(0)
        if not self.missed:
            self.applied.append((list(effects), dict(seqs)))


def test_payments_reach_the_live_state_one_by_one_on_their_own_sequence() -> None:
    live = FakeLive([True, True])
    moved = [(1, Decimal("5.00"), 7), (1, Decimal("-2.00"), 8)]
    assert follow_payments(live, moved) is False  # type: ignore[arg-type]
    assert live.applied == [
        ([BalanceMoved(1, Decimal("5.00"))], {1: 7}),
        ([BalanceMoved(1, Decimal("-2.00"))], {1: 8}),
    ]


def test_a_live_state_that_missed_the_change_is_reported() -> None:
    assert follow_payments(FakeLive([False]), [(1, Decimal("1"), 1)]) is True  # type: ignore[arg-type]


def test_without_redis_the_database_is_the_live_state_and_nothing_follows() -> None:
    assert follow_payments(None, [(1, Decimal("1"), 1)]) is False
