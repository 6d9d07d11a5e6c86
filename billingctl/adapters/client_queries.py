"""Reading clients: lookup by name or id, balances, tags, the list and the one-client view.

Balances (CONTRACT §5, domain.md §1):
- live = the sum of the whole ledger (payments, manual charges, call charges), read from
  ``live_balances`` which is kept in step with every ledger row;
- fixed = payments and manual charges minus the totals of the invoices issued;
- available = live + credit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from billing_core.adapters.sql.models import (
    ClientTagRow,
    InvoiceRow,
    NotifyStateRow,
    RateTableRow,
    TagRow,
    table,
)
from billing_core.adapters.sql.tables import (
    calls_t,
    clients_t,
    live_calls_condition,
    live_t,
    transactions_t,
    utcnow,
)
from billing_core.domain.money import ZERO
from billing_core.domain.money import display as fmt
from billing_core.errors import NotFoundError
from billing_core.ports import LiveState

rate_tables_t = table(RateTableRow)
tags_t = table(TagRow)
client_tags_t = table(ClientTagRow)
invoices_t = table(InvoiceRow)
notify_state_t = table(NotifyStateRow)


def find_client(conn: Connection, name_or_id: str) -> Any:
    row = conn.execute(select(clients_t).where(clients_t.c.name == name_or_id)).one_or_none()
    if row is None and name_or_id.isdigit():
        row = conn.execute(select(clients_t).where(clients_t.c.id == int(name_or_id))).one_or_none()
    if row is None:
        raise NotFoundError(f"no client named {name_or_id!r}")
    return row


def tags_of(conn: Connection, client_ids: Sequence[int]) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {cid: [] for cid in client_ids}
    if not client_ids:
        return tags
    for cid, name in conn.execute(
        select(client_tags_t.c.client_id, tags_t.c.name)
        .join(tags_t, tags_t.c.id == client_tags_t.c.tag_id)
        .where(client_tags_t.c.client_id.in_(client_ids))
        .order_by(tags_t.c.name)
    ):
        tags[cid].append(name)
    return tags


def balances(
    conn: Connection, client_ids: Sequence[int], now: datetime
) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {
        cid: {"live": ZERO, "fixed": ZERO, "held": ZERO, "active_calls": 0} for cid in client_ids
    }
    if not client_ids:
        return out
    for cid, balance in conn.execute(
        select(live_t.c.client_id, live_t.c.balance).where(live_t.c.client_id.in_(client_ids))
    ):
        out[cid]["live"] = balance
    for cid, total in conn.execute(
        select(transactions_t.c.client_id, func.sum(transactions_t.c.amount))
        .where(
            transactions_t.c.client_id.in_(client_ids),
            transactions_t.c.kind.in_(("payment", "charge")),
        )
        .group_by(transactions_t.c.client_id)
    ):
        out[cid]["fixed"] = _money(total)
    for cid, invoiced in conn.execute(
        select(invoices_t.c.client_id, func.sum(invoices_t.c.total))
        .where(invoices_t.c.client_id.in_(client_ids))
        .group_by(invoices_t.c.client_id)
    ):
        out[cid]["fixed"] -= _money(invoiced)
    for cid, held in conn.execute(
        select(calls_t.c.client_id, func.sum(calls_t.c.hold))
        .where(calls_t.c.client_id.in_(client_ids), live_calls_condition(now))
        .group_by(calls_t.c.client_id)
    ):
        out[cid]["held"] = _money(held)
    for cid, count in conn.execute(
        select(calls_t.c.client_id, func.count())
        .where(calls_t.c.client_id.in_(client_ids), calls_t.c.state == "active")
        .group_by(calls_t.c.client_id)
    ):
        out[cid]["active_calls"] = int(count)
    return out


def _money(raw: Decimal | None) -> Decimal:
    """SUM over a money column: already a Decimal (the column type applies), None when empty."""
    return ZERO if raw is None else raw


def client_dict(
    row: Any, money: dict[str, Any], tags: list[str], rate_table: str | None
) -> dict[str, Any]:
    live = money["live"]
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "currency": row.currency,
        "timezone": row.timezone,
        "locale": row.locale,
        "postpaid": bool(row.postpaid),
        "credit": fmt(row.credit),
        "live_balance": fmt(live),
        "available_balance": fmt(live + row.credit),
        "fixed_balance": fmt(money["fixed"]),
        "held": fmt(money["held"]),
        "active_calls": money["active_calls"],
        "rate_table": rate_table,
        "capacity": row.capacity,
        "low_balance": None
        if row.low_balance_threshold is None
        else {"threshold": fmt(row.low_balance_threshold), "capacity": row.low_balance_capacity},
        "notify_client_below": None
        if row.notify_client_below is None
        else fmt(row.notify_client_below),
        "notify_admin_below": None
        if row.notify_admin_below is None
        else fmt(row.notify_admin_below),
        "bill_events_by": row.bill_events_by,
        "tags": tags,
        "reseller": row.reseller,
        "payment_terms": row.payment_terms,
        "main_email": row.main_email,
        "tax_profile": row.tax_profile,
        "hidden_numbers": bool(row.hidden_numbers),
        "autoinvoicing": bool(row.autoinvoicing),
        "last_invoiced": None if row.last_invoiced is None else row.last_invoiced.isoformat(),
        "company_name": row.company_name,
        "billing_email": row.billing_email,
        "rates_email": row.rates_email,
        "address": row.address,
        "zip_code": row.zip_code,
        "tax_id": row.tax_id,
        "registration_id": row.registration_id,
        "account_details": row.account_details,
    }


def rate_table_names(conn: Connection) -> dict[int, str]:
    return {r.id: r.name for r in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.name))}


def with_live(
    money: dict[int, dict[str, Any]], live: LiveState | None, now: datetime
) -> dict[int, dict[str, Any]]:
    """The live balance, holds and active calls as the daemon's live state has them, when
    that is Redis (``live``); the database's figures otherwise."""
    if live is None or not money:
        return money
    for client_id, view in live.view(list(money), now).items():
        money[client_id].update(live=view.balance, held=view.held, active_calls=view.active_calls)
    return money


def client_summary(
    engine: Engine, name_or_id: str, *, live: LiveState | None = None
) -> dict[str, Any]:
    now = utcnow()
    with engine.connect() as conn:
        row = find_client(conn, name_or_id)
        rate_table = None
        if row.rate_table_id is not None:
            rate_table = conn.execute(
                select(rate_tables_t.c.name).where(rate_tables_t.c.id == row.rate_table_id)
            ).scalar_one()
        money = with_live(balances(conn, [row.id], now), live, now)[row.id]
        shown = client_dict(row, money, tags_of(conn, [row.id])[row.id], rate_table)
        shown["notifications"] = notification_state(conn, row)
        return shown


def notification_state(conn: Connection, row: Any) -> dict[str, Any]:
    """Each low-balance notification: its threshold, armed or not, when it last fired."""
    states = {
        r.kind: r
        for r in conn.execute(select(notify_state_t).where(notify_state_t.c.client_id == row.id))
    }
    shown: dict[str, Any] = {}
    for kind, threshold in (
        ("client", row.notify_client_below),
        ("admin", row.notify_admin_below),
    ):
        state = states.get(kind)
        fired = None if state is None or state.fired_at is None else state.fired_at.isoformat()
        shown[kind] = {
            "below": None if threshold is None else fmt(threshold),
            "armed": threshold is not None and (state is None or bool(state.armed)),
            "sent_at": fired,
        }
    return shown


def wildcard(pattern: str) -> re.Pattern[str]:
    """A case-insensitive match of a whole string where ``*`` stands for any characters."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def list_clients(
    engine: Engine,
    *,
    name: str | None = None,
    email: str | None = None,
    status: str = "active",
    tag: str | None = None,
    reseller: str | None = None,
    live: LiveState | None = None,
) -> list[dict[str, Any]]:
    """The Clients section's search: name by first letters, main e-mail with ``*``
    wildcards, status (``all`` for every one), tag and reseller; ordered by name."""
    with engine.connect() as conn:
        query = select(clients_t).order_by(clients_t.c.name)
        if status != "all":
            query = query.where(clients_t.c.status == status)
        if name:
            query = query.where(
                func.lower(clients_t.c.name).startswith(name.lower(), autoescape=True)
            )
        if reseller:
            query = query.where(clients_t.c.reseller == reseller)
        rows = list(conn.execute(query))
        if email:
            matcher = wildcard(email)
            rows = [r for r in rows if r.main_email and matcher.fullmatch(r.main_email)]
        ids = [r.id for r in rows]
        tags = tags_of(conn, ids)
        if tag:
            rows = [r for r in rows if tag in tags[r.id]]
            ids = [r.id for r in rows]
        tables = rate_table_names(conn)
        now = utcnow()
        money = with_live(balances(conn, ids, now), live, now)
        return [client_dict(r, money[r.id], tags[r.id], tables.get(r.rate_table_id)) for r in rows]
