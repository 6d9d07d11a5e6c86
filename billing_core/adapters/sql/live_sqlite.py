"""The embedded default's live state (SQLite, no Redis): ``SqlLiveState``'s check-and-hold,
made cheap. The profile (BENCHMARKS.md) showed one write transaction per Access-Request,
each ending in an fsync of the WAL on the single database thread, and SQLAlchemy's
statement machinery taking most of the CPU that was left.

Here the requests that arrive while the database thread is busy are decided together in
one ``BEGIN IMMEDIATE`` transaction (one commit, one fsync, for the whole batch), each one
on the writes of those before it, with the same SQL as ``SqlLiveState`` run on the raw
``sqlite3`` connection. Nothing is answered before the batch is committed, so a hold is as
durable as before (a restart or a crash keeps it); every decision reads the database
itself, so a payment or a setting that ``billingctl`` commits counts at the next batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from billing_core.domain.calls import CallMove, CallState, state_after
from billing_core.domain.model import RejectReason
from billing_core.domain.money import ZERO, from_micros, to_micros
from billing_core.domain.policy import Accept, Decision, LiveSnapshot, Reject, decide
from billing_core.errors import Unavailable
from billing_core.ports import HoldRequest

from .live import SqlLiveState

_LOCKED = "SELECT locked_until FROM auth_failures WHERE account_id = ?"
_BALANCE = "SELECT balance FROM live_balances WHERE client_id = ?"
_NEW_BALANCE = "INSERT INTO live_balances (client_id, balance) VALUES (?, 0) ON CONFLICT DO NOTHING"
_HELD = (
    "SELECT sum(hold), count(*) FROM calls WHERE client_id = ? AND (state = ?"
    " OR (state = ? AND hold_expires_at > ?)) AND id != ?"
)
_UPDATE_OWN = (
    "UPDATE calls SET hold = ?, granted_seconds = ?, hold_expires_at = ?, authorized_at = ?"
    " WHERE id = ?"
)
_INSERT_CALL = (
    "INSERT INTO calls (client_id, account_id, nas_key, acct_session_id, called, live_uid,"
    " state, max_session_time, charged, epoch, accounted, conf_id, origin, tags,"
    " hold, granted_seconds, hold_expires_at, authorized_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, '', '', '', ?, ?, ?, ?)"
)
_INSERT_KEY = "INSERT OR IGNORE INTO call_keys (call_id, nas_key, key) VALUES (?, ?, ?)"
_DELETE_OWN_KEYS = "DELETE FROM call_keys WHERE call_id = ?"
_DELETE_OWN = "DELETE FROM calls WHERE id = ?"
_ACTIVE = CallState.ACTIVE.value
_HELD_STATE = CallState.HELD.value
_AUTHORIZED = state_after(CallMove.AUTHORIZED).value


def _stamp(moment: datetime) -> str:
    """A moment as SQLAlchemy stores a UTC timestamp column on SQLite (naive UTC, always
    with microseconds), so that comparisons in SQL see one format."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")  # strftime: 3× the CPU


def _own_call_sql(keys: int) -> str:
    marks = ", ".join("?" * keys)
    return (
        "SELECT calls.id FROM calls JOIN call_keys ON call_keys.call_id = calls.id"
        f" WHERE call_keys.nas_key = ? AND call_keys.key IN ({marks})"
        " AND calls.account_id = ? AND calls.called = ? LIMIT 1"
    )


class SqliteLiveState(SqlLiveState):
    """``SqlLiveState`` on SQLite, with check-and-hold batched (``authorize_many``) on a raw
    connection of the engine's pool, kept for the process's life."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._raw: Any = None  # the pool's DBAPI connection (its pragmas set by db.py)
        self._guard = threading.Lock()

    def authorize(self, request: HoldRequest) -> Decision:
        return self.authorize_many([request])[0]

    def authorize_many(self, requests: Sequence[HoldRequest]) -> list[Decision]:
        """Every request's decision, in order, each on the holds of those before it, all
        committed in one transaction before any is returned. An error fails them all."""
        with self._guard:
            conn = self._connection()
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                decisions = [self._authorize_one(cursor, request) for request in requests]
                cursor.execute("COMMIT")
            except BaseException as exc:
                self._abandon(conn)
                if isinstance(exc, sqlite3.OperationalError):  # as SQLAlchemy takes it
                    raise Unavailable("database") from exc
                raise
            finally:
                cursor.close()
            return decisions

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def _abandon(self, conn: Any) -> None:
        """After an error: roll back; a connection that cannot is closed (the next batch
        takes a new one)."""
        try:
            if conn.in_transaction:
                conn.rollback()
        except sqlite3.Error:
            self._raw = None
            with contextlib.suppress(Exception):  # a broken connection may refuse even this
                conn.invalidate()

    def _authorize_one(self, cursor: sqlite3.Cursor, request: HoldRequest) -> Decision:
        client_id = request.terms.client.id
        if request.lock_check and self._is_locked(cursor, request.account_id, request.now):
            return Reject(RejectReason.LOCKED_OUT)
        balance = self._read_balance(cursor, client_id)
        own = self._find_own(cursor, request) if request.identifiers else None
        now = _stamp(request.now)
        held, count = cursor.execute(
            _HELD, (client_id, _ACTIVE, _HELD_STATE, now, own or 0)
        ).fetchone()
        snapshot = LiveSnapshot(balance, from_micros(held) if held is not None else ZERO, count)
        decision = decide(request.terms, snapshot)
        if request.terms.rate is None:  # authentication only: nothing held
            return decision
        if isinstance(decision, Accept):
            grant = (
                to_micros(decision.hold),
                decision.grant_seconds,
                _stamp(request.now + timedelta(seconds=request.hold_seconds)),
                now,
            )
            if own is not None:
                cursor.execute(_UPDATE_OWN, (*grant, own))
            else:
                self._new_call(cursor, request, grant)
        elif own is not None:
            cursor.execute(_DELETE_OWN_KEYS, (own,))
            cursor.execute(_DELETE_OWN, (own,))
        return decision

    @staticmethod
    def _new_call(cursor: sqlite3.Cursor, request: HoldRequest, grant: tuple[Any, ...]) -> None:
        cursor.execute(
            _INSERT_CALL,
            (
                request.terms.client.id,
                request.account_id,
                request.nas_key,
                request.acct_session_id,
                request.called,
                request.uid,
                _AUTHORIZED,
                *grant,
            ),
        )
        call_id = cursor.lastrowid
        if request.identifiers:  # the call's names, for a repeated request
            cursor.executemany(
                _INSERT_KEY, [(call_id, request.nas_key, key) for key in request.identifiers]
            )

    @staticmethod
    def _is_locked(cursor: sqlite3.Cursor, account_id: int, now: datetime) -> bool:
        row = cursor.execute(_LOCKED, (account_id,)).fetchone()
        if row is None or row[0] is None:
            return False
        return datetime.fromisoformat(row[0]).replace(tzinfo=UTC) > now

    @staticmethod
    def _read_balance(cursor: sqlite3.Cursor, client_id: int) -> Any:
        row = cursor.execute(_BALANCE, (client_id,)).fetchone()
        if row is None:
            cursor.execute(_NEW_BALANCE, (client_id,))
            return ZERO
        return from_micros(row[0])

    @staticmethod
    def _find_own(cursor: sqlite3.Cursor, request: HoldRequest) -> int | None:
        keys = request.identifiers
        row = cursor.execute(
            _own_call_sql(len(keys)),
            (request.nas_key, *keys, request.account_id, request.called),
        ).fetchone()
        return None if row is None else int(row[0])
