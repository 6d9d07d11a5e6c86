"""The accounting transaction's bulk reads and writes on PostgreSQL (``bulk.Bulk``).

Statements of constant text whose rows travel as one JSON document (``json_to_recordset``):
psycopg parses such a statement once and PostgreSQL prepares it once; a multi-row
``VALUES`` or an expanded ``IN`` list would be new text for every batch size, parsed again
each time (psycopg's parser then cost more than the rest of the batch), and arrays are
dumped by psycopg element by element in Python where orjson encodes a whole batch in C.
Values are converted here as the models' column types would (money in micro-units, times
as UTC). The statements run on the driver's own cursor (SQLAlchemy's result
machinery cost as much as the driver), with errors translated and a broken connection
invalidated as SQLAlchemy would. The columns written are the tables' own (``_columns``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import BigInteger, Boolean, Column, Connection, Integer, String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from billing_core.domain.money import from_micros, to_micros
from billing_core.ports import CallRecord, StoredLeg

from .bulk import CALL_READ, CORRECTED, LegKey, Row, aware
from .models import MoneyType, UTCDateTime
from .tables import acct_events_t, calls_t, cdrs_t, transactions_t


def _pg_type(column: Column[Any]) -> str:
    """The type of a column in a ``json_to_recordset`` record: money is BIGINT micro-units
    underneath, times naive UTC."""
    kind = column.type
    if isinstance(kind, MoneyType):
        return "int8"
    if isinstance(kind, UTCDateTime):
        return "timestamptz"  # orjson writes the offset; the column takes it AT TIME ZONE 'UTC'
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, String):
        return "text"
    raise TypeError(f"no JSON record type for {column}")


def _columns(
    table: Table, *, only: Sequence[str] = (), without: Sequence[str] = ()
) -> tuple[tuple[str, str], ...]:
    """(name, record type) of the columns written: the table's, ``only`` these (in this
    order) or ``without`` those."""
    chosen = [table.c[name] for name in only] if only else list(table.columns)
    return tuple((c.name, _pg_type(c)) for c in chosen if c.name not in without)


# the columns written, and their PostgreSQL types (for the records)
EVENT_COLUMNS = _columns(acct_events_t, without=("id",))  # the database numbers them
CALL_COLUMNS = _columns(calls_t)
CALL_TYPES = dict(CALL_COLUMNS)
CDR_COLUMNS = _columns(cdrs_t)
CORRECTION_COLUMNS = _columns(cdrs_t, only=("id", *CORRECTED))
# the ledger's rows of calls: numbered by the database, invoiced later by billingctl
CHARGE_COLUMNS = _columns(transactions_t, without=("id", "invoice_id"))


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
    if isinstance(value, Decimal):  # every Decimal written here is money: micro-units
        return to_micros(value)
    raise TypeError(f"not written by PgBulk: {type(value).__name__}")


def _json(rows: Sequence[Any]) -> str:
    """A batch as one JSON document: C-encoded here, C-decoded by PostgreSQL (an array per
    column would be dumped element by element in Python). Times in orjson's own format, in
    C: ISO 8601 with their offset (a naive one taken as UTC), read as ``timestamptz`` and
    stored as UTC (``_value``); a Python ``default`` per time cost 2% of the server's CPU."""
    return orjson.dumps(rows, default=_to_json, option=orjson.OPT_NAIVE_UTC).decode()


def _record(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns)


def _value(name: str, kind: str) -> str:
    """A record's column as its table column takes it: times as naive UTC."""
    return f"(v.{name} AT TIME ZONE 'UTC')" if kind == "timestamptz" else f"v.{name}"


def _insert_sql(table_name: str, columns: Sequence[tuple[str, str]], tail: str = "") -> str:
    names = ", ".join(name for name, _ in columns)
    values = ", ".join(_value(name, kind) for name, kind in columns)
    return (
        f"INSERT INTO {table_name} ({names}) SELECT {values} "
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
    "cost = v.cost, corrected_at = (v.corrected_at AT TIME ZONE 'UTC') "
    f"FROM json_to_recordset(%s::json) AS v({_record(CORRECTION_COLUMNS)}) "
    f"WHERE d.id = v.id AND d.id = {_ids('int8')}"
)
# domain.live_balance.moved in one statement: the balance moves by the amount and the live
# sequence by one; a client without a row gets one (at sequence 1). Rows taken in client
# order (the document is sorted): two transactions never wait on each other's balances
# crosswise
_PG_MOVE_BALANCES = (
    "INSERT INTO live_balances AS l (client_id, balance, seq, applied) "
    "SELECT (v->>0)::int4, (v->>1)::int8, 1, 0 FROM json_array_elements(%s::json) AS v "
    "ON CONFLICT (client_id) DO UPDATE SET balance = l.balance + excluded.balance, "
    "seq = l.seq + 1 RETURNING l.client_id, l.seq"
)


_PG_DELETE_CALLS = (
    f"WITH k AS (DELETE FROM call_keys WHERE call_id = {_ids('int8')}) "
    f"DELETE FROM calls WHERE id = {_ids('int8')}"
)


def _pg_update_calls(columns: tuple[str, ...]) -> str:
    typed = [("id", "int8"), *((name, CALL_TYPES[name]) for name in columns)]
    sets = ", ".join(f"{name} = {_value(name, CALL_TYPES[name])}" for name in columns)
    return (
        f"UPDATE calls AS c SET {sets} FROM json_to_recordset(%s::json) AS v({_record(typed)}) "
        f"WHERE c.id = v.id AND c.id = {_ids('int8')}"
    )


_KEY_AT = len(CALL_READ) + 1  # the matched key's column in _PG_FIND_CALLS (its NAS before it)
_HOLD_AT = CALL_READ.index("hold")
_TIMES_AT = tuple(CALL_READ.index(n) for n in ("authorized_at", "started_at", "last_seen_at"))
# CallRecord's fields before ``keys``, by their column in CALL_READ; ``tags`` comes after
_ORDER = tuple(CALL_READ.index(f.name) for f in fields(CallRecord)[:-2])
_TAGS_AT = CALL_READ.index("tags")
_NEW_CALL: Callable[..., CallRecord] = CallRecord  # positional: the row's values in _ORDER


def _call_record(row: Sequence[Any], keys: frozenset[str]) -> CallRecord:
    """A call from a row of _PG_FIND_CALLS, as domain values (money, aware UTC times)."""
    values = list(row[: len(CALL_READ)])
    values[_HOLD_AT] = from_micros(values[_HOLD_AT])
    for at in _TIMES_AT:
        values[at] = aware(values[at])
    return _NEW_CALL(*[values[at] for at in _ORDER], keys, values[_TAGS_AT])


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
        return [(key, int(epoch), aware(at)) for key, epoch, at in rows]

    def calls(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[CallRecord, str, str]]:
        # a call comes once per identifier it matched (rows in id order): one CallRecord per
        # call, built positionally with every identifier it matched, shared by its rows
        rows = self._rows(_PG_FIND_CALLS, [_json(pairs)])
        keys: dict[int, set[str]] = {}
        for row in rows:
            keys.setdefault(row[0], set()).add(row[_KEY_AT])
        out = []
        record: CallRecord | None = None
        for row in rows:
            if record is None or record.id != row[0]:
                record = _call_record(row, frozenset(keys[row[0]]))
            out.append((record, row[_KEY_AT - 1], row[_KEY_AT]))
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
        # their call_keys with them, in the same statement
        doc = _json(ids)
        self._run(_PG_DELETE_CALLS, [doc, doc])

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
