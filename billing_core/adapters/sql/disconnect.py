"""The Disconnect-Request queue (RFC 5176) on SQL.

Whoever decides that calls must end writes one row per call in progress, in the
transaction of the decision: ``billingctl`` when a client is set to stop or deleted or an
account is disabled (the daemon, another process, finds the rows on its next poll), the
daemon for a prepaid call whose Interim-Updates report it past its grant plus
``stale_grace_seconds``. A row is unique per (call, reason). The daemon claims a row
(``queued`` -> ``sending``) before it sends, and records the answer (``ack``, ``nak``
with its Error-Cause, ``timeout``) with its event in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.domain.calls import CallState
from billing_core.ports import WantedDisconnect

from .notify import write_event
from .tables import acct_events_t, calls_t, clients_t, disconnect_t, live_calls_condition

#: Why a call is cut: the status change or the overrun that asked for it.
REASONS: tuple[str, ...] = ("client_stopped", "client_deleted", "account_disabled", "overrun")


def _insert_ignoring(conn: Connection, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(disconnect_t).on_conflict_do_nothing().returning(disconnect_t.c.id)
    # one row a statement, counted by RETURNING (rowcount is not reliable here on every
    # driver); a status change has few calls in progress
    return sum(len(conn.execute(statement, row).all()) for row in rows)


def queue_disconnects(
    conn: Connection,
    reason: str,
    now: datetime,
    *,
    client_id: int | None = None,
    account_id: int | None = None,
) -> int:
    """A row for each call in progress of the client (or the account), in ``conn``'s
    transaction. Returns how many were queued."""
    if reason not in REASONS:
        raise ValueError(f"unknown disconnect reason {reason!r}")
    query = select(calls_t).where(live_calls_condition(now), calls_t.c.accounted.is_(True))
    if client_id is not None:
        query = query.where(calls_t.c.client_id == client_id)
    if account_id is not None:
        query = query.where(calls_t.c.account_id == account_id)
    rows = [_row(call, reason, now) for call in conn.execute(query)]
    return _insert_ignoring(conn, rows)


def _row(call: Any, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "created_at": now,
        "reason": reason,
        "call_id": call.id,
        "client_id": call.client_id,
        "nas_key": call.nas_key,
        "acct_session_id": call.acct_session_id,
        "conf_id": call.conf_id,
        "status": "queued",
    }


def queue_overruns(engine: Engine, now: datetime, grace_seconds: int) -> int:
    """Prepaid calls whose last Interim-Update reports a duration past their grant plus
    ``grace_seconds``: each gets one Disconnect-Request (the switch did not end it)."""
    with engine.begin() as conn:
        query = (
            select(calls_t)
            .join(clients_t, clients_t.c.id == calls_t.c.client_id)
            .where(
                calls_t.c.state == CallState.ACTIVE.value,
                calls_t.c.accounted.is_(True),
                clients_t.c.postpaid.is_(False),
                calls_t.c.granted_seconds.is_not(None),
                calls_t.c.max_session_time > calls_t.c.granted_seconds + grace_seconds,
            )
        )
        rows = [_row(call, "overrun", now) for call in conn.execute(query)]
        return _insert_ignoring(conn, rows)


def requeue_stuck(engine: Engine, before: datetime) -> int:
    """Rows claimed before ``before`` by a sender that died: queued again (a second
    Disconnect-Request for a call is harmless; the NAS answers it with a NAK)."""
    with engine.begin() as conn:
        done = conn.execute(
            update(disconnect_t)
            .where(disconnect_t.c.status == "sending", disconnect_t.c.claimed_at < before)
            .values(status="queued", claimed_at=None)
        )
        return int(done.rowcount)


def claim_disconnects(engine: Engine, now: datetime, *, limit: int = 50) -> list[WantedDisconnect]:
    """Queued rows, each claimed by a conditional UPDATE: sent by one process only."""
    with engine.connect() as conn:
        due = list(
            conn.execute(
                select(disconnect_t)
                .where(disconnect_t.c.status == "queued")
                .order_by(disconnect_t.c.id)
                .limit(limit)
            )
        )
    claimed: list[WantedDisconnect] = []
    for row in due:
        with engine.begin() as conn:
            done = conn.execute(
                update(disconnect_t)
                .where(disconnect_t.c.id == row.id, disconnect_t.c.status == "queued")
                .values(status="sending", claimed_at=now)
            )
            if done.rowcount != 1:
                continue
            attributes = conn.execute(
                select(acct_events_t.c.attributes)
                .where(
                    and_(
                        acct_events_t.c.acct_session_id == row.acct_session_id,
                        acct_events_t.c.nas_key == row.nas_key,
                    )
                )
                .order_by(acct_events_t.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        parsed = json.loads(attributes) if attributes else {}
        claimed.append(
            WantedDisconnect(
                row.id,
                row.reason,
                row.call_id,
                row.client_id,
                row.nas_key,
                row.acct_session_id,
                row.conf_id,
                parsed if isinstance(parsed, dict) else {},
            )
        )
    return claimed


def disconnect_done(
    engine: Engine,
    wanted: WantedDisconnect,
    result: str,
    now: datetime,
    *,
    error_cause: int | None = None,
    nas_name: str = "",
) -> None:
    """Record the answer (``ack``, ``nak``, ``timeout``) and its event in one transaction;
    ``off``: the NAS has no coa_port, nothing was sent and no event is written."""
    with engine.begin() as conn:
        conn.execute(
            update(disconnect_t)
            .where(disconnect_t.c.id == wanted.id)
            .values(status=result, done_at=now, error_cause=error_cause)
        )
        if result == "off":
            return
        detail: dict[str, Any] = {
            "acct_session_id": wanted.acct_session_id,
            "reason": wanted.reason,
            "nas": nas_name,
        }
        if error_cause is not None:
            detail["error_cause"] = error_cause
        write_event(
            conn,
            f"disconnect_{result}",
            client_id=wanted.client_id,
            nas_key=wanted.nas_key,
            detail=detail,
            dedupe=f"disconnect|{wanted.id}",
        )


def list_disconnects(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(row._mapping)
            for row in conn.execute(select(disconnect_t).order_by(disconnect_t.c.id))
        ]


def client_status_changed(
    conn: Connection, client_id: int, client_name: str, old: str, new: str, now: datetime
) -> None:
    """A client set to stop or deleted (by billingctl or load): its event, and a
    Disconnect-Request for each of its calls in progress, in the caller's transaction."""
    if new == old or new not in ("stop", "deleted"):
        return
    reason = "client_stopped" if new == "stop" else "client_deleted"
    queued = queue_disconnects(conn, reason, now, client_id=client_id)
    write_event(
        conn,
        reason,
        client_id=client_id,
        client_name=client_name,
        detail={"from": old, "to": new, "disconnects_queued": queued},
        at=now,
    )


def account_disabled(
    conn: Connection, account_id: int, account_name: str, client_id: int, now: datetime
) -> None:
    """An account disabled: its event, and a Disconnect-Request for each of its calls."""
    queued = queue_disconnects(conn, "account_disabled", now, account_id=account_id)
    write_event(
        conn,
        "account_disabled",
        client_id=client_id,
        detail={"account": account_name, "disconnects_queued": queued},
        at=now,
    )


class SqlDisconnectQueue:
    """``DisconnectQueue`` on the database: the functions above on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def requeue_stuck(self, before: datetime) -> int:
        return requeue_stuck(self._engine, before)

    def queue_overruns(self, now: datetime, grace_seconds: int) -> int:
        return queue_overruns(self._engine, now, grace_seconds)

    def claim(self, now: datetime) -> list[WantedDisconnect]:
        return claim_disconnects(self._engine, now)

    def done(
        self,
        wanted: WantedDisconnect,
        result: str,
        now: datetime,
        *,
        error_cause: int | None = None,
        nas_name: str = "",
    ) -> None:
        disconnect_done(
            self._engine, wanted, result, now, error_cause=error_cause, nas_name=nas_name
        )
