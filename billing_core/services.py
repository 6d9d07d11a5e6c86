"""Use cases: authorize a call, record its accounting. Synchronous; the edge runs them."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from billing_core.authorization import Decision, GrantTerms, Reject, check_client
from billing_core.domain import Account, Client, RejectReason, check_password
from billing_core.identification import CallerFacts
from billing_core.numbers import digits_only
from billing_core.ports import Catalog, CatalogSource, HoldRequest, LiveState


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


@dataclass(frozen=True, slots=True)
class PendingHold:
    """An authorization that passed every check but the live state's."""

    hold: HoldRequest
    client: Client
    account: Account
    number: str | None

    def finish(self, decision: Decision) -> AuthOutcome:
        return AuthOutcome(decision, self.client, self.account, self.number)


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
            self._catalog = self._source.load_catalog(self._catalog)
            return True


def call_uid(nas_key: str, identifiers: tuple[str, ...], account_id: int, called: str) -> str:
    """The live state's id of a call: the same for every Access-Request of the same call
    (same NAS key, first identifier, account and number), random without identifiers."""
    if not identifiers:
        return uuid.uuid4().hex
    key = f"{nas_key}\x1f{identifiers[0]}\x1f{account_id}\x1f{called}".encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


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
        self.live = live
        self._max_call_length = max_call_length
        self._auth_hold_seconds = auth_hold_seconds

    def authorize(self, request: AuthorizeCall) -> AuthOutcome:
        prepared = self.prepare(request)
        if isinstance(prepared, AuthOutcome):
            return prepared
        return prepared.finish(self.live.authorize(prepared.hold))

    def prepare(
        self, request: AuthorizeCall, *, verify_password: bool = True
    ) -> AuthOutcome | PendingHold:
        """Everything before the live state, from memory: an outcome already, or the
        check-and-hold to run (the edge may run it on an asynchronous client).
        ``verify_password=False``: the password step passes (``billingctl explain``)."""
        catalog = self._catalog()
        identified = catalog.accounts.identify(request.caller)
        if identified is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        account = identified.account
        client = catalog.clients.get(account.client_id)
        if client is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        if account.ident == "login" and verify_password and not _password_ok(account, request):
            return AuthOutcome(Reject(RejectReason.BAD_PASSWORD), client, account)
        refused = check_client(client)
        if refused is not None:
            return AuthOutcome(refused, client, account)
        max_call_length = catalog.max_call_length or self._max_call_length
        number = identified.number
        if number is None:  # authentication only: no rate, no hold
            hold = HoldRequest(
                terms=GrantTerms(client, None, max_call_length),
                nas_key=request.nas_key,
                account_id=account.id,
                called="",
                identifiers=(),
                acct_session_id="",
                now=request.arrived,
                hold_seconds=0,
            )
            return PendingHold(hold, client, account, None)
        digits = number if number.isdigit() and number.isascii() else digits_only(number)
        table = catalog.rate_tables.get(client.rate_table_id) if client.rate_table_id else None
        rate = table.lookup(digits, request.arrived) if table is not None else None
        if rate is None:
            return AuthOutcome(Reject(RejectReason.NO_RATE), client, account, digits)
        hold = HoldRequest(
            terms=GrantTerms(client, rate, max_call_length),
            nas_key=request.nas_key,
            account_id=account.id,
            called=digits,
            identifiers=request.identifiers,
            acct_session_id=request.acct_session_id,
            now=request.arrived,
            hold_seconds=self._auth_hold_seconds,
            uid=call_uid(request.nas_key, request.identifiers, account.id, digits),
        )
        return PendingHold(hold, client, account, digits)
