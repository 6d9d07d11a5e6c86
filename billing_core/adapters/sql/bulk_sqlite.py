"""The accounting transaction's bulk reads and writes on SQLite (``bulk.Bulk``): the same
work as SQLAlchemy Core statements, built once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.elements import BindParameter

from billing_core.domain.live_balance import LiveBalance, moved
from billing_core.ports import CallRecord, StoredLeg

from .bulk import CORRECTED, LegKey, Row, call_from
from .tables import (
    acct_events_t,
    call_keys_t,
    calls_t,
    cdrs_t,
    live_t,
    nas_epochs_t,
    transactions_t,
)


def _compact(value: Any) -> str:
    """Packet attributes as stored, by both engines: compact JSON, UTF-8 as received."""
    return orjson.dumps(value).decode()


class _CoreStatements:
    def __init__(self) -> None:
        ignore = sqlite.insert
        self.find_calls = (
            select(calls_t, call_keys_t.c.nas_key.label("k_nas"), call_keys_t.c.key.label("k_key"))
            .join(call_keys_t, call_keys_t.c.call_id == calls_t.c.id)
            .where(
                # SQLite's planner reaches no index through a row-value IN: without the
                # per-column lists it scanned every call in progress (EXPLAIN; issue 18)
                call_keys_t.c.nas_key.in_(bindparam("nas_keys", expanding=True)),
                call_keys_t.c.key.in_(bindparam("keys", expanding=True)),
                tuple_(call_keys_t.c.nas_key, call_keys_t.c.key).in_(
                    bindparam("pairs", expanding=True)
                ),
            )
            .order_by(calls_t.c.id)
        )
        self.find_legs = (
            select(cdrs_t, calls_t.c.live_uid)
            .outerjoin(calls_t, calls_t.c.id == cdrs_t.c.call_id)
            .where(
                # as above: without them, every CDR ever stored was scanned per batch
                cdrs_t.c.nas_key.in_(bindparam("nas_keys", expanding=True)),
                cdrs_t.c.epoch.in_(bindparam("epochs", expanding=True)),
                cdrs_t.c.acct_session_id.in_(bindparam("sessions", expanding=True)),
                tuple_(cdrs_t.c.nas_key, cdrs_t.c.epoch, cdrs_t.c.acct_session_id).in_(
                    bindparam("triples", expanding=True)
                ),
            )
            .order_by(cdrs_t.c.id)
        )
        self.epochs = select(
            nas_epochs_t.c.nas_key, nas_epochs_t.c.epoch, nas_epochs_t.c.changed_at
        ).where(nas_epochs_t.c.nas_key.in_(bindparam("keys", expanding=True)))
        self.add_keys = ignore(call_keys_t).on_conflict_do_nothing()
        self.store_legs = ignore(cdrs_t).on_conflict_do_nothing().returning(cdrs_t.c.id)
        ended: BindParameter[list[int]] = bindparam("ids", expanding=True)
        self.end_keys = delete(call_keys_t).where(call_keys_t.c.call_id.in_(ended))
        self.end_calls = delete(calls_t).where(calls_t.c.id.in_(ended))
        self.correct = (
            update(cdrs_t)
            .where(cdrs_t.c.id == bindparam("cdr_id"))
            .values(
                duration=bindparam("v_duration"),
                billed_duration=bindparam("v_billed_duration"),
                cost=bindparam("v_cost"),
                corrected_at=bindparam("v_corrected_at"),
            )
        )
        self.balances = select(live_t.c.client_id, live_t.c.balance, live_t.c.seq).where(
            live_t.c.client_id.in_(bindparam("ids", expanding=True))
        )
        self.move_balance = (
            update(live_t)
            .where(live_t.c.client_id == bindparam("b_client"))
            .values(
                balance=bindparam("b_balance", type_=live_t.c.balance.type),
                seq=bindparam("b_seq"),
            )
        )
        self._updates: dict[tuple[str, ...], Any] = {}

    def update_calls(self, columns: tuple[str, ...]) -> Any:
        found = self._updates.get(columns)
        if found is None:
            found = self._updates[columns] = (
                update(calls_t)
                .where(calls_t.c.id == bindparam("call_id"))
                .values({name: bindparam(f"v_{name}") for name in columns})
            )
        return found


_CORE: list[_CoreStatements] = []


def _core_statements() -> _CoreStatements:
    if not _CORE:
        _CORE.append(_CoreStatements())
    return _CORE[0]


class SqliteBulk:
    """SQLite: one writer at a time (every write transaction is BEGIN IMMEDIATE), so the next
    ids are the largest ones plus one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sql = _core_statements()
        self._next_call: int | None = None

    def epochs(self, nas_keys: Sequence[str]) -> list[tuple[str, int, datetime | None]]:
        rows = self.conn.execute(self.sql.epochs, {"keys": list(nas_keys)})
        return [(row.nas_key, int(row.epoch), row.changed_at) for row in rows]

    def calls(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[CallRecord, str, str]]:
        rows = self.conn.execute(
            self.sql.find_calls,
            {
                "pairs": list(pairs),
                "nas_keys": sorted({n for n, _ in pairs}),
                "keys": sorted({k for _, k in pairs}),
            },
        )
        return [
            (
                call_from(row._mapping),
                row.k_nas,
                row.k_key,
            )
            for row in rows
        ]

    def legs(self, triples: Sequence[tuple[str, int, str]]) -> list[tuple[LegKey, StoredLeg]]:
        rows = self.conn.execute(
            self.sql.find_legs,
            {
                "triples": list(triples),
                "nas_keys": sorted({n for n, _, _ in triples}),
                "epochs": sorted({e for _, e, _ in triples}),
                "sessions": sorted({a for _, _, a in triples}),
            },
        )
        return [
            (
                (row.nas_key, row.epoch, row.acct_session_id, row.conf_id, row.origin, row.tags),
                StoredLeg(
                    id=row.id,
                    client_id=row.client_id,
                    duration=row.duration,
                    cost=row.cost,
                    closed_by=row.closed_by,
                    corrected=row.corrected_at is not None,
                    called=row.called,
                    rated_at=row.rated_at,
                    call_live_uid=row.live_uid or "",
                    stopped_at=row.stopped_at,
                    once=row.once,
                ),
            )
            for row in rows
        ]

    def call_ids(self, count: int) -> list[int]:
        if self._next_call is None:
            last = self.conn.exec_driver_sql("SELECT max(id) FROM calls").scalar()
            self._next_call = int(last or 0) + 1
        first, self._next_call = self._next_call, self._next_call + count
        return list(range(first, first + count))

    def cdr_ids(self, count: int) -> list[int]:
        last = self.conn.exec_driver_sql("SELECT max(id) FROM cdrs").scalar()
        first = int(last or 0) + 1
        return list(range(first, first + count))

    def insert_events(self, rows: Sequence[Row]) -> None:
        self.conn.execute(
            insert(acct_events_t),
            [{**row, "attributes": _compact(row["attributes"])} for row in rows],
        )

    def insert_calls(self, rows: Sequence[Row]) -> None:
        self.conn.execute(insert(calls_t), list(rows))

    def insert_keys(self, rows: Sequence[tuple[int, str, str]]) -> None:
        self.conn.execute(
            self.sql.add_keys, [{"call_id": c, "nas_key": n, "key": k} for c, n, k in rows]
        )

    def update_calls(self, columns: tuple[str, ...], rows: Sequence[Row]) -> None:
        self.conn.execute(
            self.sql.update_calls(columns),
            [{"call_id": row["id"], **{f"v_{c}": row[c] for c in columns}} for row in rows],
        )

    def delete_calls(self, ids: Sequence[int]) -> None:
        params = {"ids": list(ids)}
        self.conn.execute(self.sql.end_keys, params)  # their call_keys with them
        self.conn.execute(self.sql.end_calls, params)

    def insert_cdrs(self, rows: Sequence[Row]) -> int:
        return len(list(self.conn.execute(self.sql.store_legs, list(rows))))

    def correct_cdrs(self, rows: Sequence[Row]) -> None:
        self.conn.execute(
            self.sql.correct,
            [{"cdr_id": row["id"], **{f"v_{c}": row[c] for c in CORRECTED}} for row in rows],
        )

    def insert_charges(self, rows: Sequence[Row]) -> None:
        self.conn.execute(insert(transactions_t), list(rows))

    def move_balances(self, moves: dict[int, Decimal]) -> dict[int, int]:
        # SQLite: the write transaction is BEGIN IMMEDIATE, so the rows read here stay as read
        ids = sorted(moves)
        present = {
            row.client_id: LiveBalance(row.balance, int(row.seq))
            for row in self.conn.execute(self.sql.balances, {"ids": ids})
        }
        after = {c: moved(present.get(c), moves[c]) for c in ids}
        found = [c for c in ids if c in present]
        if found:
            self.conn.execute(
                self.sql.move_balance,
                [
                    {"b_client": c, "b_balance": after[c].balance, "b_seq": after[c].seq}
                    for c in found
                ],
            )
        missing = [
            {"client_id": c, "balance": after[c].balance, "seq": after[c].seq, "applied": 0}
            for c in ids
            if c not in present
        ]
        if missing:
            self.conn.execute(insert(live_t), missing)
        return {c: after[c].seq for c in ids}
