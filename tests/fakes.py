"""In-memory fakes of the ports the services use: dict-backed, small, obviously right.

``FakeLedger`` is the database's truth: calls in progress, CDRs, ledger rows, NAS epochs,
the events log. The live state comes in the two forms the daemon runs with: ``FakeLive``
keeps balances, holds and calls apart from the ledger, changed only by the effects the
service hands it after a commit (Redis); ``FakeEmbeddedLive`` is the ledger itself, a hold
being a calls row (no Redis, the embedded default). Where the real adapter's behaviour is
a rule of its own (a unique index, an epoch counter, the order of a lookup), the fake
models that rule in a few lines and its comment names the adapter code it stands for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.calls import counts
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Account, Client
from billing_core.domain.money import ZERO
from billing_core.domain.policy import Accept, Decision, LiveSnapshot, decide
from billing_core.domain.rating import Rate, RateTableIndex
from billing_core.ports import (
    AccountingTx,
    Activated,
    BalanceMoved,
    CallRecord,
    Catalog,
    ClosedLeg,
    HeldCall,
    HoldRequest,
    Ledger,
    LedgerConflict,
    LegIdentity,
    LiveEffect,
    LiveState,
    LiveView,
    LockoutProbe,
    NasReleased,
    Rehold,
    Released,
    StoredLeg,
)

# --- the catalog: the real domain objects, built from plain values -------------------------


def catalog(
    clients: Iterable[Client],
    accounts: Iterable[Account],
    rate_tables: Mapping[int, Iterable[Rate]],
    *,
    max_call_length: int | None = 3600,
) -> Catalog:
    return Catalog(
        version=1,
        clients={c.id: c for c in clients},
        accounts=AccountIndex(accounts),
        rate_tables={tid: RateTableIndex(rates) for tid, rates in rate_tables.items()},
        max_call_length=max_call_length,
    )


# --- the ledger ------------------------------------------------------------------------------


@dataclass
class Cdr:
    """A row of ``cdrs``: the leg as stored, and what a correction changed."""

    id: int
    leg: ClosedLeg
    duration: int
    billed_duration: int
    cost: Decimal
    corrected_at: datetime | None = None

    @property
    def unique_key(self) -> tuple[LegIdentity, str]:
        # uq_cdrs_leg_once (models.CdrRow): nas_key, epoch, acct_session_id, conf_id,
        # origin, tags, once
        return (self.leg.identity, self.leg.once)


@dataclass(frozen=True)
class Charge:
    """A row of ``transactions`` of kind call: ``amount`` negative for a charge."""

    client_id: int
    amount: Decimal
    cdr_id: int
    note: str


@dataclass
class LedgerState:
    """The database's tables, as the fake keeps them."""

    epochs: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    calls: dict[int, CallRecord] = field(default_factory=dict)
    hold_expires: dict[int, datetime | None] = field(default_factory=dict)
    cdrs: dict[int, Cdr] = field(default_factory=dict)
    charges: list[Charge] = field(default_factory=list)
    packets: list[AccountingEvent] = field(default_factory=list)  # acct_events
    events: list[tuple[str, int | None, str | None, dict[str, object]]] = field(
        default_factory=list
    )
    dedupes: set[str] = field(default_factory=set)
    seqs: dict[int, int] = field(default_factory=dict)  # live_balances.seq per client
    next_call_id: int = 1
    next_cdr_id: int = 1


class FakeAccountingTx:
    """AccountingTx on a private copy of the ledger's state, swapped in at commit."""

    def __init__(self, state: LedgerState) -> None:
        self.s = state
        self._moves: dict[int, Decimal] = {}
        self._touched: set[int] = set()
        self._seqs: dict[int, int] = {}

    # --- reads -----------------------------------------------------------------------------
    def record_events(self, events: Sequence[AccountingEvent]) -> None:
        self.s.packets.extend(events)

    def prefetch(self, events: Sequence[AccountingEvent]) -> None:
        """An optimisation of the SQL adapter: nothing to read ahead here."""

    def current_epoch(self, nas_key: str) -> tuple[int, datetime | None]:
        # nas_epochs: no row means epoch 0, never changed
        return self.s.epochs.get(nas_key, (0, None))

    def find_call(self, nas_key: str, identifiers: tuple[str, ...]) -> CallRecord | None:
        # call_keys (nas_key, key) -> calls: any identifier matches; the newest call wins
        # (SqlAccountingTx.find_call takes max(id) of the matches)
        found = [
            c for c in self.s.calls.values() if c.nas_key == nas_key and c.keys & set(identifiers)
        ]
        return max(found, key=lambda c: c.id) if found else None

    def calls_of_nas(self, nas_key: str) -> list[CallRecord]:
        return sorted((c for c in self.s.calls.values() if c.nas_key == nas_key), key=_by_id)

    def stale_calls(
        self, now: datetime, grace_seconds: int, default_grant: int
    ) -> list[CallRecord]:
        # SqlAccountingTx.stale_calls: accounted, active, silent for its grant (the cap
        # without one) plus the grace
        return [
            c
            for c in sorted(self.s.calls.values(), key=_by_id)
            if c.accounted
            and c.state == "active"
            and c.last_seen_at is not None
            and c.last_seen_at
            + timedelta(seconds=(c.granted_seconds or default_grant) + grace_seconds)
            < now
        ]

    def purge_lapsed(self, before: datetime) -> int:
        lapsed = [
            cid
            for cid, c in self.s.calls.items()
            if not c.accounted
            and c.state == "held"
            and (expires := self.s.hold_expires.get(cid)) is not None
            and expires < before
        ]
        for cid in lapsed:
            self.end_call(cid)
        return len(lapsed)

    def find_legs(self, identity: LegIdentity) -> list[StoredLeg]:
        # the CDRs under the identity in id order, each with its call's live uid when the
        # call is still there (the SQL joins calls: coalesce(c.live_uid, ''))
        out = []
        for cdr in sorted(self.s.cdrs.values(), key=lambda d: d.id):
            if cdr.leg.identity != identity:
                continue
            call = self.s.calls.get(cdr.leg.call_id) if cdr.leg.call_id is not None else None
            out.append(
                StoredLeg(
                    id=cdr.id,
                    client_id=cdr.leg.client_id,
                    duration=cdr.duration,
                    cost=cdr.cost,
                    closed_by=cdr.leg.closed_by,
                    corrected=cdr.corrected_at is not None,
                    called=cdr.leg.called,
                    rated_at=cdr.leg.rated_at,
                    call_live_uid=call.live_uid if call is not None else "",
                    stopped_at=cdr.leg.stopped_at,
                    once=cdr.leg.once,
                )
            )
        return out

    # --- writes ------------------------------------------------------------------------------
    def new_epoch(self, nas_key: str, at: datetime) -> int:
        # nas_epochs: one counter per NAS key, moved by every Accounting-On/Off
        epoch = self.current_epoch(nas_key)[0] + 1
        self.s.epochs[nas_key] = (epoch, at)
        return epoch

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
    ) -> CallRecord:
        call = CallRecord(
            id=self.s.next_call_id,
            client_id=client_id,
            account_id=account_id,
            nas_key=nas_key,
            acct_session_id=acct_session_id,
            conf_id=conf_id,
            origin=origin,
            called=called,
            state=state,
            granted_seconds=granted_seconds,
            hold=hold,
            authorized_at=authorized_at,
            started_at=started_at,
            last_seen_at=seen_at,
            max_session_time=max_session_time,
            accounted=True,
            epoch=epoch,
            live_uid=live_uid,
            keys=frozenset(identifiers),
            tags=tags,
        )
        self.s.next_call_id += 1
        self.s.calls[call.id] = call
        self.s.hold_expires[call.id] = None
        return call

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
    ) -> None:
        # None leaves a column as it is (SqlAccountingTx.update_call)
        call = self.s.calls[call_id]
        self.s.calls[call_id] = replace(
            call,
            state=call.state if state is None else state,
            started_at=call.started_at if started_at is None else started_at,
            max_session_time=call.max_session_time
            if max_session_time is None
            else max_session_time,
            last_seen_at=call.last_seen_at if last_seen_at is None else last_seen_at,
            accounted=call.accounted if accounted is None else accounted,
            epoch=call.epoch if epoch is None else epoch,
        )
        if hold_expires_at is not None:
            self.s.hold_expires[call_id] = hold_expires_at

    def link_leg(self, call: CallRecord, event: AccountingEvent) -> None:
        # SqlAccountingTx.link_leg: the leg's identifiers join the call's keys; the first
        # billable leg names the call; an authorization's call takes the dialog's tags
        known = self.s.calls[call.id]
        known = replace(known, keys=known.keys | set(event.identifiers()))
        if not known.acct_session_id:
            known = replace(
                known,
                acct_session_id=event.acct_session_id,
                conf_id=event.conf_id or "",
                origin=event.origin or "",
                tags=event.tags,
            )
        elif event.tags and not known.tags and known.acct_session_id == event.acct_session_id:
            known = replace(known, tags=event.tags)
        self.s.calls[call.id] = known

    def store_leg(self, leg: ClosedLeg) -> int | None:
        # uq_cdrs_leg_once: a second insert of the same (identity, once) is a no-op (None)
        if any(cdr.unique_key == (leg.identity, leg.once) for cdr in self.s.cdrs.values()):
            return None
        cdr = Cdr(self.s.next_cdr_id, leg, leg.duration, leg.billed_duration, leg.cost)
        self.s.next_cdr_id += 1
        self.s.cdrs[cdr.id] = cdr
        return cdr.id

    def correct_leg(
        self, cdr_id: int, *, duration: int, billed_duration: int, cost: Decimal, at: datetime
    ) -> None:
        cdr = self.s.cdrs[cdr_id]
        cdr.duration, cdr.billed_duration, cdr.cost, cdr.corrected_at = (
            duration,
            billed_duration,
            cost,
            at,
        )

    def charge(self, client_id: int, amount: Decimal, cdr_id: int, note: str) -> None:
        self.s.charges.append(Charge(client_id, amount, cdr_id, note))
        self._moves[client_id] = self._moves.get(client_id, ZERO) + amount

    def end_call(self, call_id: int) -> None:
        # ended calls are deleted from ``calls`` (their CDRs keep the call id)
        self.s.calls.pop(call_id, None)
        self.s.hold_expires.pop(call_id, None)

    def touch_live(self, client_ids: Iterable[int]) -> None:
        self._touched.update(client_ids)

    @property
    def live_seqs(self) -> Mapping[int, int]:
        return self._seqs

    def record_event(
        self,
        kind: str,
        *,
        client_id: int | None = None,
        nas_key: str | None = None,
        detail: Mapping[str, object] | None = None,
        dedupe: str | None = None,
    ) -> None:
        # events.dedupe is unique: an event written once per cause is skipped the second time
        if dedupe is not None:
            if dedupe in self.s.dedupes:
                return
            self.s.dedupes.add(dedupe)
        self.s.events.append((kind, client_id, nas_key, dict(detail or {})))

    def finish(self) -> None:
        """SqlAccountingTx.flush's move_balances: every client whose balance moved (or that
        was touched) moves its live sequence by one, in this transaction."""
        for client_id in sorted(
            {c for c, a in self._moves.items() if a} | self._touched,
        ):
            self.s.seqs[client_id] = self.s.seqs.get(client_id, 0) + 1
            self._seqs[client_id] = self.s.seqs[client_id]


def _by_id(call: CallRecord) -> int:
    return call.id


class FakeLedger:
    """Ledger: each ``accounting()`` block works on a copy of the state and commits it by
    swapping it in. A transaction that another committed under it is a ``LedgerConflict``
    and changes nothing (first committer wins: stands for the unique leg index and
    PostgreSQL's serialization failures; stricter than the real adapter, which conflicts
    only on the same leg, so a batch may only be rerun more often, never charged twice)."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.commits = 0  # transactions committed
        self.conflicts = 0  # transactions rolled back for a LedgerConflict
        # run inside a transaction just before it commits (another worker's commit)
        self.before_commit: list[Callable[[], object]] = []
        self._racing = False

    @contextmanager
    def accounting(self) -> Iterator[FakeAccountingTx]:
        began = self.commits
        tx = FakeAccountingTx(copy.deepcopy(self.state))
        yield tx  # an exception here leaves self.state as it was: rolled back
        if self.before_commit and not self._racing:
            self._racing = True  # the other worker's own commit runs no hook
            try:
                self.before_commit.pop(0)()
            finally:
                self._racing = False
        if self.commits != began:
            self.conflicts += 1
            raise LedgerConflict("another transaction committed first")
        tx.finish()
        self.state = tx.s
        self.commits += 1

    def reachable(self) -> bool:
        return True

    # --- what the tests read -------------------------------------------------------------------
    def balance(self, client_id: int) -> Decimal:
        """The client's ledger sum of call charges (payments are kept by the live state)."""
        return sum((c.amount for c in self.state.charges if c.client_id == client_id), ZERO)

    def cdrs(self) -> list[Cdr]:
        return sorted(self.state.cdrs.values(), key=lambda d: d.id)

    def calls(self) -> list[CallRecord]:
        return sorted(self.state.calls.values(), key=_by_id)

    def event_kinds(self) -> list[str]:
        return [kind for kind, *_ in self.state.events]


# --- the live state --------------------------------------------------------------------------


@dataclass
class LiveCall:
    """One record of ``{c:N}:calls`` in redis_live (s, h, e, a, c, n, t, g, i, x)."""

    client_id: int
    state: str  # held | active
    hold: Decimal
    expires: datetime | None
    account_id: int | None
    called: str
    nas_key: str
    authorized_at: datetime | None
    granted_seconds: int | None
    identifiers: tuple[str, ...]
    accounted: bool = False

    def counts(self, now: datetime) -> bool:
        """Active, or held and not lapsed (the Lua ``counts``)."""
        return self.state == "active" or (self.expires is not None and self.expires > now)


class FakeLive:
    """LiveState as redis_live keeps it: balances, calls by uid, and a hold index by
    (NAS key, identifier); effects applied as its APPLY script does."""

    def __init__(self, balances: Mapping[int, Decimal] | None = None) -> None:
        self.balances: dict[int, Decimal] = dict(balances or {})
        self.calls: dict[str, LiveCall] = {}
        self.index: dict[tuple[str, str], str] = {}  # hold:{nas}:<identifier> -> uid
        self.applied: list[LiveEffect] = []
        self.seqs: dict[int, int] = {}  # {c:N}:seq, the last live sequence applied
        self.gaps: list[int] = []  # clients whose effects did not follow their last sequence
        self.unsequenced: list[int] = []  # clients whose effects came with no sequence

    def authorize(self, request: HoldRequest) -> Decision:
        """The AUTHORIZE script: ``decide`` on the client's live state, then the hold."""
        client_id = request.terms.client.id
        own = next(
            (
                uid
                for ident in request.identifiers
                if (uid := self.index.get((request.nas_key, ident))) in self.calls
                and self.calls[uid].account_id == request.account_id
                and self.calls[uid].called == request.called
            ),
            None,
        )
        others = [
            c
            for uid, c in self.calls.items()
            if c.client_id == client_id and uid != own and c.counts(request.now)
        ]
        snapshot = LiveSnapshot(
            self.balances.get(client_id, ZERO), sum((c.hold for c in others), ZERO), len(others)
        )
        decision = decide(request.terms, snapshot)
        if request.terms.rate is None or not isinstance(decision, Accept):
            return decision
        uid = own or request.uid
        previous = self.calls.get(uid)
        self.calls[uid] = LiveCall(
            client_id,
            previous.state if previous else "held",
            decision.hold,
            request.now + timedelta(seconds=request.hold_seconds),
            request.account_id,
            request.called,
            request.nas_key,
            previous.authorized_at if previous else request.now,
            decision.grant_seconds,
            request.identifiers,
            previous.accounted if previous else False,
        )
        for ident in request.identifiers:
            self.index[(request.nas_key, ident)] = uid
        return decision

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        # RedisLiveState.find_holds: the first identifier with an index entry names the call
        out: list[HeldCall | None] = []
        for nas_key, identifiers in keys:
            uids = [self.index[(nas_key, i)] for i in identifiers if (nas_key, i) in self.index]
            call = self.calls.get(uids[0]) if uids else None
            if call is None or call.account_id is None:
                out.append(None)
                continue
            out.append(
                HeldCall(
                    uid=uids[0],
                    client_id=call.client_id,
                    account_id=call.account_id,
                    called=call.called,
                    granted_seconds=call.granted_seconds or 0,
                    hold=call.hold,
                    authorized_at=call.authorized_at or datetime.fromtimestamp(0, UTC),
                )
            )
        return out

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        # the APPLY script, without its adoption of a hold kept under another uid (these
        # fakes always find the hold by its identifiers, so there is none to adopt)
        self.applied.extend(effects)
        for client_id in dict.fromkeys(
            e.client_id for e in effects if not isinstance(e, NasReleased)
        ):
            # a client's effects go on top of the sequence before theirs; otherwise the real
            # script answers 'gap' (or 'old') and the client is reloaded from the database
            seq = (seqs or {}).get(client_id)
            if seq is None:
                self.unsequenced.append(client_id)
            elif seq != self.seqs.get(client_id, 0) + 1:
                self.gaps.append(client_id)
            else:
                self.seqs[client_id] = seq
        for effect in effects:
            if isinstance(effect, BalanceMoved):
                self.balances[effect.client_id] = (
                    self.balances.get(effect.client_id, ZERO) + effect.amount
                )
            elif isinstance(effect, Activated):
                call = self.calls.get(effect.uid)
                if call is None:
                    call = self.calls[effect.uid] = LiveCall(
                        effect.client_id,
                        "active",
                        effect.hold,
                        None,
                        effect.account_id,
                        effect.called,
                        effect.nas_key,
                        None,
                        effect.granted_seconds,
                        effect.identifiers,
                    )
                    for ident in effect.identifiers:
                        self.index[(effect.nas_key, ident)] = effect.uid
                call.state, call.accounted = "active", True
            elif isinstance(effect, Rehold):
                if (held := self.calls.get(effect.uid)) is not None:
                    held.state, held.expires = "held", effect.expires
            elif isinstance(effect, Released):
                self._drop(effect.uid)
            elif isinstance(effect, NasReleased):
                # every call of the NAS authorized before the On/Off (never authorized: 0)
                for uid in [
                    uid
                    for uid, c in self.calls.items()
                    if c.nas_key == effect.nas_key
                    and (c.authorized_at is None or c.authorized_at < effect.before)
                ]:
                    self._drop(uid)

    def _drop(self, uid: str) -> None:
        call = self.calls.pop(uid, None)
        if call is not None:
            for ident in call.identifiers:
                if self.index.get((call.nas_key, ident)) == uid:
                    del self.index[(call.nas_key, ident)]

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, LiveView]:
        out = {}
        for cid in client_ids:
            mine = [c for c in self.calls.values() if c.client_id == cid]
            out[cid] = LiveView(
                self.balances.get(cid, ZERO),
                sum((c.hold for c in mine if c.counts(now)), ZERO),
                sum(1 for c in mine if c.state == "active"),
            )
        return out

    def reachable(self) -> bool:
        return True

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        """Not used by accounting; no account is ever locked out here."""
        return False


class FakeEmbeddedLive:
    """LiveState served by the database itself (SqlStore without Redis, the embedded
    default): a hold is a row of ``calls`` in the ledger (held, not accounted, epoch 0: what
    SqlStore.authorize inserts), found by accounting through ``find_call``; the balance is
    the ledger's; the effects were written by the accounting transaction, so ``apply`` only
    keeps them for the tests to read."""

    def __init__(self, ledger: FakeLedger, opening: Mapping[int, Decimal]) -> None:
        self.ledger = ledger
        self.opening = dict(opening)
        self.applied: list[LiveEffect] = []

    def _balance(self, client_id: int) -> Decimal:
        # live_balances.balance: the payments, moved by every ledger row in its transaction
        return self.opening.get(client_id, ZERO) + self.ledger.balance(client_id)

    def authorize(self, request: HoldRequest) -> Decision:
        client_id = request.terms.client.id
        with self.ledger.accounting() as tx:
            s = tx.s
            own = next(
                (
                    c
                    for c in sorted(s.calls.values(), key=_by_id)
                    if c.nas_key == request.nas_key
                    and c.keys & set(request.identifiers)
                    and c.account_id == request.account_id
                    and c.called == request.called
                ),
                None,
            )
            others = [
                c
                for c in s.calls.values()
                if c.client_id == client_id
                and (own is None or c.id != own.id)
                and counts(c.state, s.hold_expires.get(c.id), request.now)
            ]
            snapshot = LiveSnapshot(
                self._balance(client_id), sum((c.hold for c in others), ZERO), len(others)
            )
            decision = decide(request.terms, snapshot)
            if request.terms.rate is None:
                return decision
            if not isinstance(decision, Accept):
                if own is not None:  # st.delete_own
                    tx.end_call(own.id)
                return decision
            expires = request.now + timedelta(seconds=request.hold_seconds)
            if own is not None:  # st.update_own: the grant renewed, the call as it was
                s.calls[own.id] = replace(
                    own,
                    hold=decision.hold,
                    granted_seconds=decision.grant_seconds,
                    authorized_at=request.now,
                )
                s.hold_expires[own.id] = expires
                return decision
            call = CallRecord(  # st.insert_call
                id=s.next_call_id,
                client_id=client_id,
                account_id=request.account_id,
                nas_key=request.nas_key,
                acct_session_id=request.acct_session_id,
                conf_id="",
                origin="",
                called=request.called,
                state="held",
                granted_seconds=decision.grant_seconds,
                hold=decision.hold,
                authorized_at=request.now,
                started_at=None,
                last_seen_at=None,
                max_session_time=0,
                accounted=False,
                epoch=0,
                live_uid=request.uid,
                keys=frozenset(request.identifiers),
            )
            s.next_call_id += 1
            s.calls[call.id] = call
            s.hold_expires[call.id] = expires
        return decision

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        return [None] * len(keys)  # the holds are calls rows: find_call finds them

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        self.applied.extend(effects)

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, LiveView]:
        calls = self.ledger.state.calls.values()
        expires = self.ledger.state.hold_expires
        return {
            cid: LiveView(
                self._balance(cid),
                sum(
                    (
                        c.hold
                        for c in calls
                        if c.client_id == cid and counts(c.state, expires.get(c.id), now)
                    ),
                    ZERO,
                ),
                sum(1 for c in calls if c.client_id == cid and c.state == "active"),
            )
            for cid in client_ids
        }

    def reachable(self) -> bool:
        return True

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        """Not used by accounting; no account is ever locked out here."""
        return False


def _conforms(
    ledger: FakeLedger, tx: FakeAccountingTx, live: FakeLive, embedded: FakeEmbeddedLive
) -> tuple[Ledger, AccountingTx, LiveState, LiveState]:
    """mypy checks here that the fakes implement the ports' Protocols."""
    return ledger, tx, live, embedded
