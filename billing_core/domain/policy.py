"""The authorization policy of CONTRACT §3 as pure functions.

Two stages. ``check_identity`` runs the checks that need no live state (account, password,
client status, rate). ``decide`` runs the checks on live state (capacity, balance, funds) and
computes the grant; live-state stores call it inside their atomic section, so that the check
and the hold are one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing_core.domain.model import Client, RejectReason
from billing_core.domain.money import ZERO
from billing_core.domain.rating import Rate, cost, first_grid_point, grant


@dataclass(frozen=True, slots=True)
class Accept:
    grant_seconds: int | None  # None: authentication only
    hold: Decimal  # what this call now holds (0 for postpaid and authentication only)
    funds: Decimal | None  # prepaid: available minus what other calls hold; None for postpaid


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason


Decision = Accept | Reject


@dataclass(frozen=True, slots=True)
class GrantTerms:
    """Everything the live stage needs to know about the client and the call's rate."""

    client: Client
    rate: Rate | None  # None: authentication only
    max_call_length: int


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    balance: Decimal  # live balance
    held_by_others: Decimal  # what the client's other calls hold
    calls_in_use: int  # the client's held or active calls, excluding this request's own call


def check_client(client: Client) -> Reject | None:
    if client.status == "deleted":
        return Reject(RejectReason.CLIENT_DELETED)
    if client.status == "stop":
        return Reject(RejectReason.CLIENT_STOPPED)
    return None


def decide(terms: GrantTerms, live: LiveSnapshot) -> Decision:
    """Capacity, zero balance, credit limit and funds, in the contract's order."""
    client = terms.client
    available = live.balance + client.credit
    funds = available - live.held_by_others
    if terms.rate is None:  # authentication only: no capacity, no hold
        if not client.postpaid and available <= 0:
            return Reject(
                RejectReason.ZERO_BALANCE if client.credit == 0 else RejectReason.CREDIT_LIMIT
            )
        return Accept(None, ZERO, None if client.postpaid else funds)
    capacity = client.effective_capacity(available)
    if capacity is not None and live.calls_in_use >= capacity:
        return Reject(RejectReason.CAPACITY)
    if client.postpaid:
        return Accept(terms.max_call_length, ZERO, None)
    if available <= 0:
        return Reject(
            RejectReason.ZERO_BALANCE if client.credit == 0 else RejectReason.CREDIT_LIMIT
        )
    rate = terms.rate
    if funds < cost(rate, first_grid_point(rate)):
        return Reject(RejectReason.INSUFFICIENT_FUNDS)
    seconds = grant(rate, funds, terms.max_call_length)
    if seconds < 1:
        return Reject(RejectReason.INSUFFICIENT_FUNDS)
    return Accept(seconds, cost(rate, seconds), funds)
