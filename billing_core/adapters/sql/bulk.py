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
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Connection

from billing_core.ports import CallRecord, StoredLeg

from .tables import calls_t

LegKey = tuple[str, int, str, str, str, str]  # nas_key, epoch, session id, conf_id, origin, tags
Row = dict[str, Any]
#: The columns of a CDR a correction changes (besides its id).
CORRECTED = ("duration", "billed_duration", "cost", "corrected_at")


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
    from .bulk_pg import PgBulk
    from .bulk_sqlite import SqliteBulk

    return PgBulk(conn) if conn.dialect.name == "postgresql" else SqliteBulk(conn)


def aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


_RECORD_FIELDS = frozenset(f.name for f in fields(CallRecord))
#: The columns of a call that make its ``CallRecord``.
CALL_READ: tuple[str, ...] = tuple(c.name for c in calls_t.columns if c.name in _RECORD_FIELDS)


def call_from(values: Mapping[Any, Any], keys: frozenset[str] = frozenset()) -> CallRecord:
    """A call from its columns (CALL_READ), as domain values."""
    return CallRecord(
        **{name: values[name] for name in CALL_READ},
        keys=keys,
    )
