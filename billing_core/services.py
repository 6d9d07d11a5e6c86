"""Use cases: authorize a call, record its accounting. Synchronous; the edge runs them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing_core.authorization import Decision, GrantTerms, Reject, check_client
from billing_core.domain import Account, Client, RejectReason, check_password
from billing_core.identification import CallerFacts
from billing_core.money import ZERO
from billing_core.numbers import digits_only
from billing_core.ports import (
    AccountingTx,
    CallRecord,
    Catalog,
    CatalogSource,
    ClosedLeg,
    HoldRequest,
    Ledger,
    LiveState,
)
from billing_core.rating import billed, cost
from billing_core.sessions import AccountingEvent, AcctStatus, rating_moment, stop_duration


@dataclass(frozen=True, slots=True)
class Chap:
    ident: int
    response: bytes
    challenge: bytes


@dataclass(frozen=True, slots=True)
class AuthorizeCall:
    nas_key: str
    caller: CallerFacts
    password: bytes | None  # PAP, decrypted
    chap: Chap | None
    identifiers: tuple[str, ...]
    arrived: datetime
    acct_session_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    decision: Decision
    client: Client | None = None
    account: Account | None = None
    number: str | None = None


class CatalogCache:
    """Keeps the in-memory catalog current: reloads it when the database's version moves.

    The version is a counter every catalog change increments in the same transaction, so one
    cheap query a second tells whether anything changed (README: how rate changes reach the
    daemon).
    """

    def __init__(self, source: CatalogSource, *, min_interval: float = 1.0) -> None:
        self._source = source
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._catalog = source.load_catalog()
        self._checked = time.monotonic()

    @property
    def current(self) -> Catalog:
        return self._catalog

    def refresh(self, *, force: bool = False) -> bool:
        """Reload when the version changed; True when a new catalog was loaded."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < self._min_interval:
                return False
            self._checked = now
            if not force and self._source.catalog_version() == self._catalog.version:
                return False
            self._catalog = self._source.load_catalog()
            return True


def _password_ok(account: Account, request: AuthorizeCall) -> bool:
    if account.password_hash is None:
        return True
    if request.password is not None:
        return check_password(account.password_hash, request.password.rstrip(b"\x00"))
    # CHAP needs the clear password, which we do not store (README: passwords)
    return False


class AuthorizationService:
    def __init__(
        self,
        catalog: Callable[[], Catalog],
        live: LiveState,
        *,
        max_call_length: int,
        auth_hold_seconds: int,
    ) -> None:
        self._catalog = catalog
        self._live = live
        self._max_call_length = max_call_length
        self._auth_hold_seconds = auth_hold_seconds

    def authorize(self, request: AuthorizeCall) -> AuthOutcome:
        catalog = self._catalog()
        identified = catalog.accounts.identify(request.caller)
        if identified is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        account = identified.account
        client = catalog.clients.get(account.client_id)
        if client is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        if account.ident == "login" and not _password_ok(account, request):
            return AuthOutcome(Reject(RejectReason.BAD_PASSWORD), client, account)
        refused = check_client(client)
        if refused is not None:
            return AuthOutcome(refused, client, account)
        max_call_length = catalog.max_call_length or self._max_call_length
        number = identified.number
        if number is None:  # authentication only
            terms = GrantTerms(client, None, max_call_length)
            decision = self._live.authorize(
                HoldRequest(
                    terms=terms,
                    nas_key=request.nas_key,
                    account_id=account.id,
                    called="",
                    identifiers=(),
                    acct_session_id="",
                    now=request.arrived,
                    hold_seconds=0,
                )
            )
            return AuthOutcome(decision, client, account, None)
        digits = digits_only(number)
        table = catalog.rate_tables.get(client.rate_table_id) if client.rate_table_id else None
        rate = table.lookup(digits, request.arrived) if table is not None else None
        if rate is None:
            return AuthOutcome(Reject(RejectReason.NO_RATE), client, account, digits)
        terms = GrantTerms(client, rate, max_call_length)
        decision = self._live.authorize(
            HoldRequest(
                terms=terms,
                nas_key=request.nas_key,
                account_id=account.id,
                called=digits,
                identifiers=request.identifiers,
                acct_session_id=request.acct_session_id,
                now=request.arrived,
                hold_seconds=self._auth_hold_seconds,
            )
        )
        return AuthOutcome(decision, client, account, digits)


@dataclass(frozen=True, slots=True)
class AcctOutcome:
    result: str  # recorded | charged | duplicate | unknown_account | not_billable | ended
    client_id: int | None = None
    cost: Decimal | None = None
    duration: int | None = None
    collision: bool = False


class AccountingService:
    def __init__(
        self,
        catalog: Callable[[], Catalog],
        ledger: Ledger,
        *,
        auth_hold_seconds: int,
        max_acct_delay_seconds: int,
    ) -> None:
        self._catalog = catalog
        self._ledger = ledger
        self._auth_hold_seconds = auth_hold_seconds
        self._max_delay = max_acct_delay_seconds

    def record(self, event: AccountingEvent) -> AcctOutcome:
        """Record the packet and apply it, in one transaction: answered only after commit."""
        with self._ledger.accounting() as tx:
            tx.record_event(event)
            if event.status not in (AcctStatus.START, AcctStatus.INTERIM_UPDATE, AcctStatus.STOP):
                return AcctOutcome("recorded")
            if not event.billable:
                return AcctOutcome("not_billable")
            return self._apply(tx, event)

    def _identify(self, event: AccountingEvent) -> tuple[int, int, str] | None:
        """(client id, account id, called digits) for accounting that matches no call."""
        catalog = self._catalog()
        identified = catalog.accounts.identify(
            event.caller, allow_remote_address=event.origin == "answer"
        )
        if identified is None:
            return None
        account = identified.account
        return account.client_id, account.id, digits_only(identified.number or "")

    def _apply(self, tx: AccountingTx, event: AccountingEvent) -> AcctOutcome:
        ids = event.identifiers()
        when = event.event_time(self._max_delay)
        call = tx.find_call(event.nas_key, ids)
        if call is not None:
            tx.link_leg(call.id, event.nas_key, ids, event.acct_session_id)
        if event.status == AcctStatus.STOP:
            return self._stop(tx, event, call, when)
        if call is None:
            who = self._identify(event)
            if who is None:
                return AcctOutcome("unknown_account")
            tx.create_call(
                client_id=who[0],
                account_id=who[1],
                nas_key=event.nas_key,
                acct_session_id=event.acct_session_id,
                called=who[2],
                identifiers=ids,
                state="active",
                started_at=when if event.status == AcctStatus.START else None,
            )
            return AcctOutcome("recorded", who[0])
        if event.status == AcctStatus.START:
            if call.started_at is None:
                tx.update_call(call.id, state="active", started_at=when, last_seen_at=when)
        else:
            longer = event.session_time if event.session_time is not None else 0
            tx.update_call(
                call.id,
                state="active",
                max_session_time=max(call.max_session_time, longer),
                last_seen_at=when,
            )
        return AcctOutcome("recorded", call.client_id)

    def _stop(
        self, tx: AccountingTx, event: AccountingEvent, call: CallRecord | None, when: datetime
    ) -> AcctOutcome:
        catalog = self._catalog()
        if call is not None:
            client_id, account_id, called = call.client_id, call.account_id, call.called
        else:
            who = self._identify(event)
            if who is None:
                return AcctOutcome("unknown_account")
            client_id, account_id, called = who
        duration = stop_duration(event, call.started_at if call else None, self._max_delay)
        if duration == 0:
            if call is not None:
                if call.charged:
                    tx.end_call(call.id)
                else:
                    tx.update_call(
                        call.id,
                        state="held",
                        hold_expires_at=when + timedelta(seconds=self._auth_hold_seconds),
                        last_seen_at=when,
                    )
            return AcctOutcome("ended", client_id, ZERO, 0)
        client = catalog.clients.get(client_id)
        moment = rating_moment(
            client.bill_events_by if client else "disconnect",
            authorized_at=call.authorized_at if call else None,
            started_at=call.started_at if call else None,
            stopped_at=when,
            duration=duration,
        )
        table = (
            catalog.rate_tables.get(client.rate_table_id)
            if client is not None and client.rate_table_id
            else None
        )
        rate = table.lookup(called, moment) if table is not None else None
        amount = cost(rate, duration) if rate is not None else ZERO
        leg = ClosedLeg(
            client_id=client_id,
            account_id=account_id,
            call_id=call.id if call else None,
            nas_key=event.nas_key,
            epoch=0,
            acct_session_id=event.acct_session_id,
            conf_id=event.conf_id or "",
            origin=event.origin or "",
            called=called,
            duration=duration,
            billed_duration=billed(rate, duration) if rate is not None else 0,
            cost=amount,
            rate_code=rate.code if rate is not None else None,
            rated_at=moment,
            started_at=call.started_at if call else when - timedelta(seconds=duration),
            stopped_at=when,
            closed_by="stop",
        )
        cdr_id = tx.store_leg(leg)
        if cdr_id is None:
            return AcctOutcome("duplicate", client_id, ZERO, duration)
        if amount:
            tx.charge(client_id, -amount, cdr_id, f"call {event.acct_session_id}")
        if call is not None:
            tx.end_call(call.id)
        return AcctOutcome("charged", client_id, amount, duration)
