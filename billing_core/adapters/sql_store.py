"""The SQL adapter: catalog source, ledger, and the embedded live state (no Redis).

Works unchanged on PostgreSQL and SQLite. Check-and-hold runs in one transaction that first
locks the client's live-balance row (``FOR UPDATE`` on PostgreSQL; on SQLite every write
transaction is ``BEGIN IMMEDIATE``), so two processes can never hold the same money.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.authorization import Accept, Decision, LiveSnapshot, decide
from billing_core.domain import Account, Client
from billing_core.identification import AccountIndex
from billing_core.money import ZERO
from billing_core.ports import CallRecord, Catalog, ClosedLeg, HoldRequest
from billing_core.rating import Rate, RateTableIndex
from billing_core.sessions import AccountingEvent

from .models import (
    AccountRow,
    AcctEventRow,
    CallKeyRow,
    CallRow,
    CatalogVersion,
    CdrRow,
    ClientRow,
    LiveBalanceRow,
    RateRow,
    Setting,
    TransactionRow,
    table,
)

accounts_t = table(AccountRow)
acct_events_t = table(AcctEventRow)
call_keys_t = table(CallKeyRow)
calls_t = table(CallRow)
catalog_version_t = table(CatalogVersion)
cdrs_t = table(CdrRow)
clients_t = table(ClientRow)
live_t = table(LiveBalanceRow)
rates_t = table(RateRow)
settings_t = table(Setting)
transactions_t = table(TransactionRow)


def utcnow() -> datetime:
    return datetime.now(UTC)


def bump_catalog_version(conn: Connection) -> None:
    conn.execute(
        update(catalog_version_t)
        .where(catalog_version_t.c.id == 1)
        .values(version=catalog_version_t.c.version + 1)
    )


def client_from_row(row: Any) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        status=row.status,
        currency=row.currency,
        locale=row.locale,
        postpaid=bool(row.postpaid),
        credit=row.credit,
        rate_table_id=row.rate_table_id,
        capacity=row.capacity,
        low_balance_threshold=row.low_balance_threshold,
        low_balance_capacity=row.low_balance_capacity,
        bill_events_by=row.bill_events_by,
    )


def live_calls_condition(now: datetime) -> Any:
    """Calls that count: active ones, and held ones whose hold has not lapsed."""
    return or_(
        calls_t.c.state == "active",
        and_(calls_t.c.state == "held", calls_t.c.hold_expires_at > now),
    )


def change_balance(conn: Connection, client_id: int, amount: Decimal) -> None:
    """Move the materialized live balance by ``amount`` (same transaction as the ledger row)."""
    result = conn.execute(
        update(live_t)
        .where(live_t.c.client_id == client_id)
        .values(balance=live_t.c.balance + _money_literal(amount))
    )
    if result.rowcount == 0:
        conn.execute(insert(live_t).values(client_id=client_id, balance=amount))


def _money_literal(amount: Decimal) -> Any:
    # live_balances.balance is BIGINT micro-units underneath; add micro-units
    from sqlalchemy import literal

    from billing_core.money import to_micros

    return literal(to_micros(amount))


def _insert_ignore(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class SqlStore:
    """CatalogSource + LiveState + Ledger on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"

    # --- CatalogSource -----------------------------------------------------------------
    def catalog_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )

    def load_catalog(self) -> Catalog:
        with self.engine.connect() as conn:
            version = int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )
            clients = {row.id: client_from_row(row) for row in conn.execute(select(clients_t))}
            accounts = [
                Account(
                    id=row.id,
                    client_id=row.client_id,
                    name=row.name,
                    ident=row.ident,
                    value=row.value,
                    tech_prefix=row.tech_prefix,
                    password_hash=row.password_hash,
                    enabled=bool(row.enabled),
                )
                for row in conn.execute(select(accounts_t))
            ]
            by_table: dict[int, list[Rate]] = {}
            for row in conn.execute(select(rates_t)):
                by_table.setdefault(row.rate_table_id, []).append(
                    Rate(
                        code=row.code,
                        name=row.name,
                        rate=row.rate,
                        setup_fee=row.setup_fee,
                        min_volume=row.min_volume,
                        interval=row.interval,
                        grace_volume=row.grace_volume,
                        effective_date=row.effective_date,
                        end_date=row.end_date,
                    )
                )
            mcl = conn.execute(
                select(settings_t.c.value).where(settings_t.c.name == "max_call_length")
            ).scalar_one_or_none()
        return Catalog(
            version=version,
            clients=clients,
            accounts=AccountIndex(accounts),
            rate_tables={tid: RateTableIndex(rates) for tid, rates in by_table.items()},
            max_call_length=int(mcl) if mcl is not None else None,
        )

    # --- LiveState (embedded: the database itself) --------------------------------------
    def reachable(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means unreachable
            return False
        return True

    def authorize(self, request: HoldRequest) -> Decision:
        client_id = request.terms.client.id
        with self.engine.begin() as conn:
            balance = self._lock_balance(conn, client_id)
            own = self._own_call(conn, request) if request.identifiers else None
            others = [calls_t.c.client_id == client_id, live_calls_condition(request.now)]
            if own is not None:
                others.append(calls_t.c.id != own)
            held, count = conn.execute(
                select(func.sum(calls_t.c.hold), func.count()).where(*others)
            ).one()
            snapshot = LiveSnapshot(balance, held if held is not None else ZERO, int(count))
            decision = decide(request.terms, snapshot)
            if request.terms.rate is None:  # authentication only: nothing held
                return decision
            if isinstance(decision, Accept):
                expires = request.now + timedelta(seconds=request.hold_seconds)
                values = {
                    "hold": decision.hold,
                    "granted_seconds": decision.grant_seconds,
                    "hold_expires_at": expires,
                    "authorized_at": request.now,
                }
                if own is not None:
                    conn.execute(update(calls_t).where(calls_t.c.id == own).values(**values))
                else:
                    call_id = conn.execute(
                        insert(calls_t)
                        .values(
                            client_id=client_id,
                            account_id=request.account_id,
                            nas_key=request.nas_key,
                            acct_session_id=request.acct_session_id,
                            called=request.called,
                            state="held",
                            max_session_time=0,
                            charged=False,
                            epoch=0,
                            **values,
                        )
                        .returning(calls_t.c.id)
                    ).scalar_one()
                    _add_keys(conn, call_id, request.nas_key, request.identifiers)
            elif own is not None:
                conn.execute(delete(calls_t).where(calls_t.c.id == own))
            return decision

    def _lock_balance(self, conn: Connection, client_id: int) -> Decimal:
        query = select(live_t.c.balance).where(live_t.c.client_id == client_id)
        if self._pg:
            query = query.with_for_update()
        balance = conn.execute(query).scalar_one_or_none()
        if balance is None:
            conn.execute(
                _insert_ignore(conn, live_t)
                .values(client_id=client_id, balance=ZERO)
                .on_conflict_do_nothing()
            )
            balance = conn.execute(query).scalar_one()
        return cast(Decimal, balance)

    def _own_call(self, conn: Connection, request: HoldRequest) -> int | None:
        return conn.execute(
            select(calls_t.c.id)
            .join(call_keys_t, call_keys_t.c.call_id == calls_t.c.id)
            .where(
                call_keys_t.c.nas_key == request.nas_key,
                call_keys_t.c.key.in_(request.identifiers),
                calls_t.c.account_id == request.account_id,
                calls_t.c.called == request.called,
            )
            .limit(1)
        ).scalar_one_or_none()

    # --- Ledger ---------------------------------------------------------------------------
    @contextmanager
    def accounting(self) -> Iterator[SqlAccountingTx]:
        with self.engine.begin() as conn:
            yield SqlAccountingTx(conn)


def _add_keys(conn: Connection, call_id: int, nas_key: str, identifiers: Sequence[str]) -> None:
    if identifiers:
        conn.execute(
            _insert_ignore(conn, call_keys_t).on_conflict_do_nothing(),
            [{"call_id": call_id, "nas_key": nas_key, "key": key} for key in identifiers],
        )


def _call_record(row: Any) -> CallRecord:
    return CallRecord(
        id=row.id,
        client_id=row.client_id,
        account_id=row.account_id,
        nas_key=row.nas_key,
        called=row.called,
        state=row.state,
        granted_seconds=row.granted_seconds,
        hold=row.hold,
        authorized_at=row.authorized_at,
        started_at=row.started_at,
        max_session_time=row.max_session_time,
        charged=bool(row.charged),
    )


class SqlAccountingTx:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def record_event(self, event: AccountingEvent) -> None:
        self.conn.execute(
            insert(acct_events_t).values(
                nas_key=event.nas_key,
                status=event.status,
                acct_session_id=event.acct_session_id,
                arrived=event.arrived,
                delay=event.delay,
                attributes=json.dumps(event.attributes, separators=(",", ":")),
            )
        )

    def find_call(self, nas_key: str, identifiers: tuple[str, ...]) -> CallRecord | None:
        row = self.conn.execute(
            select(calls_t)
            .join(call_keys_t, call_keys_t.c.call_id == calls_t.c.id)
            .where(call_keys_t.c.nas_key == nas_key, call_keys_t.c.key.in_(identifiers))
            .order_by(calls_t.c.id.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else _call_record(row)

    def create_call(
        self,
        *,
        client_id: int,
        account_id: int | None,
        nas_key: str,
        acct_session_id: str,
        called: str,
        identifiers: tuple[str, ...],
        state: str,
        started_at: datetime | None,
    ) -> CallRecord:
        row = self.conn.execute(
            insert(calls_t)
            .values(
                client_id=client_id,
                account_id=account_id,
                nas_key=nas_key,
                acct_session_id=acct_session_id,
                called=called,
                state=state,
                hold=ZERO,
                started_at=started_at,
                last_seen_at=started_at,
                max_session_time=0,
                charged=False,
                epoch=0,
            )
            .returning(*calls_t.c)
        ).one()
        _add_keys(self.conn, row.id, nas_key, identifiers)
        return _call_record(row)

    def update_call(
        self,
        call_id: int,
        *,
        state: str | None = None,
        started_at: datetime | None = None,
        max_session_time: int | None = None,
        hold_expires_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> None:
        values = {
            key: value
            for key, value in (
                ("state", state),
                ("started_at", started_at),
                ("max_session_time", max_session_time),
                ("hold_expires_at", hold_expires_at),
                ("last_seen_at", last_seen_at),
            )
            if value is not None
        }
        if values:
            self.conn.execute(update(calls_t).where(calls_t.c.id == call_id).values(**values))

    def link_leg(
        self, call_id: int, nas_key: str, identifiers: tuple[str, ...], acct_session_id: str
    ) -> None:
        _add_keys(self.conn, call_id, nas_key, identifiers)
        self.conn.execute(
            update(calls_t)
            .where(calls_t.c.id == call_id, calls_t.c.acct_session_id == "")
            .values(acct_session_id=acct_session_id)
        )

    def store_leg(self, leg: ClosedLeg) -> int | None:
        values = {
            "client_id": leg.client_id,
            "account_id": leg.account_id,
            "call_id": leg.call_id,
            "nas_key": leg.nas_key,
            "epoch": leg.epoch,
            "acct_session_id": leg.acct_session_id,
            "conf_id": leg.conf_id,
            "origin": leg.origin,
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
        }
        statement = (
            _insert_ignore(self.conn, cdrs_t)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(cdrs_t.c.id)
        )
        cdr_id = self.conn.execute(statement).scalar_one_or_none()
        return None if cdr_id is None else int(cdr_id)

    def charge(self, client_id: int, amount: Decimal, cdr_id: int, note: str) -> None:
        self.conn.execute(
            insert(transactions_t).values(
                client_id=client_id,
                kind="call",
                amount=amount,
                note=note,
                cdr_id=cdr_id,
                created_at=utcnow(),
            )
        )
        change_balance(self.conn, client_id, amount)

    def end_call(self, call_id: int) -> None:
        self.conn.execute(delete(call_keys_t).where(call_keys_t.c.call_id == call_id))
        self.conn.execute(delete(calls_t).where(calls_t.c.id == call_id))
