"""Ports: what the services need from the outside world, as typing.Protocols."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from billing_core.authorization import Decision, GrantTerms
from billing_core.domain import Client
from billing_core.identification import AccountIndex
from billing_core.rating import RateTableIndex
from billing_core.sessions import AccountingEvent


@dataclass(frozen=True, slots=True)
class Catalog:
    """An in-memory snapshot of what authorization reads: no SQL on the hot path."""

    version: int
    clients: Mapping[int, Client]
    accounts: AccountIndex
    rate_tables: Mapping[int, RateTableIndex]
    max_call_length: int | None  # the database setting; None: the config file's value


class CatalogSource(Protocol):
    def catalog_version(self) -> int: ...

    def load_catalog(self) -> Catalog: ...


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """A check-and-hold for one call, decided atomically by the live state."""

    terms: GrantTerms
    nas_key: str
    account_id: int
    called: str  # normalized, tech prefix stripped
    identifiers: tuple[str, ...]  # h323-conf-id, AVPair call-id, Acct-Session-Id
    acct_session_id: str  # the request's Acct-Session-Id, "" when it carried none
    now: datetime
    hold_seconds: int  # auth_hold_seconds


class LiveState(Protocol):
    """Live balances, holds and calls per client."""

    def authorize(self, request: HoldRequest) -> Decision:
        """Run ``authorization.decide`` on the client's live state and, for a prepaid or
        capacity-limited grant, hold it, all in one atomic step."""
        ...

    def reachable(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CallRecord:
    id: int
    client_id: int
    account_id: int | None
    nas_key: str
    called: str
    state: str  # held | active
    granted_seconds: int | None
    hold: Decimal
    authorized_at: datetime | None
    started_at: datetime | None
    max_session_time: int
    charged: bool


@dataclass(frozen=True, slots=True)
class ClosedLeg:
    """A CDR to store; its identity plus duration is unique in the database."""

    client_id: int
    account_id: int | None
    call_id: int | None
    nas_key: str
    epoch: int
    acct_session_id: str
    conf_id: str
    origin: str
    called: str
    duration: int
    billed_duration: int
    cost: Decimal
    rate_code: str | None
    rated_at: datetime
    started_at: datetime | None
    stopped_at: datetime
    closed_by: str


class AccountingTx(Protocol):
    """One database transaction of accounting work; committed when the block exits cleanly."""

    def record_event(self, event: AccountingEvent) -> None: ...

    def find_call(self, nas_key: str, identifiers: tuple[str, ...]) -> CallRecord | None: ...

    def create_call(
        self,
        *,
        client_id: int,
        account_id: int | None,
        nas_key: str,
        acct_session_id: str,
        called: str,
        identifiers: tuple[str, ...],
        state: str,
        started_at: datetime | None,
    ) -> CallRecord: ...

    def update_call(
        self,
        call_id: int,
        *,
        state: str | None = None,
        started_at: datetime | None = None,
        max_session_time: int | None = None,
        hold_expires_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> None: ...

    def link_leg(
        self, call_id: int, nas_key: str, identifiers: tuple[str, ...], acct_session_id: str
    ) -> None:
        """Add a leg's identifiers to its call; the first Acct-Session-Id names the call."""
        ...

    def store_leg(self, leg: ClosedLeg) -> int | None:
        """Insert the CDR; None when an equal leg (identity and duration) is already stored."""
        ...

    def charge(self, client_id: int, amount: Decimal, cdr_id: int, note: str) -> None: ...

    def end_call(self, call_id: int) -> None: ...


class Ledger(Protocol):
    def accounting(self) -> AbstractContextManager[AccountingTx]: ...

    def reachable(self) -> bool: ...
