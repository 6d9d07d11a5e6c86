"""The reads and writes of an accounting transaction, each one statement for a whole batch.

Two implementations of one interface (``Bulk``):

- ``PgBulk`` (PostgreSQL) sends statements of constant text whose rows travel as one JSON
  document (``json_to_recordset``). psycopg parses such a statement once and PostgreSQL
  prepares it once; a multi-row ``VALUES`` or an expanded ``IN`` list would be new text for
  every batch size, parsed again each time (psycopg's parser then cost more than the rest
  of the batch), and arrays are dumped by psycopg element by element in Python where
  orjson encodes a whole batch in C. Values are converted here as the models' column types
  would (money in micro-units, times as naive UTC). The statements run on the driver's own
  cursor (SQLAlchemy's result machinery cost as much as the driver), with errors translated
  and a broken connection invalidated as SQLAlchemy would.
- ``SqliteBulk`` (SQLite, in-process) runs the same work as SQLAlchemy Core statements.

Rows go in as dicts keyed by column name, with domain values (``Decimal``, aware UTC
``datetime``); rows come out as domain values too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from billing_core.domain.money import from_micros, to_micros
from billing_core.ports import CallRecord, StoredLeg

from .models import (
    AcctEventRow,
    CallKeyRow,
    CallRow,
    CdrRow,
    LiveBalanceRow,
    NasEpochRow,
    TransactionRow,
    table,
)

acct_events_t = table(AcctEventRow)
call_keys_t = table(CallKeyRow)
calls_t = table(CallRow)
cdrs_t = table(CdrRow)
live_t = table(LiveBalanceRow)
nas_epochs_t = table(NasEpochRow)
transactions_t = table(TransactionRow)

LegKey = tuple[str, int, str, str, str, str]  # nas_key, epoch, session id, conf_id, origin, tags
Row = dict[str, Any]

# the columns written, and their PostgreSQL types (for the arrays)
EVENT_COLUMNS = (
    ("nas_key", "text"),
    ("status", "int4"),
    ("acct_session_id", "text"),
    ("arrived", "timestamp"),
    ("delay", "int4"),
    ("attributes", "text"),
)
CALL_COLUMNS = (
    ("id", "int8"),
    ("client_id", "int4"),
    ("account_id", "int4"),
    ("nas_key", "text"),
    ("acct_session_id", "text"),
    ("conf_id", "text"),
    ("origin", "text"),
    ("called", "text"),
    ("state", "text"),
    ("hold", "money"),
    ("granted_seconds", "int4"),
    ("authorized_at", "timestamp"),
    ("started_at", "timestamp"),
    ("last_seen_at", "timestamp"),
    ("hold_expires_at", "timestamp"),
    ("max_session_time", "int4"),
    ("charged", "bool"),
    ("epoch", "int4"),
    ("live_uid", "text"),
    ("accounted", "bool"),
    ("tags", "text"),
)
CALL_TYPES = dict(CALL_COLUMNS)
CDR_COLUMNS = (
    ("id", "int8"),
    ("client_id", "int4"),
    ("account_id", "int4"),
    ("call_id", "int8"),
    ("nas_key", "text"),
    ("epoch", "int4"),
    ("acct_session_id", "text"),
    ("conf_id", "text"),
    ("origin", "text"),
    ("tags", "text"),
    ("once", "text"),
    ("called", "text"),
    ("duration", "int4"),
    ("billed_duration", "int4"),
    ("cost", "money"),
    ("rate_code", "text"),
    ("rated_at", "timestamp"),
    ("started_at", "timestamp"),
    ("stopped_at", "timestamp"),
    ("closed_by", "text"),
    ("created_at", "timestamp"),
    ("corrected_at", "timestamp"),
)
CORRECTION_COLUMNS = (
    ("id", "int8"),
    ("duration", "int4"),
    ("billed_duration", "int4"),
    ("cost", "money"),
    ("corrected_at", "timestamp"),
)
CHARGE_COLUMNS = (
    ("client_id", "int4"),
    ("kind", "text"),
    ("amount", "money"),
    ("note", "text"),
    ("external_id", "text"),
    ("cdr_id", "int8"),
    ("created_at", "timestamp"),
)


class Bulk(Protocol):
    def epochs(self, nas_keys: Sequence[str]) -> list[tuple[str, int, datetime | None]]: ...

    def calls(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[CallRecord, str, str]]:
        """The calls known by any (nas_key, key), locked in id order where the database
        locks rows; with the pair each row matched."""
        ...

    def legs(self, triples: Sequence[tuple[str, int, str]]) -> list[tuple[LegKey, StoredLeg]]:
        """The CDRs under any (nas_key, epoch, acct_session_id), in id order."""
        ...

    def call_ids(self, count: int) -> list[int]: ...

    def cdr_ids(self, count: int) -> list[int]: ...

    def insert_events(self, rows: Sequence[Row]) -> None:
        """Rows' "attributes" are dicts, stored as compact JSON text."""
        ...

    def insert_calls(self, rows: Sequence[Row]) -> None: ...

    def insert_keys(self, rows: Sequence[tuple[int, str, str]]) -> None: ...

    def update_calls(self, columns: tuple[str, ...], rows: Sequence[Row]) -> None:
        """Rows hold "id" and ``columns``."""
        ...

    def delete_calls(self, ids: Sequence[int]) -> None: ...

    def insert_cdrs(self, rows: Sequence[Row]) -> int:
        """Insert, skipping a row whose leg identity or id is taken; how many went in."""
        ...

    def correct_cdrs(self, rows: Sequence[Row]) -> None: ...

    def insert_charges(self, rows: Sequence[Row]) -> None: ...

    def move_balances(self, moves: dict[int, Decimal]) -> dict[int, int]:
        """Add to live balances and move each one's live sequence, rows locked in client
        order (a missing row is created); the new sequence of each client."""
        ...


def bulk_for(conn: Connection) -> Bulk:
    return PgBulk(conn) if conn.dialect.name == "postgresql" else SqliteBulk(conn)


def _compact(value: Any) -> str:
    """Packet attributes as stored, by both engines: compact JSON, UTF-8 as received."""
    return orjson.dumps(value).decode()


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


# --- PostgreSQL ------------------------------------------------------------------------------
def driver_execute(
    dialect: Dialect, pooled: PoolProxiedConnection, cursor: Any, sql: str, params: tuple[Any, ...]
) -> None:
    """Execute on the driver's own cursor. A driver error comes out as SQLAlchemy's (outages
    and deadlocks are told apart by it) and a broken connection is invalidated, as
    SQLAlchemy's own execution does."""
    dbapi = dialect.loaded_dbapi
    try:
        cursor.execute(sql, params)
    except dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, pooled.dbapi_connection, cursor)
        if gone:
            pooled.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from exc


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):  # timestamp columns hold naive UTC
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if isinstance(value, Decimal):  # every Decimal written here is money: micro-units
        return to_micros(value)
    raise TypeError(f"not written by PgBulk: {type(value).__name__}")


def _json(rows: Sequence[Any]) -> str:
    """A batch as one JSON document: C-encoded here, C-decoded by PostgreSQL (an array per
    column would be dumped element by element in Python). Times go through ``_to_json``
    (naive UTC), not orjson's own format, which keeps the offset a timestamp column drops."""
    return orjson.dumps(rows, default=_to_json, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


_PG_TYPE = {"money": "int8"}  # money is BIGINT micro-units underneath


def _record(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {_PG_TYPE.get(kind, kind)}" for name, kind in columns)


def _insert_sql(table_name: str, columns: Sequence[tuple[str, str]], tail: str = "") -> str:
    names = ", ".join(name for name, _ in columns)
    return (
        f"INSERT INTO {table_name} ({names}) SELECT {names} "
        f"FROM json_to_recordset(%s::json) AS v({_record(columns)}){tail}"
    )


_PG_EVENTS = _insert_sql("acct_events", EVENT_COLUMNS)
_PG_CALLS = _insert_sql("calls", CALL_COLUMNS)
_PG_KEYS = (
    "INSERT INTO call_keys (call_id, nas_key, key) "
    "SELECT (v->>0)::int8, v->>1, v->>2 FROM json_array_elements(%s::json) AS v "
    "ON CONFLICT DO NOTHING"
)
_PG_CDRS = _insert_sql("cdrs", CDR_COLUMNS, " ON CONFLICT DO NOTHING RETURNING id")
_PG_CHARGES = _insert_sql("transactions", CHARGE_COLUMNS)


# Every read and write reaches its rows through an index, whatever the planner thinks of a
# JSON document's row count: lookups run per element (LATERAL), and id lists go through
# ``= ANY(ARRAY(...))`` (an index scan), never a hash join over a whole table of CDRs.
# (OFFSET 0 keeps PostgreSQL from flattening a LATERAL lookup into such a join.)
def _ids(cast: str) -> str:
    return f"ANY(ARRAY(SELECT (json_array_elements_text(%s::json))::{cast}))"


_PG_EPOCHS = f"SELECT nas_key, epoch, changed_at FROM nas_epochs WHERE nas_key = {_ids('text')}"
CALL_READ = (
    "id",
    "client_id",
    "account_id",
    "nas_key",
    "acct_session_id",
    "conf_id",
    "origin",
    "called",
    "state",
    "granted_seconds",
    "hold",
    "authorized_at",
    "started_at",
    "last_seen_at",
    "max_session_time",
    "accounted",
    "epoch",
    "live_uid",
    "tags",
)


def call_from(values: Mapping[Any, Any], keys: frozenset[str] = frozenset()) -> CallRecord:
    """A call from its columns (CALL_READ), as domain values."""
    return CallRecord(
        **{name: values[name] for name in CALL_READ},
        keys=keys,
    )


_PG_FIND_CALLS = (
    f"SELECT {', '.join('c.' + name for name in CALL_READ)}, k.nas_key, k.key "
    "FROM json_array_elements(%s::json) AS v "
    "JOIN LATERAL (SELECT call_id, nas_key, key FROM call_keys "
    "WHERE nas_key = v->>0 AND key = v->>1 OFFSET 0) AS k ON true "
    "JOIN calls c ON c.id = k.call_id "
    "ORDER BY c.id FOR UPDATE OF c"
)
_PG_FIND_LEGS = (
    "SELECT d.id, d.client_id, d.duration, d.cost, d.closed_by, d.corrected_at, d.called, "
    "d.rated_at, coalesce(c.live_uid, '') AS live_uid, d.nas_key, d.epoch, "
    "d.acct_session_id, d.conf_id, d.origin, d.tags, d.once, d.stopped_at "
    "FROM json_array_elements(%s::json) AS v "
    "JOIN LATERAL (SELECT * FROM cdrs WHERE nas_key = v->>0 AND epoch = (v->>1)::int4 "
    "AND acct_session_id = v->>2 OFFSET 0) AS d ON true "
    "LEFT JOIN calls c ON c.id = d.call_id ORDER BY d.id"
)
_PG_CORRECT = (
    "UPDATE cdrs AS d SET duration = v.duration, billed_duration = v.billed_duration, "
    "cost = v.cost, corrected_at = v.corrected_at "
    f"FROM json_to_recordset(%s::json) AS v({_record(CORRECTION_COLUMNS)}) "
    f"WHERE d.id = v.id AND d.id = {_ids('int8')}"
)
# rows taken in client order (the document is sorted): two transactions never wait on
# each other's balances crosswise; a client without a row gets one
_PG_MOVE_BALANCES = (
    "INSERT INTO live_balances AS l (client_id, balance, seq, applied) "
    "SELECT (v->>0)::int4, (v->>1)::int8, 1, 0 FROM json_array_elements(%s::json) AS v "
    "ON CONFLICT (client_id) DO UPDATE SET balance = l.balance + excluded.balance, "
    "seq = l.seq + 1 RETURNING l.client_id, l.seq"
)


def _pg_update_calls(columns: tuple[str, ...]) -> str:
    typed = [("id", "int8"), *((name, CALL_TYPES[name]) for name in columns)]
    sets = ", ".join(f"{name} = v.{name}" for name in columns)
    return (
        f"UPDATE calls AS c SET {sets} FROM json_to_recordset(%s::json) AS v({_record(typed)}) "
        f"WHERE c.id = v.id AND c.id = {_ids('int8')}"
    )


class PgBulk:
    def __init__(self, conn: Connection) -> None:
        self._dialect = conn.dialect
        self._pooled = conn.connection  # the transaction's own: the statements run inside it
        self._cursor = self._pooled.cursor()

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        """The driver's cursor, in the connection's transaction (see ``driver_execute``)."""
        driver_execute(self._dialect, self._pooled, self._cursor, sql, tuple(params))
        return self._cursor

    def _run(self, sql: str, params: Sequence[Any]) -> None:
        self._execute(sql, params)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._execute(sql, params).fetchall()
        return rows

    def epochs(self, nas_keys: Sequence[str]) -> list[tuple[str, int, datetime | None]]:
        rows = self._rows(_PG_EPOCHS, [_json(nas_keys)])
        return [(key, int(epoch), _aware(at)) for key, epoch, at in rows]

    def calls(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[CallRecord, str, str]]:
        out = []
        for row in self._rows(_PG_FIND_CALLS, [_json(pairs)]):
            values = dict(zip(CALL_READ, row, strict=False))
            values["hold"] = from_micros(values["hold"])
            for name in ("authorized_at", "started_at", "last_seen_at"):
                values[name] = _aware(values[name])
            out.append((call_from(values), row[len(CALL_READ)], row[len(CALL_READ) + 1]))
        return out

    def legs(self, triples: Sequence[tuple[str, int, str]]) -> list[tuple[LegKey, StoredLeg]]:
        out = []
        for row in self._rows(_PG_FIND_LEGS, [_json(triples)]):
            (
                cdr_id,
                client_id,
                duration,
                cost,
                closed_by,
                corrected_at,
                called,
                rated_at,
                live_uid,
                nas_key,
                epoch,
                acct_session_id,
                conf_id,
                origin,
                tags,
                once,
                stopped_at,
            ) = row  # the columns of _PG_FIND_LEGS, in its order
            leg = StoredLeg(
                id=cdr_id,
                client_id=client_id,
                duration=duration,
                cost=from_micros(cost),
                closed_by=closed_by,
                corrected=corrected_at is not None,
                called=called,
                rated_at=rated_at.replace(tzinfo=UTC),
                call_live_uid=live_uid,
                stopped_at=stopped_at.replace(tzinfo=UTC),
                once=once,
            )
            out.append(((nas_key, epoch, acct_session_id, conf_id, origin, tags), leg))
        return out

    def _next(self, table_name: str, count: int) -> list[int]:
        rows = self._rows(
            f"SELECT nextval(pg_get_serial_sequence('{table_name}', 'id')) "
            "FROM generate_series(1, %s)",
            [count],
        )
        return [int(value) for (value,) in rows]

    def call_ids(self, count: int) -> list[int]:
        return self._next("calls", count)

    def cdr_ids(self, count: int) -> list[int]:
        return self._next("cdrs", count)

    def insert_events(self, rows: Sequence[Row]) -> None:
        # the attributes go in the document as JSON, and a JSON value read into a text
        # column is its text as written: encoded once, not escaped into a string again
        self._run(_PG_EVENTS, [_json(rows)])

    def insert_calls(self, rows: Sequence[Row]) -> None:
        self._run(_PG_CALLS, [_json(rows)])

    def insert_keys(self, rows: Sequence[tuple[int, str, str]]) -> None:
        self._run(_PG_KEYS, [_json(rows)])

    def update_calls(self, columns: tuple[str, ...], rows: Sequence[Row]) -> None:
        self._run(_pg_update_calls(columns), [_json(rows), _json([row["id"] for row in rows])])

    def delete_calls(self, ids: Sequence[int]) -> None:
        # their call_keys go with them (ON DELETE CASCADE)
        self._run(
            f"DELETE FROM calls WHERE id = {_ids('int8')}",
            [_json(ids)],
        )

    def insert_cdrs(self, rows: Sequence[Row]) -> int:
        return len(self._rows(_PG_CDRS, [_json(rows)]))

    def correct_cdrs(self, rows: Sequence[Row]) -> None:
        self._run(_PG_CORRECT, [_json(rows), _json([row["id"] for row in rows])])

    def insert_charges(self, rows: Sequence[Row]) -> None:
        self._run(_PG_CHARGES, [_json(rows)])

    def move_balances(self, moves: dict[int, Decimal]) -> dict[int, int]:
        rows = self._rows(
            _PG_MOVE_BALANCES, [_json([(c, to_micros(moves[c])) for c in sorted(moves)])]
        )
        return {int(client_id): int(seq) for client_id, seq in rows}


# --- SQLite (SQLAlchemy Core) ----------------------------------------------------------------
class _CoreStatements:
    def __init__(self) -> None:
        ignore = sqlite.insert
        self.find_calls = (
            select(calls_t, call_keys_t.c.nas_key.label("k_nas"), call_keys_t.c.key.label("k_key"))
            .join(call_keys_t, call_keys_t.c.call_id == calls_t.c.id)
            .where(
                tuple_(call_keys_t.c.nas_key, call_keys_t.c.key).in_(
                    bindparam("pairs", expanding=True)
                )
            )
            .order_by(calls_t.c.id)
        )
        self.find_legs = (
            select(cdrs_t, calls_t.c.live_uid)
            .outerjoin(calls_t, calls_t.c.id == cdrs_t.c.call_id)
            .where(
                tuple_(cdrs_t.c.nas_key, cdrs_t.c.epoch, cdrs_t.c.acct_session_id).in_(
                    bindparam("triples", expanding=True)
                )
            )
            .order_by(cdrs_t.c.id)
        )
        self.epochs = select(
            nas_epochs_t.c.nas_key, nas_epochs_t.c.epoch, nas_epochs_t.c.changed_at
        ).where(nas_epochs_t.c.nas_key.in_(bindparam("keys", expanding=True)))
        self.add_keys = ignore(call_keys_t).on_conflict_do_nothing()
        self.store_legs = ignore(cdrs_t).on_conflict_do_nothing().returning(cdrs_t.c.id)
        self.end_calls = delete(calls_t).where(calls_t.c.id.in_(bindparam("ids", expanding=True)))
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
        self.balances = select(live_t.c.client_id, live_t.c.seq).where(
            live_t.c.client_id.in_(bindparam("ids", expanding=True))
        )
        self.move_balance = (
            update(live_t)
            .where(live_t.c.client_id == bindparam("b_client"))
            .values(
                balance=live_t.c.balance + bindparam("b_micros", type_=BigInteger()),
                seq=live_t.c.seq + 1,
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
        rows = self.conn.execute(self.sql.find_calls, {"pairs": list(pairs)})
        return [
            (
                call_from(row._mapping),
                row.k_nas,
                row.k_key,
            )
            for row in rows
        ]

    def legs(self, triples: Sequence[tuple[str, int, str]]) -> list[tuple[LegKey, StoredLeg]]:
        rows = self.conn.execute(self.sql.find_legs, {"triples": list(triples)})
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
        self.conn.execute(self.sql.end_calls, {"ids": list(ids)})

    def insert_cdrs(self, rows: Sequence[Row]) -> int:
        return len(list(self.conn.execute(self.sql.store_legs, list(rows))))

    def correct_cdrs(self, rows: Sequence[Row]) -> None:
        self.conn.execute(
            self.sql.correct,
            [
                {"cdr_id": row["id"], **{f"v_{c}": row[c] for c, _ in CORRECTION_COLUMNS[1:]}}
                for row in rows
            ],
        )

    def insert_charges(self, rows: Sequence[Row]) -> None:
        self.conn.execute(insert(transactions_t), list(rows))

    def move_balances(self, moves: dict[int, Decimal]) -> dict[int, int]:
        # SQLite: the write transaction is BEGIN IMMEDIATE, so the rows read here stay as read
        ids = sorted(moves)
        present = {
            row.client_id: int(row.seq)
            for row in self.conn.execute(self.sql.balances, {"ids": ids})
        }
        found = [c for c in ids if c in present]
        if found:
            self.conn.execute(
                self.sql.move_balance,
                [{"b_client": c, "b_micros": to_micros(moves[c])} for c in found],
            )
        missing = [
            {"client_id": c, "balance": moves[c], "seq": 1, "applied": 0}
            for c in ids
            if c not in present
        ]
        if missing:
            self.conn.execute(insert(live_t), missing)
        return {c: present[c] + 1 if c in present else 1 for c in ids}
