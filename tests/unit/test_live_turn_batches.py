"""The database's live state on PostgreSQL takes each loop turn's check-and-holds as one
batch (``LoopTurnBatches``): one call of ``authorize_many`` per turn, each request its
own decision, an error to every request of its batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing_core.domain.model import Client
from billing_core.domain.policy import Accept, Decision, GrantTerms
from billing_core.errors import Unavailable
from billing_core.ports import HoldRequest, LockoutProbe
from billing_core.services.live_threads import LoopTurnBatches

CLIENT = Client(
    id=1,
    name="c",
    status="active",
    currency="USD",
    locale=None,
    postpaid=True,
    credit=Decimal(0),
    rate_table_id=1,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="disconnect",
)


def request(n: int) -> HoldRequest:
    return HoldRequest(
        terms=GrantTerms(CLIENT, None, n),
        nas_key="nas",
        account_id=1,
        called="1",
        identifiers=(f"k{n}",),
        acct_session_id="",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hold_seconds=60,
    )


def no_lockout(_probe: LockoutProbe) -> bool:
    return False


def test_one_loop_turn_is_one_batch_and_each_gets_its_own_decision() -> None:
    batches: list[list[int]] = []

    def many(requests: list[HoldRequest]) -> list[Decision]:
        batches.append([r.terms.max_call_length for r in requests])
        return [Accept(r.terms.max_call_length, Decimal(0), None) for r in requests]

    async def run() -> list[Decision]:
        live = LoopTurnBatches(many, no_lockout, ThreadPoolExecutor(2))
        first = await asyncio.gather(*(live.authorize(request(n)) for n in (1, 2, 3)))
        second = await live.authorize(request(4))
        return [*first, second]

    decisions = asyncio.run(run())
    assert [d.grant_seconds for d in decisions if isinstance(d, Accept)] == [1, 2, 3, 4]
    assert batches == [[1, 2, 3], [4]]


def test_an_outage_reaches_every_request_of_the_batch() -> None:
    def many(_requests: list[HoldRequest]) -> list[Decision]:
        raise Unavailable("database")

    async def run() -> list[BaseException | Decision]:
        live = LoopTurnBatches(many, no_lockout, ThreadPoolExecutor(1))
        return await asyncio.gather(
            *(live.authorize(request(n)) for n in (1, 2)), return_exceptions=True
        )

    outcomes = asyncio.run(run())
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, Unavailable)
    with pytest.raises(Unavailable):
        asyncio.run(LoopTurnBatches(many, no_lockout).authorize(request(1)))
