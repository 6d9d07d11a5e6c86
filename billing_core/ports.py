"""Ports: what the services need from the outside world, as typing.Protocols."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple, Protocol

from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Client
from billing_core.domain.policy import Decision, GrantTerms
from billing_core.domain.rating import RateTableIndex


@dataclass(frozen=True, slots=True)
class Catalog:
    """An in-memory snapshot of what authorization reads: no SQL on the hot path."""

    version: int
    clients: Mapping[int, Client]
    accounts: AccountIndex
    rate_tables: Mapping[int, RateTableIndex]
    max_call_length: int | None  # the database setting; None: the config file's value
    rate_versions: Mapping[int, int] = field(default_factory=dict)  # table id -> rates version


class CatalogSource(Protocol):
    def catalog_version(self) -> int: ...

    def load_catalog(self, previous: Catalog | None = None) -> Catalog:
        """A new catalog; the rate indexes of ``previous`` whose table did not change are
        reused instead of rebuilt."""
        ...


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
    uid: str = ""  # the new call's id in the live state
    lock_check: bool = False  # a login account with a password: refuse it while locked out


@dataclass(frozen=True, slots=True)
class LockoutProbe:
    """Guessing is slow (README: Credentials): ``failed`` records a wrong password for the
    account (``max_failures`` within ``window_seconds`` lock it for ``lockout_seconds``);
    without ``failed`` the probe only asks whether the account is locked out."""

    client_id: int
    account_id: int
    now: datetime
    failed: bool
    max_failures: int
    lockout_seconds: int
    window_seconds: int = 60


@dataclass(frozen=True, slots=True)
class HeldCall:
    """A hold as the live state keeps it, for accounting that arrives after authorization."""

    uid: str
    client_id: int
    account_id: int
    called: str
    granted_seconds: int
    hold: Decimal
    authorized_at: datetime


@dataclass(frozen=True, slots=True)
class Activated:
    """The call's accounting is recorded: it is active and keeps (or regains) its hold."""

    client_id: int
    uid: str
    hold: Decimal
    granted_seconds: int | None
    account_id: int | None
    called: str
    nas_key: str
    # the identifiers the call is known by: an authorization held under another id (its
    # accounting could not find it: Redis failed over or migrated meanwhile) is adopted
    identifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rehold:
    """A zero-second leg ended: the call is held again until ``expires`` for another attempt."""

    client_id: int
    uid: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class Released:
    client_id: int
    uid: str
    # the call's NAS key, identifiers, account and number: an authorization of the same call
    # held under another id (its accounting could not find it) is released with it
    nas_key: str = ""
    identifiers: tuple[str, ...] = ()
    account_id: int | None = None
    called: str = ""


@dataclass(frozen=True, slots=True)
class BalanceMoved:
    client_id: int
    amount: Decimal  # negative for a charge


@dataclass(frozen=True, slots=True)
class NasReleased:
    """Accounting-On/Off: release every hold of the NAS key authorized before ``before``."""

    nas_key: str
    before: datetime


LiveEffect = Activated | Rehold | Released | BalanceMoved | NasReleased


@dataclass(frozen=True, slots=True)
class LiveView:
    balance: Decimal
    held: Decimal
    active_calls: int


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call whose accounting the database recorded, as a live state kept outside the
    database loads it (``LiveTruth.live_client``); how it is stored there is that adapter's
    business."""

    uid: str  # its id in the live state (``domain.calls.live_uid``)
    nas_key: str
    identifiers: tuple[str, ...]
    state: str  # domain.calls.CallState: held | active
    hold: Decimal
    hold_expires_at: datetime | None
    account_id: int | None
    called: str
    authorized_at: datetime | None
    granted_seconds: int | None


class ClientTruth(NamedTuple):
    """One client's live state as the database knows it, as of one moment."""

    seq: int  # the client's live sequence
    balance: Decimal  # the ledger's sum
    calls: list[LiveCall]


class LiveState(Protocol):
    """Live balances, holds and calls per client."""

    def authorize(self, request: HoldRequest) -> Decision:
        """Run ``authorization.decide`` on the client's live state and, for a grant, hold it,
        in one atomic step."""
        ...

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        """For each (NAS key, identifiers), the hold an authorization left, if the live state
        keeps holds outside the database (None otherwise)."""
        ...

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        """Bring the live state in line with committed accounting or payments. ``seqs`` is
        each client's live sequence after the committed work (``AccountingTx.live_seqs``):
        a live state kept outside the database applies a client's effects only on top of
        the sequence before it, and otherwise reloads that client from the database."""
        ...

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, LiveView]: ...

    def reachable(self) -> bool: ...

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        """True when the account is locked out (then nothing is recorded: the request is
        refused without a check); else record the failure when ``probe.failed`` (which may
        start a lockout for the next requests) and answer False. Shared by every node that
        shares the live state."""
        ...


class LiveAuthorizer(Protocol):
    """The live state's two authorization steps, for the event loop: Redis answers them on
    its own pipelined connection, the database's live state in a database thread. An
    outage raises ``billing_core.errors.Unavailable``."""

    async def authorize(self, request: HoldRequest) -> Decision:
        """``LiveState.authorize``."""
        ...

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        """``LiveState.auth_lockout``."""
        ...


class SecretUnavailable(Exception):
    """A stored secret cannot be used: no server key, or not decryptable with it."""


class SecretCipher(Protocol):
    """Authenticated encryption of account secrets under the server key."""

    def encrypt(self, secret: bytes) -> str: ...

    def decrypt(self, token: str) -> bytes:
        """The secret; raises ``SecretUnavailable`` for a wrong key or a damaged token."""
        ...


@dataclass(frozen=True, slots=True)
class CallRecord:
    id: int
    client_id: int
    account_id: int | None
    nas_key: str
    acct_session_id: str
    conf_id: str
    origin: str
    called: str
    state: str  # held | active
    granted_seconds: int | None
    hold: Decimal
    authorized_at: datetime | None
    started_at: datetime | None
    last_seen_at: datetime | None
    max_session_time: int
    accounted: bool
    epoch: int
    live_uid: str
    keys: frozenset[str] = frozenset()  # the identifiers the call is known by
    tags: str = ""  # the dialog's tags, as in LegIdentity


@dataclass(frozen=True, slots=True)
class LegIdentity:
    """(NAS key, epoch, Acct-Session-Id, h323-conf-id, h323-call-origin, and the unordered
    pair of Sip-From-Tag and Sip-To-Tag when the NAS sends them)."""

    nas_key: str
    epoch: int
    acct_session_id: str
    conf_id: str
    origin: str
    tags: str = ""


@dataclass(frozen=True, slots=True)
class StoredLeg:
    """A CDR already stored under a leg identity."""

    id: int
    client_id: int
    duration: int
    cost: Decimal
    closed_by: str
    corrected: bool
    called: str
    rated_at: datetime
    call_live_uid: str
    stopped_at: datetime | None = None
    once: str = ""  # as ClosedLeg.once


@dataclass(frozen=True, slots=True)
class ClosedLeg:
    """A CDR to store; its identity plus ``once`` is unique in the database."""

    identity: LegIdentity
    client_id: int
    account_id: int | None
    call_id: int | None
    called: str
    duration: int
    billed_duration: int
    cost: Decimal
    rate_code: str | None
    rated_at: datetime
    started_at: datetime | None
    stopped_at: datetime
    closed_by: str
    # which Stop of the identity this is: the leg's Start ("" without one), then the duration
    # when the Stop carried its own, else "t" (timed from the Start: once per Start)
    once: str = ""


class LedgerConflict(Exception):
    """Another transaction stored the same leg first, or the database gave up one of two
    transactions waiting on each other: nothing was written, and the work can run again."""


class AccountingTx(Protocol):
    """One database transaction of accounting work; committed when the block exits cleanly.
    Writes may be kept until the end: a ``LedgerConflict`` raised then rolls it all back."""

    def record_events(self, events: Sequence[AccountingEvent]) -> None: ...

    def prefetch(self, events: Sequence[AccountingEvent]) -> None:
        """Read ahead what the packets will look up (an optimisation: any lookup works
        without it)."""
        ...

    def current_epoch(self, nas_key: str) -> tuple[int, datetime | None]:
        """The NAS key's epoch and when (event time) it began; (0, None) before any On/Off."""
        ...

    def new_epoch(self, nas_key: str, at: datetime) -> int: ...

    def find_call(self, nas_key: str, identifiers: tuple[str, ...]) -> CallRecord | None: ...

    def calls_of_nas(self, nas_key: str) -> list[CallRecord]: ...

    def stale_calls(
        self, now: datetime, grace_seconds: int, default_grant: int
    ) -> list[CallRecord]: ...

    def purge_lapsed(self, before: datetime) -> int:
        """Delete unaccounted held calls whose hold lapsed before ``before``."""
        ...

    def create_call(
        self,
        *,
        client_id: int,
        account_id: int | None,
        nas_key: str,
        epoch: int,
        acct_session_id: str,
        conf_id: str,
        origin: str,
        called: str,
        identifiers: tuple[str, ...],
        state: str,
        hold: Decimal,
        granted_seconds: int | None,
        authorized_at: datetime | None,
        started_at: datetime | None,
        seen_at: datetime,
        live_uid: str,
        max_session_time: int = 0,
        tags: str = "",
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
        accounted: bool | None = None,
        epoch: int | None = None,
    ) -> None: ...

    def link_leg(self, call: CallRecord, event: AccountingEvent) -> None:
        """Add a leg's identifiers to its call; the first billable leg names the call."""
        ...

    def find_legs(self, identity: LegIdentity) -> list[StoredLeg]: ...

    def store_leg(self, leg: ClosedLeg) -> int | None:
        """Insert the CDR; None when an equal leg (identity and duration) is already stored."""
        ...

    def correct_leg(
        self, cdr_id: int, *, duration: int, billed_duration: int, cost: Decimal, at: datetime
    ) -> None: ...

    def charge(self, client_id: int, amount: Decimal, cdr_id: int, note: str) -> None: ...

    def end_call(self, call_id: int) -> None: ...

    def touch_live(self, client_ids: Iterable[int]) -> None:
        """These clients' live state changes with this work: their live sequence moves."""
        ...

    @property
    def live_seqs(self) -> Mapping[int, int]:
        """After the work is written: each client's live sequence (clients whose balance
        moved or that were touched)."""

    def record_event(
        self,
        kind: str,
        *,
        client_id: int | None = None,
        nas_key: str | None = None,
        detail: Mapping[str, object] | None = None,
        dedupe: str | None = None,
    ) -> None:
        """An entry in the events log, written in this transaction (README: events)."""
        ...


class Ledger(Protocol):
    def accounting(self) -> AbstractContextManager[AccountingTx]: ...

    def reachable(self) -> bool: ...


# --- the daemon's background jobs (notifications, the mail queue, Disconnect-Requests) ---------
@dataclass(frozen=True, slots=True)
class WantedDisconnect:
    """A queued Disconnect-Request, claimed by this process."""

    id: int
    reason: str
    call_id: int
    client_id: int | None
    nas_key: str
    acct_session_id: str
    conf_id: str
    attributes: dict[str, list[str]]  # the call's last Accounting-Request, as received


class NotificationLog(Protocol):
    """The notification state and the events log, as the notification jobs use them."""

    def clients_with_notifications(self) -> set[int]: ...

    def check(self, views: Mapping[int, LiveView], *, mail_enabled: bool) -> Sequence[object]:
        """Move the clients' notification state; the notifications that fired."""
        ...

    def events_written_since(
        self, source: str, after_id: int | None
    ) -> tuple[dict[str, int], int]: ...


class Outbox(Protocol):
    """The mail queue's sender: the due mail sent, counted by outcome."""

    def deliver_due(self, now: datetime) -> dict[str, int]: ...


class DisconnectQueue(Protocol):
    """Calls to cut: queued by a rule (past their grant), claimed by one sender, answered."""

    def requeue_stuck(self, before: datetime) -> int: ...

    def queue_overruns(self, now: datetime, grace_seconds: int) -> int: ...

    def claim(self, now: datetime) -> list[WantedDisconnect]: ...

    def done(
        self,
        wanted: WantedDisconnect,
        result: str,
        now: datetime,
        *,
        error_cause: int | None = None,
        nas_name: str = "",
    ) -> None: ...
