"""Money seen by the operator: the ledger (transactions) and invoices.

An invoice bills a client's call charges of a period: from the day after its last-invoiced
date (or from the beginning) through ``--until``, days as in the client's time zone, each
charge dated by its call's billed moment (the moment ``bill_events_by`` rates it at, kept on
the CDR), not by when its Stop reached the ledger: a call at 23:59 on the period's last day
whose Stop arrives after midnight stays in that period. A charge dated in a period that was
invoiced before it arrived goes on the next invoice (an invoice is never changed). Those
transactions are linked to it (``invoice_id``),
so no charge is ever invoiced twice, and the client's last-invoiced date moves to the end of
the period. The fixed balance is payments and manual charges minus invoice totals; an
invoice changes neither the ledger nor the live balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, insert, select, update

from billing_core.adapters.sql_store import cdrs_t, clients_t, transactions_t, utcnow
from billing_core.domain.money import ZERO
from billing_core.domain.money import display as fmt
from billing_core.errors import UserError

from .audit import AuditContext, record
from .client_queries import balances, find_client, invoices_t

KINDS = ("payment", "charge", "call")


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo("UTC" if name == "UTC" else name)


def day_start(day: date, zone: str) -> datetime:
    """Midnight at the start of ``day`` in ``zone``, as an aware UTC time."""
    return datetime.combine(day, time(), tzinfo=_zone(zone)).astimezone(UTC)


def list_transactions(
    engine: Engine,
    *,
    client: str | None = None,
    kinds: Sequence[str] = KINDS,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows, oldest first; ``since``/``until`` are UTC days, both included."""
    with engine.connect() as conn:
        query = (
            select(transactions_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == transactions_t.c.client_id)
            .where(transactions_t.c.kind.in_(list(kinds)))
            .order_by(transactions_t.c.id)
        )
        if client is not None:
            query = query.where(transactions_t.c.client_id == find_client(conn, client).id)
        if since is not None:
            query = query.where(transactions_t.c.created_at >= day_start(since, "UTC"))
        if until is not None:
            query = query.where(
                transactions_t.c.created_at < day_start(until + timedelta(days=1), "UTC")
            )
        rows = list(conn.execute(query))
    return [
        {
            "id": r.id,
            "created_at": r.created_at.isoformat(),
            "client": r.client_name,
            "kind": r.kind,
            "amount": fmt(r.amount),
            "note": r.note,
            "external_id": r.external_id,
            "cdr_id": r.cdr_id,
            "invoice_id": r.invoice_id,
        }
        for r in rows
    ]


def generate_invoice(
    engine: Engine, client: str, until: date, *, audit: AuditContext, now: datetime | None = None
) -> dict[str, Any]:
    """One invoice for the call charges since the last-invoiced date through ``until``."""
    now = now or utcnow()
    with engine.begin() as conn:
        row = find_client(conn, client)
        today = now.astimezone(_zone(row.timezone)).date()
        if until >= today:
            raise UserError(
                f"until: {until.isoformat()} has not ended yet in the client's time zone"
                f" ({row.timezone}, today is {today.isoformat()}); invoice up to yesterday"
            )
        start = None
        if row.last_invoiced is not None:
            if until <= row.last_invoiced:
                raise UserError(
                    f"until: {row.name} is invoiced through {row.last_invoiced.isoformat()}"
                    " already; give a later day"
                )
            start = row.last_invoiced + timedelta(days=1)
        # a charge is dated by its call's billed moment (the CDR's rating moment, set by
        # bill_events_by), else by when it reached the ledger; no lower bound: a charge dated
        # in a period invoiced before it arrived is carried on this invoice, never lost
        moment = func.coalesce(cdrs_t.c.rated_at, transactions_t.c.created_at)
        due = (
            select(transactions_t.c.id)
            .select_from(transactions_t.outerjoin(cdrs_t, cdrs_t.c.id == transactions_t.c.cdr_id))
            .where(
                transactions_t.c.client_id == row.id,
                transactions_t.c.kind == "call",
                transactions_t.c.invoice_id.is_(None),
                moment < day_start(until + timedelta(days=1), row.timezone),
            )
        )
        invoice_id = conn.execute(
            insert(invoices_t)
            .values(
                client_id=row.id,
                period_start=start,
                period_end=until,
                total=ZERO,
                charges=0,
                currency=row.currency,
                created_at=now,
            )
            .returning(invoices_t.c.id)
        ).scalar_one()
        # the charges linked are exactly the charges summed (one statement: a charge that
        # arrives meanwhile is either in both or in neither)
        amounts = conn.execute(
            update(transactions_t)
            .where(transactions_t.c.id.in_(due.scalar_subquery()))
            .values(invoice_id=invoice_id)
            .returning(transactions_t.c.amount)
        ).scalars()
        charges = [Decimal(amount) for amount in amounts]
        total = -sum(charges, ZERO)
        conn.execute(
            update(invoices_t)
            .where(invoices_t.c.id == invoice_id)
            .values(total=total, charges=len(charges))
        )
        conn.execute(update(clients_t).where(clients_t.c.id == row.id).values(last_invoiced=until))
        invoice = _invoice_dict(_find_invoice(conn, invoice_id), row.name)
        record(
            conn,
            audit,
            entity_type="invoice",
            entity_id=invoice_id,
            entity_name=None,
            before=None,
            after={
                **{k: v for k, v in invoice.items() if k not in {"id", "client"}},
                "last_invoiced": until,
                "previous_last_invoiced": row.last_invoiced,
            },
            client_id=row.id,
            client_name=row.name,
        )
        invoice["fixed_balance"] = fmt(balances(conn, [row.id], now)[row.id]["fixed"])
    return invoice


def _find_invoice(conn: Connection, invoice_id: int) -> Any:
    return conn.execute(select(invoices_t).where(invoices_t.c.id == invoice_id)).one()


def _invoice_dict(row: Any, client_name: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "client": client_name,
        "period_start": None if row.period_start is None else row.period_start.isoformat(),
        "period_end": row.period_end.isoformat(),
        "charges": row.charges,
        "total": fmt(row.total),
        "currency": row.currency,
        "created_at": row.created_at.isoformat(),
    }


def list_invoices(engine: Engine, client: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = (
            select(invoices_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == invoices_t.c.client_id)
            .order_by(invoices_t.c.id)
        )
        if client is not None:
            query = query.where(invoices_t.c.client_id == find_client(conn, client).id)
        return [_invoice_dict(r, r.client_name) for r in conn.execute(query)]
