"""The events log, low-balance notification state and the mail queue, on SQL.

- ``write_event`` adds one entry to the events log in the caller's transaction (the
  transaction of its cause); an event that must be written once per cause gives a
  ``dedupe`` key, unique in the table. ``record_event`` does the same in a transaction of
  its own (for a cause with no transaction: a lockout, a rebuilt live state).
- ``check_notifications`` moves each client's notification state with conditional UPDATEs
  (billing_core.domain.notifications decides the step); the event or the queued e-mail of a
  notification that fires is written in the same transaction as the UPDATE that fired it.
- The mail queue is claimed row by row (``queued`` -> ``sending``) before the SMTP
  conversation, so no two processes, and no restart, send one message twice.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.domain.events import EVENT_KINDS
from billing_core.domain.notifications import (
    LowBalance,
    NotifyState,
    Transition,
    detail,
    message,
    transition,
)
from billing_core.errors import NotFoundError
from billing_core.ports import LiveView

from .tables import clients_t, events_t, mail_t, notify_state_t, utcnow

_source = "billingctl"


def set_event_source(source: str) -> None:
    """Name this process in the events it writes (the daemon counts its own)."""
    global _source  # noqa: PLW0603 - one name per process, set once at start
    _source = source[:64]


def event_source() -> str:
    return _source


def daemon_source() -> str:
    return f"radiusd:{socket.gethostname()}:{os.getpid()}"[:64]


def _ignore_conflicts(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# --- events ------------------------------------------------------------------------------------
def write_event(
    conn: Connection,
    kind: str,
    *,
    client_id: int | None = None,
    client_name: str | None = None,
    nas_key: str | None = None,
    detail: Mapping[str, Any] | None = None,
    dedupe: str | None = None,
    at: datetime | None = None,
) -> bool:
    """One entry in ``conn``'s transaction; False when its ``dedupe`` key is already there."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    if client_name is None and client_id is not None:
        client_name = conn.execute(
            select(clients_t.c.name).where(clients_t.c.id == client_id)
        ).scalar_one_or_none()
    values = {
        "at": at or utcnow(),
        "kind": kind,
        "client_id": client_id,
        "client_name": client_name,
        "nas_key": nas_key,
        "detail": json.dumps(dict(detail or {}), sort_keys=True, default=str),
        "source": _source,
        "dedupe": None if dedupe is None else dedupe[:255],
    }
    if dedupe is None:
        conn.execute(insert(events_t).values(**values))
        return True
    done = conn.execute(
        _ignore_conflicts(conn)(events_t)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(events_t.c.id)
    ).all()
    return bool(done)


def record_event(engine: Engine, kind: str, **fields: Any) -> bool:
    """``write_event`` in a transaction of its own (a lockout, a rebuilt live state)."""
    with engine.begin() as conn:
        return write_event(conn, kind, **fields)


def list_events(
    engine: Engine,
    *,
    client: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The latest events first."""
    with engine.connect() as conn:
        query = select(events_t).order_by(events_t.c.id.desc())
        if client is not None:
            found = conn.execute(
                select(clients_t.c.id).where(
                    or_(
                        clients_t.c.name == client,
                        clients_t.c.id == (int(client) if client.isdigit() else -1),
                    )
                )
            ).scalar_one_or_none()
            if found is None:
                by_name = conn.execute(
                    select(events_t.c.id).where(events_t.c.client_name == client).limit(1)
                ).first()
                if by_name is None:
                    raise NotFoundError(f"no client named {client!r}")
                query = query.where(events_t.c.client_name == client)
            else:
                query = query.where(events_t.c.client_id == found)
        if kind is not None:
            query = query.where(events_t.c.kind == kind)
        if since is not None:
            query = query.where(events_t.c.at >= since)
        if limit:
            query = query.limit(limit)
        return [
            {
                "id": row.id,
                "at": row.at.isoformat(),
                "kind": row.kind,
                "client": row.client_name,
                "client_id": row.client_id,
                "nas": row.nas_key,
                "detail": json.loads(row.detail),
            }
            for row in conn.execute(query)
        ]


def events_written_since(
    engine: Engine, source: str, after_id: int | None
) -> tuple[dict[str, int], int]:
    """The events ``source`` wrote after ``after_id``, counted by kind, and the last id
    (``after_id`` None: nothing counted, the current last id)."""
    with engine.connect() as conn:
        if after_id is None:
            last = conn.execute(select(func.max(events_t.c.id))).scalar_one_or_none()
            return {}, int(last or 0)
        counts: dict[str, int] = {}
        last_id = after_id
        for kind, count, highest in conn.execute(
            select(events_t.c.kind, func.count(), func.max(events_t.c.id))
            .where(events_t.c.source == source, events_t.c.id > after_id)
            .group_by(events_t.c.kind)
        ):
            counts[kind] = int(count)
            last_id = max(last_id, int(highest))
        return counts, last_id


# --- notifications -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fired:
    client_id: int
    kind: str  # client | admin


def clients_with_notifications(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(clients_t.c.id).where(
                    or_(
                        clients_t.c.notify_client_below.is_not(None),
                        clients_t.c.notify_admin_below.is_not(None),
                    )
                )
            ).scalars()
        )


def check_notifications(
    engine: Engine,
    views: Mapping[int, LiveView],
    *,
    mail_enabled: bool,
    now: datetime | None = None,
) -> list[Fired]:
    """Move the notification state of the clients in ``views`` (their live balance and
    holds, as the live state has them); the notifications that fired here."""
    now = now or utcnow()
    fired: list[Fired] = []
    if not views:
        return fired
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(clients_t).where(
                    clients_t.c.id.in_(list(views)),
                    or_(
                        clients_t.c.notify_client_below.is_not(None),
                        clients_t.c.notify_admin_below.is_not(None),
                    ),
                )
            )
        )
        known = {
            (r.client_id, r.kind): NotifyState(bool(r.armed), r.low_available)
            for r in conn.execute(
                select(notify_state_t).where(notify_state_t.c.client_id.in_([r.id for r in rows]))
            )
        }
    for row in rows:
        view = views[row.id]
        for kind, threshold in (
            ("client", row.notify_client_below),
            ("admin", row.notify_admin_below),
        ):
            if threshold is None:
                continue
            low = LowBalance(
                client=row.name,
                currency=row.currency,
                live_balance=view.balance,
                credit=row.credit,
                held=view.held,
                threshold=threshold,
            )
            state = known.get((row.id, kind), NotifyState(True, None))
            if transition(state, threshold, low.available, low.funds) is Transition.NONE:
                continue  # nothing to change as last read: no transaction (a sweep's usual case)
            with engine.begin() as conn:
                if _step(conn, row, kind, low, now, mail_enabled=mail_enabled):
                    fired.append(Fired(row.id, kind))
    return fired


def _state(conn: Connection, client_id: int, kind: str) -> NotifyState:
    conn.execute(
        _ignore_conflicts(conn)(notify_state_t)
        .values(client_id=client_id, kind=kind, armed=True)
        .on_conflict_do_nothing()
    )
    row = conn.execute(
        select(notify_state_t.c.armed, notify_state_t.c.low_available).where(
            notify_state_t.c.client_id == client_id, notify_state_t.c.kind == kind
        )
    ).one()
    return NotifyState(bool(row.armed), row.low_available)


def _step(
    conn: Connection, row: Any, kind: str, low: LowBalance, now: datetime, *, mail_enabled: bool
) -> bool:
    """One transition, applied only if the state is still the one it was decided on. True
    when the notification fired here."""
    state = _state(conn, row.id, kind)
    step = transition(state, low.threshold, low.available, low.funds)
    this = and_(notify_state_t.c.client_id == row.id, notify_state_t.c.kind == kind)
    if step is Transition.FIRE:
        done = conn.execute(
            update(notify_state_t)
            .where(this, notify_state_t.c.armed.is_(True))
            .values(armed=False, fired_at=now, low_available=low.available)
        )
        if done.rowcount != 1:
            return False  # another process fired it first
        _deliver(conn, row, kind, low, now, mail_enabled=mail_enabled)
        return True
    if step is Transition.REARM:
        conn.execute(
            update(notify_state_t)
            .where(
                this,
                notify_state_t.c.armed.is_(False),
                or_(
                    notify_state_t.c.low_available.is_(None),
                    notify_state_t.c.low_available < low.available,
                ),
            )
            .values(armed=True, rearmed_at=now, low_available=None)
        )
    elif step is Transition.LOWER:
        conn.execute(
            update(notify_state_t)
            .where(
                this,
                notify_state_t.c.armed.is_(False),
                or_(
                    notify_state_t.c.low_available.is_(None),
                    notify_state_t.c.low_available > low.available,
                ),
            )
            .values(low_available=low.available)
        )
    return False


def _deliver(
    conn: Connection, row: Any, kind: str, low: LowBalance, now: datetime, *, mail_enabled: bool
) -> None:
    figures = detail(low)
    if kind == "admin":
        write_event(conn, "low_balance", client_id=row.id, client_name=row.name, detail=figures)
        return
    if not mail_enabled:
        return  # [smtp] host empty: no e-mail (README)
    if not row.billing_email:
        write_event(
            conn,
            "notification_failed",
            client_id=row.id,
            client_name=row.name,
            detail={**figures, "error": "the client has no billing e-mail"},
        )
        return
    subject, body = message(low)
    queue_mail(conn, row.id, row.name, row.billing_email, subject, body, now)


# --- the mail queue ----------------------------------------------------------------------------
def queue_mail(
    conn: Connection,
    client_id: int | None,
    client_name: str | None,
    to_addr: str,
    subject: str,
    body: str,
    now: datetime,
) -> int:
    return int(
        conn.execute(
            insert(mail_t)
            .values(
                created_at=now,
                client_id=client_id,
                client_name=client_name,
                to_addr=to_addr,
                subject=subject[:256],
                body=body,
                status="queued",
                attempts=0,
                next_attempt_at=now,
            )
            .returning(mail_t.c.id)
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Mail:
    id: int
    client_id: int | None
    client_name: str | None
    to_addr: str
    subject: str
    body: str
    attempts: int
    created_at: datetime


def claim_mail(engine: Engine, now: datetime, *, limit: int = 20) -> list[Mail]:
    """Due messages, each claimed (``queued`` -> ``sending``) by a conditional UPDATE: a
    message claimed here is sent by no other process, and not again after a restart."""
    with engine.connect() as conn:
        due = list(
            conn.execute(
                select(mail_t)
                .where(mail_t.c.status == "queued", mail_t.c.next_attempt_at <= now)
                .order_by(mail_t.c.id)
                .limit(limit)
            )
        )
    claimed: list[Mail] = []
    for row in due:
        with engine.begin() as conn:
            done = conn.execute(
                update(mail_t)
                .where(mail_t.c.id == row.id, mail_t.c.status == "queued")
                .values(status="sending", claimed_at=now)
            )
        if done.rowcount == 1:
            claimed.append(
                Mail(
                    row.id,
                    row.client_id,
                    row.client_name,
                    row.to_addr,
                    row.subject,
                    row.body,
                    row.attempts,
                    row.created_at,
                )
            )
    return claimed


def mail_sent(engine: Engine, mail: Mail, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(mail_t)
            .where(mail_t.c.id == mail.id, mail_t.c.status == "sending")
            .values(status="sent", sent_at=now, attempts=mail.attempts + 1, last_error=None)
        )


def mail_retry(engine: Engine, mail: Mail, error: str, at: datetime) -> None:
    """A temporary failure (server down, 4xx): queued again for ``at``."""
    with engine.begin() as conn:
        conn.execute(
            update(mail_t)
            .where(mail_t.c.id == mail.id, mail_t.c.status == "sending")
            .values(
                status="queued",
                attempts=mail.attempts + 1,
                next_attempt_at=at,
                claimed_at=None,
                last_error=error[:2000],
            )
        )


def mail_failed(engine: Engine, mail: Mail, error: str, now: datetime) -> bool:
    """A permanent failure (5xx, or given up): failed, with a notification_failed event in
    the same transaction. False when the message was no longer being sent."""
    with engine.begin() as conn:
        done = conn.execute(
            update(mail_t)
            .where(mail_t.c.id == mail.id, mail_t.c.status == "sending")
            .values(status="failed", attempts=mail.attempts + 1, last_error=error[:2000])
        )
        if done.rowcount != 1:
            return False
        write_event(
            conn,
            "notification_failed",
            client_id=mail.client_id,
            client_name=mail.client_name,
            detail={"mail_id": mail.id, "to": mail.to_addr, "error": error[:500]},
        )
    return True


def fail_interrupted(engine: Engine, before: datetime) -> int:
    """Messages claimed before ``before`` and never finished (the sender died mid-way): it
    is unknown whether the SMTP server took them, so they are marked failed, never sent
    again (a message is sent at most once). Returns how many."""
    with engine.connect() as conn:
        stuck = list(
            conn.execute(
                select(mail_t).where(mail_t.c.status == "sending", mail_t.c.claimed_at < before)
            )
        )
    count = 0
    for row in stuck:
        mail = Mail(
            row.id,
            row.client_id,
            row.client_name,
            row.to_addr,
            row.subject,
            row.body,
            row.attempts,
            row.created_at,
        )
        if mail_failed(engine, mail, "interrupted while sending: not sent again", utcnow()):
            count += 1
    return count


def list_mail(
    engine: Engine, *, client: str | None = None, status: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(mail_t).order_by(mail_t.c.id.desc())
        if client is not None:
            query = query.where(
                or_(
                    mail_t.c.client_name == client,
                    mail_t.c.client_id == (int(client) if client.isdigit() else -1),
                )
            )
        if status is not None:
            # a message being sent right now is still queued, as far as the operator sees
            statuses = ("queued", "sending") if status == "queued" else (status,)
            query = query.where(mail_t.c.status.in_(statuses))
        if limit:
            query = query.limit(limit)
        return [
            {
                "id": row.id,
                "created_at": row.created_at.isoformat(),
                "client": row.client_name,
                "to": row.to_addr,
                "subject": row.subject,
                "status": "queued" if row.status == "sending" else row.status,
                "attempts": row.attempts,
                "next_attempt_at": row.next_attempt_at.isoformat()
                if row.status == "queued"
                else None,
                "sent_at": None if row.sent_at is None else row.sent_at.isoformat(),
                "last_error": row.last_error,
            }
            for row in conn.execute(query)
        ]


def backoff(attempts: int, base: float, cap: float) -> timedelta:
    """The wait before attempt ``attempts + 1``: base, 2 base, 4 base ... at most cap."""
    return timedelta(seconds=min(cap, base * (2 ** min(attempts, 30))))


class SqlNotificationLog:
    """``NotificationLog`` on the database: the functions above on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def clients_with_notifications(self) -> set[int]:
        return clients_with_notifications(self._engine)

    def check(self, views: Mapping[int, LiveView], *, mail_enabled: bool) -> list[Fired]:
        return check_notifications(self._engine, views, mail_enabled=mail_enabled)

    def events_written_since(self, source: str, after_id: int | None) -> tuple[dict[str, int], int]:
        return events_written_since(self._engine, source, after_id)
