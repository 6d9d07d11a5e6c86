"""The accounting transaction on SQL: a unit of work, read in bulk and written in bulk.

A batch of Accounting-Requests (a group commit) costs a few statements per batch, not per
packet:

- ``prefetch`` reads, before the domain walks the batch, everything its packets can look
  up: the NAS epochs, the calls matching any of their identifiers (locked, in id order, on
  PostgreSQL) and the legs stored under their identities;
- the domain's reads are then answered from that picture, which its own writes keep
  current; a lookup outside it falls back to the database and joins the picture;
- the writes are kept and sent at the end (``finish``), one statement per kind of write
  (inserts, updates and deletes of calls, call keys, CDRs, ledger rows, live balances).

Call ids are taken from the database before the domain sees the calls (it names holds by
them); CDR ids are given when the CDRs are written, so no id is wasted. A CDR whose leg
another transaction stored first (the unique leg identity) is a ``LedgerConflict``: the
whole transaction is rolled back and the batch is run again, and then it sees that leg.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, update

from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.calls import LEG_STATUSES, OPENING, CallState, possible_epochs
from billing_core.domain.money import ZERO
from billing_core.ports import (
    CallRecord,
    ClosedLeg,
    LedgerConflict,
    LegIdentity,
    StoredLeg,
)

from .bulk import LegKey, bulk_for, call_from
from .notify import write_event
from .tables import calls_t, nas_epochs_t, utcnow


def _leg_key(identity: LegIdentity) -> LegKey:
    return (
        identity.nas_key,
        identity.epoch,
        identity.acct_session_id,
        identity.conf_id,
        identity.origin,
        identity.tags,
    )


def _leg_order(leg: StoredLeg) -> tuple[bool, int]:
    # stored legs by id; legs of this transaction (negative, provisional ids) after them
    return (leg.id < 0, abs(leg.id))


class SqlAccountingTx:
    """One accounting transaction (see the module's text)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.io = bulk_for(conn)
        self._epochs: dict[str, tuple[int, datetime | None]] = {}
        # the picture: calls by id, their identifiers, the identifiers read from the database
        self._calls: dict[int, CallRecord] = {}
        self._by_key: dict[tuple[str, str], set[int]] = {}
        self._keys_read: set[tuple[str, str]] = set()
        self._ended: set[int] = set()
        # legs by identity, and the (nas_key, epoch, acct_session_id) read from the database
        self._legs: dict[LegKey, dict[int, StoredLeg]] = {}
        self._legs_read: set[tuple[str, int, str]] = set()
        # call ids taken ahead from the database
        self._spare_ids: list[int] = []
        # the writes, sent by flush()
        self._new_calls: dict[int, dict[str, Any]] = {}
        self._new_keys: dict[tuple[int, str, str], None] = {}
        self._changed: dict[int, dict[str, Any]] = {}
        self._to_end: list[int] = []
        self._new_legs: dict[int, dict[str, Any]] = {}
        self._corrections: dict[int, dict[str, Any]] = {}
        self._charges: list[dict[str, Any]] = []
        self._balance_moves: dict[int, Decimal] = {}
        self._touched: set[int] = set()
        self.live_seqs: dict[int, int] = {}  # client -> its live sequence after this work

    def record_event(
        self,
        kind: str,
        *,
        client_id: int | None = None,
        nas_key: str | None = None,
        detail: Mapping[str, object] | None = None,
        dedupe: str | None = None,
    ) -> None:
        write_event(
            self.conn, kind, client_id=client_id, nas_key=nas_key, detail=detail, dedupe=dedupe
        )

    # --- reading ahead -------------------------------------------------------------------------
    def prefetch(self, events: Sequence[AccountingEvent]) -> None:
        legs = [e for e in events if e.status in LEG_STATUSES and e.billable]
        if not legs:
            return
        self._read_epochs({e.nas_key for e in legs})
        self._read_calls({(e.nas_key, key) for e in legs for key in e.identifiers()})
        triples = {
            (event.nas_key, epoch, event.acct_session_id)
            for event in legs
            for epoch in possible_epochs(*self._epochs[event.nas_key])
        }
        self._read_legs(triples)
        # the calls the batch's Starts and Interims will create, named before the domain sees
        # them: those matching no call (a retransmitted Start wastes one id, never more)
        opening = {
            (e.nas_key, e.acct_session_id, e.conf_id, e.origin)
            for e in legs
            if e.status in OPENING and not self._matches(e.nas_key, e.identifiers())
        }
        self._take_ids(len(opening))

    def _read_epochs(self, nas_keys: Iterable[str]) -> None:
        wanted = [key for key in nas_keys if key not in self._epochs]
        if not wanted:
            return
        for nas_key, epoch, changed_at in self.io.epochs(wanted):
            self._epochs[nas_key] = (epoch, changed_at)
        for key in wanted:
            self._epochs.setdefault(key, (0, None))

    def _read_calls(self, pairs: set[tuple[str, str]]) -> None:
        wanted = sorted(pairs - self._keys_read)
        if not wanted:
            return
        rows = self.io.calls(wanted)
        self._keys_read.update(wanted)
        matched: dict[int, set[str]] = {}
        first: dict[int, CallRecord] = {}
        for record, nas_key, key in rows:
            matched.setdefault(record.id, set()).add(key)
            first.setdefault(record.id, record)
            self._by_key.setdefault((nas_key, key), set()).add(record.id)
        for call_id, record in first.items():
            known = self._calls.get(call_id)
            if known is None:
                if call_id not in self._ended:
                    keys = matched[call_id]
                    # PostgreSQL's reader gives each call with the keys it matched already
                    self._calls[call_id] = (
                        record if record.keys == keys else replace(record, keys=frozenset(keys))
                    )
            else:
                self._calls[call_id] = replace(known, keys=known.keys | matched[call_id])

    def _read_legs(self, triples: set[tuple[str, int, str]]) -> None:
        wanted = sorted(triples - self._legs_read)
        if not wanted:
            return
        for key, leg in self.io.legs(wanted):
            legs = self._legs.setdefault(key, {})
            if leg.id not in legs:  # a leg this transaction corrected stays as it is here
                legs[leg.id] = leg
        self._legs_read.update(wanted)

    def _matches(self, nas_key: str, identifiers: Iterable[str]) -> set[int]:
        found: set[int] = set()
        for key in identifiers:
            found |= self._by_key.get((nas_key, key), set())
        return {call_id for call_id in found if call_id in self._calls}

    def _take_ids(self, count: int) -> None:
        if count > 0:
            self._spare_ids.extend(self.io.call_ids(count))

    def _new_call_id(self) -> int:
        if not self._spare_ids:
            self._take_ids(1)
        return self._spare_ids.pop(0)

    # --- the domain's reads ----------------------------------------------------------------------
    def record_events(self, events: Sequence[AccountingEvent]) -> None:
        if not events:
            return
        self.io.insert_events(
            [
                {
                    "nas_key": event.nas_key,
                    "status": event.status,
                    "acct_session_id": event.acct_session_id,
                    "arrived": event.arrived,
                    "delay": event.delay,
                    "attributes": event.attributes,  # stored as compact JSON text
                }
                for event in events
            ],
        )

    def current_epoch(self, nas_key: str) -> tuple[int, datetime | None]:
        self._read_epochs((nas_key,))
        return self._epochs[nas_key]

    def find_call(self, nas_key: str, identifiers: tuple[str, ...]) -> CallRecord | None:
        self._read_calls({(nas_key, key) for key in identifiers})
        found = self._matches(nas_key, identifiers)
        if not found:
            return None
        newest = self._calls[max(found)]
        matched = frozenset(
            k for k in identifiers if newest.id in self._by_key.get((nas_key, k), ())
        )
        return newest if matched <= newest.keys else replace(newest, keys=newest.keys | matched)

    def find_legs(self, identity: LegIdentity) -> list[StoredLeg]:
        self._read_legs({(identity.nas_key, identity.epoch, identity.acct_session_id)})
        return sorted(self._legs.get(_leg_key(identity), {}).values(), key=_leg_order)

    def calls_of_nas(self, nas_key: str) -> list[CallRecord]:
        self.flush()
        rows = self.conn.execute(
            select(calls_t).where(calls_t.c.nas_key == nas_key).order_by(calls_t.c.id)
        )
        return [self._known(row) for row in rows]

    def stale_calls(
        self, now: datetime, grace_seconds: int, default_grant: int
    ) -> list[CallRecord]:
        self.flush()
        # candidates by the longest possible silence, then the exact rule per call
        longest = now - timedelta(seconds=grace_seconds)
        rows = self.conn.execute(
            select(calls_t).where(
                calls_t.c.accounted.is_(True),
                calls_t.c.state == CallState.ACTIVE.value,
                calls_t.c.last_seen_at < longest,
            )
        )
        out = []
        for row in rows:
            call = self._known(row)
            grant = call.granted_seconds or default_grant
            if (
                call.last_seen_at is not None
                and call.last_seen_at + timedelta(seconds=grant + grace_seconds) < now
            ):
                out.append(call)
        return out

    def purge_lapsed(self, before: datetime) -> int:
        self.flush()
        ids = [
            row.id
            for row in self.conn.execute(
                select(calls_t.c.id).where(
                    calls_t.c.accounted.is_(False),
                    calls_t.c.state == CallState.HELD.value,
                    calls_t.c.hold_expires_at < before,
                )
            )
        ]
        for call_id in ids:
            self.end_call(call_id)
        return len(ids)

    def _known(self, row: Any) -> CallRecord:
        """A call read outside the picture: the picture's copy when it has one."""
        known = self._calls.get(row.id)
        if known is None:
            known = self._calls[row.id] = call_from(row._mapping)
        return known

    # --- the domain's writes ---------------------------------------------------------------------
    def new_epoch(self, nas_key: str, at: datetime) -> int:
        epoch, changed = self.current_epoch(nas_key)
        if epoch == 0 and changed is None:
            self.conn.execute(insert(nas_epochs_t).values(nas_key=nas_key, epoch=1, changed_at=at))
        else:
            self.conn.execute(
                update(nas_epochs_t)
                .where(nas_epochs_t.c.nas_key == nas_key)
                .values(epoch=epoch + 1, changed_at=at)
            )
        self._epochs[nas_key] = (epoch + 1, at)
        return epoch + 1

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
        call_id = self._new_call_id()
        self._new_calls[call_id] = {
            "id": call_id,
            "client_id": client_id,
            "account_id": account_id,
            "nas_key": nas_key,
            "acct_session_id": acct_session_id,
            "conf_id": conf_id,
            "origin": origin,
            "called": called,
            "state": state,
            "hold": hold,
            "granted_seconds": granted_seconds,
            "authorized_at": authorized_at,
            "started_at": started_at,
            "last_seen_at": seen_at,
            "hold_expires_at": None,
            "max_session_time": max_session_time,
            "charged": False,
            "epoch": epoch,
            "live_uid": live_uid,
            "accounted": True,
            "tags": tags,
        }
        call = call_from(self._new_calls[call_id], frozenset(identifiers))
        self._calls[call_id] = call
        self._add_keys(call_id, nas_key, identifiers)
        return call

    def _add_keys(self, call_id: int, nas_key: str, keys: Iterable[str]) -> None:
        for key in keys:
            self._by_key.setdefault((nas_key, key), set()).add(call_id)
            self._new_keys[(call_id, nas_key, key)] = None

    def _change(self, call_id: int, **values: Any) -> None:
        """Note new column values of a call, in the picture and for flush()."""
        new = self._new_calls.get(call_id)
        if new is not None:
            new.update(values)
        else:
            self._changed.setdefault(call_id, {}).update(values)
        known = self._calls.get(call_id)
        if known is not None:
            fields = {k: v for k, v in values.items() if k != "hold_expires_at"}
            self._calls[call_id] = replace(known, **fields)

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
        values = {
            key: value
            for key, value in (
                ("state", state),
                ("started_at", started_at),
                ("max_session_time", max_session_time),
                ("hold_expires_at", hold_expires_at),
                ("last_seen_at", last_seen_at),
                ("accounted", accounted),
                ("epoch", epoch),
            )
            if value is not None
        }
        if values:
            self._change(call_id, **values)

    def link_leg(self, call: CallRecord, event: AccountingEvent) -> None:
        known = self._calls.get(call.id, call)
        new_keys = [k for k in event.identifiers() if k not in known.keys]
        if new_keys:
            self._add_keys(call.id, event.nas_key, new_keys)
            self._calls[call.id] = replace(known, keys=known.keys | frozenset(new_keys))
        if not known.acct_session_id:  # the first billable leg names the call
            self._change(
                call.id,
                acct_session_id=event.acct_session_id,
                conf_id=event.conf_id or "",
                origin=event.origin or "",
                tags=event.tags,
            )
        elif event.tags and not known.tags and known.acct_session_id == event.acct_session_id:
            self._change(call.id, tags=event.tags)  # an authorization names no dialog tags

    def store_leg(self, leg: ClosedLeg) -> int | None:
        identity = leg.identity
        key = _leg_key(identity)
        self._read_legs({(identity.nas_key, identity.epoch, identity.acct_session_id)})
        stored = self._legs.setdefault(key, {})
        if any(other.once == leg.once for other in stored.values()):
            return None  # the unique leg identity: already stored
        provisional = -(len(self._new_legs) + 1)
        self._new_legs[provisional] = {
            "client_id": leg.client_id,
            "account_id": leg.account_id,
            "call_id": leg.call_id,
            "nas_key": identity.nas_key,
            "epoch": identity.epoch,
            "acct_session_id": identity.acct_session_id,
            "conf_id": identity.conf_id,
            "origin": identity.origin,
            "tags": identity.tags,
            "once": leg.once,
            "called": leg.called,
            "duration": leg.duration,
            "billed_duration": leg.billed_duration,
            "cost": leg.cost,
            "rate_code": leg.rate_code,
            "rated_at": leg.rated_at,
            "started_at": leg.started_at,
            "stopped_at": leg.stopped_at,
            "closed_by": leg.closed_by,
            "created_at": utcnow(),
            "corrected_at": None,
        }
        call = self._calls.get(leg.call_id) if leg.call_id is not None else None
        stored[provisional] = StoredLeg(
            id=provisional,
            client_id=leg.client_id,
            duration=leg.duration,
            cost=leg.cost,
            closed_by=leg.closed_by,
            corrected=False,
            called=leg.called,
            rated_at=leg.rated_at,
            call_live_uid=call.live_uid if call is not None else "",
            stopped_at=leg.stopped_at,
            once=leg.once,
        )
        return provisional

    def correct_leg(
        self, cdr_id: int, *, duration: int, billed_duration: int, cost: Decimal, at: datetime
    ) -> None:
        values = {"duration": duration, "billed_duration": billed_duration, "cost": cost}
        pending = self._new_legs.get(cdr_id)
        if pending is not None:
            pending.update(values, corrected_at=at)
        else:
            self._corrections[cdr_id] = {"id": cdr_id, **values, "corrected_at": at}
        for legs in self._legs.values():
            leg = legs.get(cdr_id)
            if leg is not None:
                legs[cdr_id] = replace(leg, duration=duration, cost=cost, corrected=True)

    def charge(self, client_id: int, amount: Decimal, cdr_id: int, note: str) -> None:
        self._charges.append(
            {
                "client_id": client_id,
                "kind": "call",
                "amount": amount,
                "note": note,
                "external_id": None,
                "cdr_id": cdr_id,
                "created_at": utcnow(),
            }
        )
        self._balance_moves[client_id] = self._balance_moves.get(client_id, ZERO) + amount

    def touch_live(self, client_ids: Iterable[int]) -> None:
        """These clients' live state changes with this work (calls held, active or ended):
        their live sequence moves, even where their balance does not."""
        self._touched.update(client_ids)

    def end_call(self, call_id: int) -> None:
        self._calls.pop(call_id, None)
        self._ended.add(call_id)
        self._changed.pop(call_id, None)
        if self._new_calls.pop(call_id, None) is not None:
            # never written: nor are its keys (a CDR may still name it, as it names ended calls)
            for entry in [e for e in self._new_keys if e[0] == call_id]:
                del self._new_keys[entry]
        else:
            self._to_end.append(call_id)

    # --- writing ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send the writes kept so far, one statement per kind (the transaction stays open)."""
        io = self.io
        if self._new_calls:
            io.insert_calls(list(self._new_calls.values()))
            self._new_calls.clear()
        if self._new_keys:
            io.insert_keys(list(self._new_keys))
            self._new_keys.clear()
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for call_id, values in sorted(self._changed.items()):
            by_columns.setdefault(tuple(sorted(values)), []).append({"id": call_id, **values})
        for columns, rows in by_columns.items():
            io.update_calls(columns, rows)
        self._changed.clear()
        if self._to_end:
            io.delete_calls(sorted(self._to_end))
            self._to_end.clear()
        self._flush_legs()
        if self._corrections:
            io.correct_cdrs(list(self._corrections.values()))
            self._corrections.clear()
        if self._charges:
            io.insert_charges(self._charges)
            self._charges = []
        moves = {c: a for c, a in self._balance_moves.items() if a or c in self._touched}
        moves.update((c, ZERO) for c in self._touched if c not in moves)
        self._balance_moves.clear()
        self._touched.clear()
        if moves:
            # in client order: two transactions never wait on each other's rows crosswise
            self.live_seqs.update(io.move_balances(moves))

    def _flush_legs(self) -> None:
        if not self._new_legs:
            return
        provisional = list(self._new_legs)
        real = dict(zip(provisional, self.io.cdr_ids(len(provisional)), strict=True))
        rows = [{"id": real[p], **self._new_legs[p]} for p in provisional]
        if self.io.insert_cdrs(rows) != len(rows):
            raise LedgerConflict("a leg was stored by another transaction first")
        self._new_legs.clear()
        for charge in self._charges:
            charge["cdr_id"] = real.get(charge["cdr_id"], charge["cdr_id"])
        for legs in self._legs.values():
            for p in [p for p in legs if p in real]:
                legs[real[p]] = replace(legs.pop(p), id=real[p])

    def finish(self) -> None:
        self.flush()
