"""Money seen by the operator: the ledger (transactions) and invoices.

An invoice bills a client's call charges of a period (which period:
``billingctl.services.money.invoice_period``), days as in the client's time zone, each
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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Select, func, insert, select, update

from billing_core.adapters.sql.tables import cdrs_t, clients_t, transactions_t
from billing_core.domain.money import ZERO
from billing_core.domain.money import display as fmt

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


@contextmanager
def client_transaction(engine: Engine, client: str) -> Iterator[tuple[Connection, Any]]:
    """One transaction and the client's row, read in it."""
    with engine.begin() as conn:
        yield conn, find_client(conn, client)


def _due_charges(row: Any, until: date) -> Select[tuple[int]]:
    """The client's call charges not invoiced yet, dated up to the end of ``until`` in its
    time zone: by the call's billed moment (the CDR's rating moment, set by bill_events_by),
    else by when the charge reached the ledger. No lower bound: a charge dated in a period
    invoiced before it arrived is carried on the next invoice, never lost."""
    moment = func.coalesce(cdrs_t.c.rated_at, transactions_t.c.created_at)
    return (
        select(transactions_t.c.id)
        .select_from(transactions_t.outerjoin(cdrs_t, cdrs_t.c.id == transactions_t.c.cdr_id))
        .where(
            transactions_t.c.client_id == row.id,
            transactions_t.c.kind == "call",
            transactions_t.c.invoice_id.is_(None),
            moment < day_start(until + timedelta(days=1), row.timezone),
        )
    )


def issue_invoice(
    conn: Connection,
    row: Any,
    period: tuple[date | None, date],
    *,
    audit: AuditContext,
    now: datetime,
) -> dict[str, Any]:
    """Write the invoice of ``period`` (start, None: from the beginning; end) for the
    client ``row`` in ``conn``'s transaction: its charges linked, its total, the client's
    last-invoiced date moved to the period's end, the audit entry."""
    start, until = period
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
        .where(transactions_t.c.id.in_(_due_charges(row, until).scalar_subquery()))
        .values(invoice_id=invoice_id)
        .returning(transactions_t.c.amount)
    ).scalars()
    charges = [Decimal(amount) for amount in amounts]
    conn.execute(
        update(invoices_t)
        .where(invoices_t.c.id == invoice_id)
        .values(total=-sum(charges, ZERO), charges=len(charges))
    )
    conn.execute(update(clients_t).where(clients_t.c.id == row.id).values(last_invoiced=until))
    invoice = _invoice_dict(_find_invoice(conn, invoice_id), row.name)
    _record_invoice(conn, audit, invoice, row, until)
    invoice["fixed_balance"] = fmt(balances(conn, [row.id], now)[row.id]["fixed"])
    return invoice


def _record_invoice(
    conn: Connection, audit: AuditContext, invoice: dict[str, Any], row: Any, until: date
) -> None:
    record(
        conn,
        audit,
        entity_type="invoice",
        entity_id=invoice["id"],
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
