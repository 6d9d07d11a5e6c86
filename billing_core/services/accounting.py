"""Accounting use cases (CONTRACT §3): record every packet, charge each billable leg once.

``record_many`` applies a batch of Accounting-Requests in one database transaction (a group
commit): each is answered only after that transaction commits. The effects on the live
state are returned and applied after the commit (the database is the truth; the live state
can always be rebuilt from it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing_core.domain.accounting_packets import (
    AccountingEvent,
    AcctStatus,
    rating_moment,
    stop_duration,
)
from billing_core.domain.calls import (
    CLOSED_BY_SERVER,
    ENDING,
    LEG_STATUSES,
    NAS_RESTARTS,
    CallMove,
    ClosedBy,
    late_epochs,
    leg_epoch,
    live_uid,
    mark_of,
    mark_start,
    once,
    start_mark,
    state_after,
)
from billing_core.domain.dialled import digits_only
from billing_core.domain.money import ZERO
from billing_core.domain.rating import Rate, billed, cost
from billing_core.ports import (
    AccountingTx,
    Activated,
    BalanceMoved,
    CallRecord,
    Catalog,
    ClosedLeg,
    HeldCall,
    Ledger,
    LedgerConflict,
    LegIdentity,
    LiveEffect,
    LiveState,
    NasReleased,
    Rehold,
    Released,
    StoredLeg,
)
from billing_core.services.ledger import follow_ledger

_ATTEMPTS = 3  # a batch conflicting with concurrent transactions is run again, twice at most


@dataclass(frozen=True, slots=True)
class AcctOutcome:
    # recorded | charged | corrected | duplicate | unknown_account | not_billable | ended | closed
    result: str
    client_id: int | None = None
    cost: Decimal | None = None
    duration: int | None = None
    collision: bool = False
    closed_calls: int = 0


@dataclass
class _Batch:
    effects: list[LiveEffect] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Owner:
    client_id: int
    account_id: int | None
    called: str
    hold: HeldCall | None


class AccountingService:
    def __init__(
        self,
        catalog: Callable[[], Catalog],
        ledger: Ledger,
        live: LiveState,
        *,
        auth_hold_seconds: int,
        max_acct_delay_seconds: int,
        stale_grace_seconds: int = 300,
        max_call_length: int = 7200,
        sequenced_live: bool = False,
    ) -> None:
        self._catalog = catalog
        self._ledger = ledger
        self._live = live
        self._hold_seconds = auth_hold_seconds
        self._max_delay = max_acct_delay_seconds
        self._stale_grace = stale_grace_seconds
        self._max_call_length = max_call_length
        # a live state kept outside the database (Redis) applies a client's effects in the
        # order of the client's live sequence, moved by the transaction that wrote them
        self._sequenced = sequenced_live

    # --- entry points ------------------------------------------------------------------------
    def record(self, event: AccountingEvent) -> AcctOutcome:
        return self.record_many([event])[0]

    def record_many(self, events: Sequence[AccountingEvent]) -> list[AcctOutcome]:
        """Record and apply ``events`` in one transaction; then update the live state.

        A conflict with a concurrent transaction (the same leg stored by another worker, a
        deadlock) rolls the whole batch back; it is run again and then sees the other's work.
        """
        for _ in range(_ATTEMPTS - 1):
            try:
                return self._record_many(events)
            except LedgerConflict:
                continue
        return self._record_many(events)  # the last attempt: a conflict now goes to the caller

    def _record_many(self, events: Sequence[AccountingEvent]) -> list[AcctOutcome]:
        holds = self._live.find_holds(
            [(e.nas_key, e.identifiers()) for e in events if e.status in LEG_STATUSES]
        )
        hold_of = iter(holds)
        batch = _Batch()
        outcomes: list[AcctOutcome] = []
        with self._ledger.accounting() as tx:
            tx.record_events(events)
            tx.prefetch(events)
            for event in events:
                held = next(hold_of) if event.status in LEG_STATUSES else None
                outcomes.append(self._apply(tx, event, held, batch))
            self._sequence(tx, batch)
        if batch.effects:
            follow_ledger(self._live, batch.effects, tx.live_seqs)
        return outcomes

    def _sequence(self, tx: AccountingTx, batch: _Batch) -> None:
        """Move the live sequence of every client the batch changes, in its transaction."""
        if self._sequenced and batch.effects:
            tx.touch_live(e.client_id for e in batch.effects if not isinstance(e, NasReleased))

    def close_stale(self, now: datetime) -> int:
        """Close calls silent for their grant plus stale_grace_seconds (closed_by stale), and
        forget authorizations whose hold lapsed long ago."""
        return self._close_stale(now)

    def _close_stale(self, now: datetime) -> int:
        batch = _Batch()
        with self._ledger.accounting() as tx:
            # a call without a grant (accounting with no authorization) is allowed the cap
            cap = self._catalog().max_call_length or self._max_call_length
            calls = tx.stale_calls(now, self._stale_grace, cap)
            for call in calls:
                self._close_call(tx, call, ClosedBy.STALE.value, now, batch)
                tx.record_event(
                    "call_stale",
                    client_id=call.client_id,
                    nas_key=call.nas_key,
                    detail={"acct_session_id": call.acct_session_id, "called": call.called},
                    dedupe=f"call_stale|{call.id}",
                )
            retention = cap + self._stale_grace + self._hold_seconds
            tx.purge_lapsed(now - timedelta(seconds=retention))
            self._sequence(tx, batch)
        if batch.effects:
            follow_ledger(self._live, batch.effects, tx.live_seqs)
        return len(calls)

    # --- one packet ------------------------------------------------------------------------------
    def _apply(
        self, tx: AccountingTx, event: AccountingEvent, held: HeldCall | None, batch: _Batch
    ) -> AcctOutcome:
        when = event.event_time(self._max_delay)
        closed_by = NAS_RESTARTS.get(event.status)
        if closed_by is not None:
            return self._close_nas(tx, event.nas_key, when, closed_by, batch)
        if event.status not in LEG_STATUSES:
            return AcctOutcome("recorded")
        if not event.billable:
            return AcctOutcome("not_billable")
        epoch, changed_at = tx.current_epoch(event.nas_key)
        identity = LegIdentity(
            event.nas_key,
            leg_epoch(epoch, changed_at, when),
            event.acct_session_id,
            event.conf_id or "",
            event.origin or "",
            event.tags,
        )
        if event.status in ENDING:
            if identity.epoch != epoch:
                identity = _late_leg(tx, identity)
            return self._stop(tx, event, identity, epoch, held, when, batch)
        return self._open(tx, event, identity, epoch, held, when, batch)

    def _open(
        self,
        tx: AccountingTx,
        event: AccountingEvent,
        identity: LegIdentity,
        epoch: int,
        held: HeldCall | None,
        when: datetime,
        batch: _Batch,
    ) -> AcctOutcome:
        """A Start or Interim-Update: the call becomes (or stays) active."""
        if identity.epoch != epoch:
            return AcctOutcome("recorded")  # a late Start or Interim of a closed epoch
        call = tx.find_call(event.nas_key, event.identifiers())
        if not _opens(event, when, tx.find_legs(identity), call):
            return AcctOutcome("recorded")  # a Start or Interim for a closed leg changes nothing
        if call is None:
            return self._create(tx, event, identity, epoch, held, when, batch)
        tx.link_leg(call, event)
        self._refresh(tx, call, event, when, epoch, batch)
        return AcctOutcome("recorded", call.client_id)

    def _create(
        self,
        tx: AccountingTx,
        event: AccountingEvent,
        identity: LegIdentity,
        epoch: int,
        held: HeldCall | None,
        when: datetime,
        batch: _Batch,
    ) -> AcctOutcome:
        """Accounting that matches no call creates one, for the client of its hold or of the
        account it identifies."""
        owner = self._owner(event, held)
        if owner is None:
            return _unknown(tx, event, identity)
        call = tx.create_call(
            client_id=owner.client_id,
            account_id=owner.account_id,
            nas_key=event.nas_key,
            epoch=epoch,
            acct_session_id=event.acct_session_id,
            conf_id=event.conf_id or "",
            origin=event.origin or "",
            called=owner.called,
            identifiers=event.identifiers(),
            state=state_after(CallMove.ACCOUNTED).value,
            hold=held.hold if held else ZERO,
            granted_seconds=held.granted_seconds if held else None,
            authorized_at=held.authorized_at if held else None,
            started_at=when if event.status == AcctStatus.START else None,
            seen_at=when,
            live_uid=held.uid if held else "",
            max_session_time=event.session_time or 0
            if event.status == AcctStatus.INTERIM_UPDATE
            else 0,
            tags=event.tags,
        )
        self._activated(call, batch)  # created as it should be: nothing to update
        return AcctOutcome("recorded", call.client_id)

    def _refresh(
        self,
        tx: AccountingTx,
        call: CallRecord,
        event: AccountingEvent,
        when: datetime,
        epoch: int,
        batch: _Batch,
    ) -> None:
        longer = max(call.max_session_time, event.session_time or 0)
        started = when if event.status == AcctStatus.START and call.started_at is None else None
        tx.update_call(
            call.id,
            state=state_after(CallMove.ACCOUNTED).value,
            started_at=started,
            max_session_time=longer if event.status == AcctStatus.INTERIM_UPDATE else None,
            last_seen_at=when,
            accounted=True,
            # a call held before the NAS's last Accounting-On/Off (an authorization stores
            # none) is of the epoch its accounting arrives in: the CDR a close gives it
            # must be the leg its own Stop looks for
            epoch=epoch if call.epoch != epoch else None,
        )
        self._activated(call, batch)

    def _activated(self, call: CallRecord, batch: _Batch) -> None:
        batch.effects.append(
            Activated(
                call.client_id,
                live_uid(call.id, call.live_uid),
                call.hold,
                call.granted_seconds,
                call.account_id,
                call.called,
                call.nas_key,
                tuple(sorted(call.keys)),
            )
        )

    def _owner(self, event: AccountingEvent, held: HeldCall | None) -> _Owner | None:
        """The client of accounting that matches no call: from its hold, else identified."""
        if held is not None:
            return _Owner(held.client_id, held.account_id, held.called, held)
        identified = self._catalog().accounts.identify(
            event.caller, allow_remote_address=event.origin == "answer"
        )
        if identified is None:
            return None
        account = identified.account
        return _Owner(account.client_id, account.id, digits_only(identified.number or ""), None)

    def _rate(self, client_id: int, called: str, moment: datetime) -> Rate | None:
        catalog = self._catalog()
        client = catalog.clients.get(client_id)
        if client is None or client.rate_table_id is None:
            return None
        table = catalog.rate_tables.get(client.rate_table_id)
        return table.lookup(called, moment) if table is not None else None

    def _moment(
        self,
        client_id: int,
        *,
        authorized_at: datetime | None,
        started_at: datetime | None,
        stopped_at: datetime,
        duration: int,
    ) -> datetime:
        client = self._catalog().clients.get(client_id)
        return rating_moment(
            client.bill_events_by if client else "disconnect",
            authorized_at=authorized_at,
            started_at=started_at,
            stopped_at=stopped_at,
            duration=duration,
        )

    # --- Stop and Failed -----------------------------------------------------------------------
    def _stop(
        self,
        tx: AccountingTx,
        event: AccountingEvent,
        identity: LegIdentity,
        epoch: int,
        held: HeldCall | None,
        when: datetime,
        batch: _Batch,
    ) -> AcctOutcome:
        call = tx.find_call(event.nas_key, event.identifiers()) if identity.epoch == epoch else None
        stored = tx.find_legs(identity)
        ending = self._ending(event, call, stored)
        of_start = [leg for leg in stored if mark_of(leg.once) == ending.mark]
        if event.status == AcctStatus.STOP and of_start:
            repeated = self._repeated(tx, ending, of_start, stored[0].client_id, when, batch)
            if repeated is not None:
                return repeated
        collision = bool(of_start) and ending.duration > 0
        if call is not None:
            owner = _Owner(call.client_id, call.account_id, call.called, None)
            tx.link_leg(call, event)
        else:
            found = self._owner(event, held)
            if found is None:
                return _unknown(tx, event, identity)
            owner = found
        if ending.duration == 0:
            return self._ended(tx, event, call, held, owner.client_id, when, batch)
        return self._charge_leg(
            tx, event, identity, call, held, owner, ending, when, batch, collision=collision
        )

    def _ending(
        self, event: AccountingEvent, call: CallRecord | None, stored: Sequence[StoredLeg]
    ) -> _Ending:
        """The leg a Stop or Failed ends: its Start, its duration, which Stop of it this is."""
        started_at = call.started_at if call else None
        if started_at is not None and stored and started_at <= _last_stop(stored):
            started_at = None  # the call's Start is that of a leg already stopped
        own = event.has_own_duration()
        # the Start this Stop ends: the call's, else (a re-sent Stop, or one after the server
        # closed the call) the last stored leg's, which its CDR keeps
        mark = (
            start_mark(started_at) if started_at else (mark_of(stored[-1].once) if stored else "")
        )
        if started_at is None and mark and not own:
            started_at = mark_start(mark)
        duration = 0
        if event.status == AcctStatus.STOP:
            duration = stop_duration(event, started_at, self._max_delay)
        return _Ending(started_at, mark, duration, once(mark, duration if own else None), own)

    def _repeated(
        self,
        tx: AccountingTx,
        ending: _Ending,
        of_start: Sequence[StoredLeg],
        client_id: int,
        when: datetime,
        batch: _Batch,
    ) -> AcctOutcome | None:
        """A Stop of a leg already stored: a duplicate (identity and duration equal; without
        a duration of its own: the same Start), or the correction of a call the server
        closed; None when it is neither (a new leg)."""
        same = (
            [leg for leg in of_start if leg.duration == ending.duration] if ending.own else of_start
        )
        if any(leg.closed_by == ClosedBy.STOP.value or leg.corrected for leg in same):
            return AcctOutcome("duplicate", client_id, ZERO, ending.duration)
        by_server = [
            leg for leg in of_start if leg.closed_by in CLOSED_BY_SERVER and not leg.corrected
        ]
        if by_server and ending.duration > 0:
            return self._correct(tx, by_server[0], ending.duration, when, batch)
        return None

    def _ended(
        self,
        tx: AccountingTx,
        event: AccountingEvent,
        call: CallRecord | None,
        held: HeldCall | None,
        client_id: int,
        when: datetime,
        batch: _Batch,
    ) -> AcctOutcome:
        """A Stop of 0 s or a Failed: no CDR; the call ends (zero_duration_stop "final") or
        is held again for another attempt ("retry")."""
        if event.zero_final:  # CallMove.STOPPED
            if call is not None:
                tx.end_call(call.id)
                batch.effects.append(Released(call.client_id, live_uid(call.id, call.live_uid)))
            elif held is not None:
                batch.effects.append(Released(held.client_id, held.uid))
        elif call is not None:  # CallMove.REHELD: this leg ends; the call is held again
            expires = when + timedelta(seconds=self._hold_seconds)
            tx.update_call(
                call.id,
                state=state_after(CallMove.REHELD).value,
                hold_expires_at=expires,
                last_seen_at=when,
            )
            batch.effects.append(Rehold(call.client_id, live_uid(call.id, call.live_uid), expires))
        return AcctOutcome("ended", client_id, ZERO, 0)

    def _charge_leg(
        self,
        tx: AccountingTx,
        event: AccountingEvent,
        identity: LegIdentity,
        call: CallRecord | None,
        held: HeldCall | None,
        owner: _Owner,
        ending: _Ending,
        when: datetime,
        batch: _Batch,
        *,
        collision: bool,
    ) -> AcctOutcome:
        """A billable leg's Stop: rated, one CDR, charged in full; the call ends."""
        duration = ending.duration
        authorized_at = call.authorized_at if call else (held.authorized_at if held else None)
        moment = self._moment(
            owner.client_id,
            authorized_at=authorized_at,
            started_at=ending.started_at,
            stopped_at=when,
            duration=duration,
        )
        price = _Price.of(self._rate(owner.client_id, owner.called, moment), duration)
        cdr_id = tx.store_leg(
            ClosedLeg(
                identity=identity,
                client_id=owner.client_id,
                account_id=owner.account_id,
                call_id=call.id if call else None,
                called=owner.called,
                duration=duration,
                billed_duration=price.billed,
                cost=price.cost,
                rate_code=price.code,
                rated_at=moment,
                started_at=ending.started_at or (when - timedelta(seconds=duration)),
                stopped_at=when,
                closed_by=ClosedBy.STOP.value,
                once=ending.once,
            )
        )
        if cdr_id is None:  # a concurrent copy stored it first
            return AcctOutcome("duplicate", owner.client_id, ZERO, duration)
        _charge(tx, owner.client_id, price.cost, cdr_id, f"call {event.acct_session_id}", batch)
        if call is not None:  # CallMove.STOPPED
            tx.end_call(call.id)
            batch.effects.append(_released(call))
        elif held is not None:
            batch.effects.append(Released(held.client_id, held.uid))
        return AcctOutcome("charged", owner.client_id, price.cost, duration, collision=collision)

    def _correct(
        self, tx: AccountingTx, leg: StoredLeg, duration: int, when: datetime, batch: _Batch
    ) -> AcctOutcome:
        """A Stop for a call the server closed (stale, Accounting-On/Off): correct in place."""
        price = _Price.of(self._rate(leg.client_id, leg.called, leg.rated_at), duration)
        tx.correct_leg(
            leg.id, duration=duration, billed_duration=price.billed, cost=price.cost, at=when
        )
        _charge(
            tx, leg.client_id, price.cost - leg.cost, leg.id, f"correction of CDR {leg.id}", batch
        )
        return AcctOutcome("corrected", leg.client_id, price.cost, duration)

    # --- calls the server closes ---------------------------------------------------------------
    def _close_nas(
        self, tx: AccountingTx, nas_key: str, when: datetime, closed_by: str, batch: _Batch
    ) -> AcctOutcome:
        closed = 0
        kept: list[CallRecord] = []
        for call in tx.calls_of_nas(nas_key):
            began = call.started_at or call.authorized_at or call.last_seen_at
            if began is not None and began >= when:
                kept.append(call)  # a call of the new boot (an On that arrived late)
                continue
            self._close_call(tx, call, closed_by, when, batch)
            closed += 1
        epoch = tx.new_epoch(nas_key, when)
        for call in kept:  # its Stop, after the On, looks for its leg in the new epoch
            tx.update_call(call.id, epoch=epoch)
        batch.effects.append(NasReleased(nas_key, when))
        tx.record_event(
            "nas_rebooted", nas_key=nas_key, detail={"status": closed_by, "closed_calls": closed}
        )
        return AcctOutcome("closed", closed_calls=closed)

    def _close_call(
        self, tx: AccountingTx, call: CallRecord, closed_by: str, when: datetime, batch: _Batch
    ) -> None:
        """Bill a call by its last known duration and end it (a CDR even at cost 0, when its
        accounting was recorded; a bare authorization just releases its hold)."""
        if call.accounted:
            duration = call.max_session_time
            moment = self._moment(
                call.client_id,
                authorized_at=call.authorized_at,
                started_at=call.started_at,
                stopped_at=when,
                duration=duration,
            )
            price = _Price.of(self._rate(call.client_id, call.called, moment), duration)
            cdr_id = tx.store_leg(
                ClosedLeg(
                    identity=LegIdentity(
                        call.nas_key,
                        call.epoch,
                        call.acct_session_id,
                        call.conf_id,
                        call.origin,
                        call.tags,
                    ),
                    client_id=call.client_id,
                    account_id=call.account_id,
                    call_id=call.id,
                    called=call.called,
                    duration=duration,
                    billed_duration=price.billed,
                    cost=price.cost,
                    rate_code=price.code,
                    rated_at=moment,
                    started_at=call.started_at,
                    stopped_at=when,
                    closed_by=closed_by,
                    once=once(start_mark(call.started_at) if call.started_at else "", duration),
                )
            )
            if cdr_id is not None:
                note = f"{closed_by} {call.acct_session_id}"
                _charge(tx, call.client_id, price.cost, cdr_id, note, batch)
        tx.end_call(call.id)
        batch.effects.append(_released(call))


def _released(call: CallRecord) -> Released:
    return Released(
        call.client_id,
        live_uid(call.id, call.live_uid),
        call.nas_key,
        tuple(sorted(call.keys)),
        call.account_id,
        call.called,
    )


@dataclass(frozen=True, slots=True)
class _Ending:
    """The leg a Stop or Failed ends: its Start (None: unknown), the Start's mark, the
    duration, which Stop of the leg this is (``domain.calls.once``), and whether the Stop
    carried a duration of its own."""

    started_at: datetime | None
    mark: str
    duration: int
    once: str
    own: bool


@dataclass(frozen=True, slots=True)
class _Price:
    """A duration rated: cost, billed duration and the rate's code (no rate: free)."""

    cost: Decimal
    billed: int
    code: str | None

    @classmethod
    def of(cls, rate: Rate | None, duration: int) -> _Price:
        if rate is None:
            return cls(ZERO, 0, None)
        return cls(cost(rate, duration), billed(rate, duration), rate.code)


def _charge(
    tx: AccountingTx, client_id: int, amount: Decimal, cdr_id: int, note: str, batch: _Batch
) -> None:
    """Charge ``amount`` (none when zero) in the ledger and, after the commit, the live
    balance."""
    if amount:
        tx.charge(client_id, -amount, cdr_id, note)
        batch.effects.append(BalanceMoved(client_id, -amount))


def _last_stop(stored: Sequence[StoredLeg]) -> datetime:
    stops = [leg.stopped_at for leg in stored if leg.stopped_at is not None]
    return max(stops) if stops else datetime.min.replace(tzinfo=UTC)


def _opens(
    event: AccountingEvent, when: datetime, stored: Sequence[StoredLeg], call: CallRecord | None
) -> bool:
    """Whether a Start or Interim-Update may open or refresh its leg (CONTRACT §3, Start of a
    closed leg): with no leg of its identity stopped yet, always; else a Start only when its
    event time is after the last Stop (a new leg of a new call: a reused Call-ID is charged
    again), an Interim only for a call started after that Stop."""
    if not stored:
        return True
    last = _last_stop(stored)
    if event.status == AcctStatus.START:
        return when > last
    started = call.started_at if call is not None else None
    return started is not None and started > last


def _late_leg(tx: AccountingTx, identity: LegIdentity) -> LegIdentity:
    """A late Stop's leg: in the newest of the epochs before the current one that has it
    (``late_epochs``); else in the epoch just before the current one."""
    for epoch in late_epochs(identity.epoch):
        candidate = replace(identity, epoch=epoch)
        if tx.find_legs(candidate):
            return candidate
    return identity


def _unknown(tx: AccountingTx, event: AccountingEvent, identity: LegIdentity) -> AcctOutcome:
    """Accounting that matches no account: recorded, and one event per leg."""
    tx.record_event(
        "unknown_account",
        nas_key=event.nas_key,
        detail={
            "acct_session_id": event.acct_session_id,
            "user_name": event.caller.user_name,
            "calling": event.caller.calling,
            "called": event.caller.called,
        },
        dedupe=f"unknown_account|{identity.nas_key}|{identity.epoch}|{identity.acct_session_id}"
        f"|{identity.conf_id}|{identity.origin}",
    )
    return AcctOutcome("unknown_account")
