"""The authorization use case: ``AuthorizationService.authorize``, the daemon's one call per
Access-Request, and the in-memory pieces it reads (catalog, decrypted secrets)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from billing_core.domain.credentials import (
    Chap,
    Digest,
    FailureReason,
    chap_ok,
    digest_ok,
    pap_ok,
)
from billing_core.domain.dialled import digits_only
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import Account, Client, RejectReason, check_password
from billing_core.domain.policy import Decision, GrantTerms, Reject, check_client
from billing_core.ports import (
    Catalog,
    CatalogSource,
    HoldRequest,
    LiveAuthorizer,
    LiveState,
    LockoutProbe,
    SecretCipher,
    SecretUnavailable,
)

__all__ = ["Chap", "Digest"]  # re-exported: the edge builds them here

_log = logging.getLogger("billing_core.domain.credentials")


@dataclass(frozen=True, slots=True)
class AuthorizeCall:
    nas_key: str
    caller: CallerFacts  # a Digest request names its account by the digest user name
    password: bytes | None  # PAP, decrypted
    chap: Chap | None
    identifiers: tuple[str, ...]
    arrived: datetime
    acct_session_id: str = ""
    digest: Digest | None = None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a login account's credentials were refused, for the metric and the log."""

    method: str  # pap | chap | digest | none
    reason: FailureReason


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    decision: Decision
    client: Client | None = None
    account: Account | None = None
    number: str | None = None
    failure: AuthFailure | None = None
    # the live state must be asked (a failure to record, or whether a verified account is
    # locked out) before this outcome stands: see ``settle_lockout``
    lockout: LockoutProbe | None = None
    method: str | None = None  # the credentials' method, when the account has a password

    def settle_lockout(self, locked: bool) -> AuthOutcome:
        """The outcome once the live state answered the lockout probe."""
        if not locked:
            return replace(self, lockout=None)
        method = self.method or "none"
        return replace(
            self,
            decision=Reject(RejectReason.LOCKED_OUT),
            failure=AuthFailure(method, "locked_out"),
            lockout=None,
        )


@dataclass(frozen=True, slots=True)
class PendingHold:
    """An authorization that passed every check but the live state's."""

    hold: HoldRequest
    client: Client
    account: Account
    number: str | None
    method: str | None = None

    def finish(self, decision: Decision) -> AuthOutcome:
        failure = None
        if isinstance(decision, Reject) and decision.reason is RejectReason.LOCKED_OUT:
            failure = AuthFailure(self.method or "none", "locked_out")
        return AuthOutcome(
            decision, self.client, self.account, self.number, failure, None, self.method
        )


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


class NoSecretKey:
    """The cipher when no server key is configured: no secret can be used."""

    def encrypt(self, secret: bytes) -> str:
        raise SecretUnavailable("no server key (security.secrets_key_file or secrets_key_env)")

    def decrypt(self, token: str) -> bytes:
        raise SecretUnavailable("no server key (security.secrets_key_file or secrets_key_env)")


def _log_unusable(account: Account, problem: str) -> None:
    _log.error("account %s: secret unusable: %s", account.name, problem)


class SecretCache:
    """Decrypted account secrets, in memory only, never written anywhere.

    An entry is kept per account with the secret's version, which moves when the secret
    itself changes and not when ``billingctl security rotate-key`` re-encrypts it: a running
    daemon keeps verifying callers between a rotation and the SIGHUP that gives it the new
    key. A secret that cannot be decrypted is logged once (per account and version) and
    refused until the key changes."""

    def __init__(
        self,
        cipher: SecretCipher,
        on_unusable: Callable[[Account, str], None] | None = None,
    ) -> None:
        self._cipher = cipher
        self._plain: dict[int, tuple[int, bytes | None]] = {}
        self._on_unusable = on_unusable or _log_unusable

    def set_cipher(self, cipher: SecretCipher) -> None:
        """A new server key (SIGHUP): secrets already in memory stay; failed ones retry."""
        self._cipher = cipher
        self._plain = {k: v for k, v in self._plain.items() if v[1] is not None}

    def secret(self, account: Account) -> bytes | None:
        entry = self._plain.get(account.id)
        if entry is not None and entry[0] == account.secret_version:
            return entry[1]
        plain: bytes | None = None
        if account.secret_enc is not None:
            try:
                plain = self._cipher.decrypt(account.secret_enc)
            except SecretUnavailable as exc:
                self._on_unusable(account, str(exc))
        self._plain[account.id] = (account.secret_version, plain)
        return plain


def credentials_method(request: AuthorizeCall) -> str | None:
    """The method of the request's credentials: Digest, else CHAP, else PAP; None without."""
    if request.digest is not None:
        return "digest"
    if request.chap is not None:
        return "chap"
    if request.password is not None:
        return "pap"
    return None


def check_credentials(
    account: Account, request: AuthorizeCall, secrets: SecretCache
) -> tuple[str, FailureReason | None]:
    """(method, None) when the credentials prove the caller, else (method, why not)."""
    method = credentials_method(request)
    if method is None:
        return "none", "missing"
    if method not in account.auth_methods:
        return method, "not_allowed"
    if account.secret_enc is not None:
        secret = secrets.secret(account)
        if secret is None:
            return method, "unusable"
        if method == "pap":
            assert request.password is not None
            ok = pap_ok(secret, request.password)
        elif method == "chap":
            assert request.chap is not None
            ok = chap_ok(secret, request.chap)
        else:
            assert request.digest is not None
            ok = digest_ok(secret, request.digest)
        return method, None if ok else "wrong"
    if method != "pap" or account.password_hash is None:
        return method, "unusable"  # a hash verifies PAP only
    assert request.password is not None
    return method, None if check_password(account.password_hash, request.password) else "wrong"


class LiveCalledDirectly:
    """The live state's authorization steps called as they are, on the caller's thread: for
    a caller with no event loop of its own to keep free (a test, a tool). The daemon gives
    ``AuthorizationService`` its own way (``on_loop``)."""

    def __init__(self, live: LiveState) -> None:
        self._live = live

    async def authorize(self, request: HoldRequest) -> Decision:
        return self._live.authorize(request)

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        return self._live.auth_lockout(probe)


class AuthorizationService:
    """Authorize a call. ``authorize`` is the daemon's one call: the checks that need only
    memory (``prepare``, on the event loop), then the live state's check-and-hold, or its
    lockout question. ``billingctl explain`` and the trace run ``prepare`` alone."""

    def __init__(
        self,
        catalog: Callable[[], Catalog],
        live: LiveState,
        *,
        max_call_length: int,
        auth_hold_seconds: int,
        secrets: SecretCache | None = None,
        max_auth_failures: int = 10,
        auth_lockout_seconds: int = 60,
        on_loop: LiveAuthorizer | None = None,
    ) -> None:
        """``on_loop``: how the daemon's event loop reaches the live state's authorization
        steps (Redis's pipelined connection, or database threads); without it, ``live``'s
        own calls, made directly."""
        self._catalog = catalog
        self.live = on_loop or LiveCalledDirectly(live)
        self._max_call_length = max_call_length
        self._auth_hold_seconds = auth_hold_seconds
        self.secrets = secrets if secrets is not None else SecretCache(NoSecretKey())
        self.max_auth_failures = max_auth_failures
        self.auth_lockout_seconds = auth_lockout_seconds

    async def authorize(self, request: AuthorizeCall) -> AuthOutcome:
        """The decision on ``request``; ``Unavailable`` when the live state cannot answer."""
        prepared = self.prepare(request)
        if isinstance(prepared, PendingHold):
            return prepared.finish(await self.live.authorize(prepared.hold))
        if prepared.lockout is None:
            return prepared
        # a failure to count, or a verified account's rare reject before the live state
        return prepared.settle_lockout(await self.live.auth_lockout(prepared.lockout))

    def _probe(
        self, client: Client, account: Account, now: datetime, *, failed: bool
    ) -> LockoutProbe:
        return LockoutProbe(
            client_id=client.id,
            account_id=account.id,
            now=now,
            failed=failed,
            max_failures=self.max_auth_failures,
            lockout_seconds=self.auth_lockout_seconds,
        )

    def prepare(
        self, request: AuthorizeCall, *, verify_password: bool = True
    ) -> AuthOutcome | PendingHold:
        """Everything before the live state, from memory: an outcome already, or the
        check-and-hold to run. ``verify_password=False``: the password step passes
        (``billingctl explain``)."""
        catalog = self._catalog()
        identified = catalog.accounts.identify(request.caller)
        if identified is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        account = identified.account
        client = catalog.clients.get(account.client_id)
        if client is None:
            return AuthOutcome(Reject(RejectReason.UNKNOWN_ACCOUNT))
        method: str | None = None
        if account.ident == "login" and account.has_password and verify_password:
            method, problem = check_credentials(account, request, self.secrets)
            if problem is not None:
                return self._refused_credentials(client, account, request, method, problem)
        refused = check_client(client)
        if refused is not None:
            return self._verified(AuthOutcome(refused, client, account, method=method), request)
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
                lock_check=method is not None,
            )
            return PendingHold(hold, client, account, None, method)
        digits = number if number.isdigit() and number.isascii() else digits_only(number)
        table = catalog.rate_tables.get(client.rate_table_id) if client.rate_table_id else None
        rate = table.lookup(digits, request.arrived) if table is not None else None
        if rate is None:
            return self._verified(
                AuthOutcome(Reject(RejectReason.NO_RATE), client, account, digits, method=method),
                request,
            )
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
            lock_check=method is not None,
        )
        return PendingHold(hold, client, account, digits, method)

    def _refused_credentials(
        self,
        client: Client,
        account: Account,
        request: AuthorizeCall,
        method: str,
        problem: FailureReason,
    ) -> AuthOutcome:
        """Code 2, with the lockout probe: only wrong passwords count toward a lockout; a
        locked account is refused as such whatever it sent."""
        return AuthOutcome(
            Reject(RejectReason.BAD_PASSWORD),
            client,
            account,
            failure=AuthFailure(method, problem),
            lockout=self._probe(client, account, request.arrived, failed=problem == "wrong"),
            method=method,
        )

    def _verified(self, outcome: AuthOutcome, request: AuthorizeCall) -> AuthOutcome:
        """A reject before the live state for an account whose password was checked: it
        still has to say "locked out" when the account is (rare path: one more question)."""
        if outcome.method is None or outcome.client is None or outcome.account is None:
            return outcome
        probe = self._probe(outcome.client, outcome.account, request.arrived, failed=False)
        return replace(outcome, lockout=probe)
