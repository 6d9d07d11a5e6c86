"""Operator operations over the database (billingctl): provisioning, payments, listings.

Every change that authorization reads bumps the catalog version in the same transaction, so
a running daemon picks it up within a second.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from billing_core.domain import check_password, hash_password
from billing_core.errors import NotFoundError, UserError
from billing_core.money import ZERO
from billing_core.money import display as fmt
from billing_core.provisioning import ClientSpec, ProvisioningSpec, RateTableSpec

from .models import ClientTagRow, RateTableRow, TagRow, table
from .sql_store import (
    accounts_t,
    bump_catalog_version,
    calls_t,
    cdrs_t,
    change_balance,
    clients_t,
    live_calls_condition,
    live_t,
    rates_t,
    settings_t,
    transactions_t,
    utcnow,
)

rate_tables_t = table(RateTableRow)
tags_t = table(TagRow)
client_tags_t = table(ClientTagRow)

SETTINGS_DEFAULTS = {"max_call_length": None}


# --- provisioning ----------------------------------------------------------------------------
def apply_provisioning(engine: Engine, spec: ProvisioningSpec) -> dict[str, int]:
    """Upsert by natural key (names, payment ids) in one transaction."""
    counts = {"rate_tables": 0, "rates": 0, "clients": 0, "accounts": 0, "payments": 0}
    with engine.begin() as conn:
        if spec.max_call_length is not None:
            set_setting(conn, "max_call_length", str(spec.max_call_length))
        table_ids: dict[str, int] = {}
        for table in spec.rate_tables:
            table_ids[table.name] = _upsert_rate_table(conn, table)
            counts["rate_tables"] += 1
            counts["rates"] += len(table.rates)
        for index, client in enumerate(spec.clients):
            _upsert_client(conn, client, index, table_ids, counts)
        bump_catalog_version(conn)
    return counts


def _upsert_rate_table(conn: Connection, table: RateTableSpec) -> int:
    table_id = conn.execute(
        select(rate_tables_t.c.id).where(rate_tables_t.c.name == table.name)
    ).scalar_one_or_none()
    if table_id is None:
        table_id = conn.execute(
            insert(rate_tables_t)
            .values(name=table.name, currency=table.currency)
            .returning(rate_tables_t.c.id)
        ).scalar_one()
    else:
        conn.execute(
            update(rate_tables_t)
            .where(rate_tables_t.c.id == table_id)
            .values(currency=table.currency)
        )
    existing = {
        (row.code, row.effective_date): row.id
        for row in conn.execute(
            select(rates_t.c.id, rates_t.c.code, rates_t.c.effective_date).where(
                rates_t.c.rate_table_id == table_id
            )
        )
    }
    rows = [
        {
            "rate_table_id": table_id,
            "code": rate.code,
            "name": rate.name,
            "rate": rate.rate,
            "setup_fee": rate.setup_fee,
            "min_volume": rate.min_volume,
            "interval": rate.interval,
            "grace_volume": rate.grace_volume,
            "effective_date": rate.effective_date,
            "end_date": rate.end_date,
        }
        for rate in table.rates
    ]
    stale = [
        existing[(r["code"], r["effective_date"])]
        for r in rows
        if (r["code"], r["effective_date"]) in existing
    ]
    for chunk in _chunks(stale, 500):
        conn.execute(delete(rates_t).where(rates_t.c.id.in_(chunk)))
    if rows:
        conn.execute(insert(rates_t), rows)
    return int(table_id)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _upsert_client(
    conn: Connection,
    spec: ClientSpec,
    index: int,
    table_ids: dict[str, int],
    counts: dict[str, int],
) -> None:
    rate_table_id: int | None = None
    if spec.rate_table is not None:
        rate_table_id = table_ids.get(spec.rate_table)
        if rate_table_id is None:
            rate_table_id = conn.execute(
                select(rate_tables_t.c.id).where(rate_tables_t.c.name == spec.rate_table)
            ).scalar_one_or_none()
        if rate_table_id is None:
            raise UserError(f"clients[{index}].rate_table: unknown rate table {spec.rate_table!r}")
    company = spec.company
    values: dict[str, Any] = {
        "name": spec.name,
        "status": spec.status,
        "currency": spec.currency,
        "timezone": spec.timezone,
        "locale": spec.locale,
        "bill_events_by": spec.bill_events_by,
        "postpaid": spec.postpaid,
        "credit": spec.credit,
        "rate_table_id": rate_table_id,
        "capacity": spec.capacity,
        "low_balance_threshold": spec.low_balance.threshold if spec.low_balance else None,
        "low_balance_capacity": spec.low_balance.capacity if spec.low_balance else None,
        "company_name": company.name,
        "main_email": company.main_email,
        "billing_email": company.billing_email,
        "rates_email": company.rates_email,
        "address": company.address,
        "zip_code": company.zip_code,
        "tax_id": company.tax_id,
        "registration_id": company.registration_id,
        "account_details": company.account_details,
    }
    client_id = conn.execute(
        select(clients_t.c.id).where(clients_t.c.name == spec.name)
    ).scalar_one_or_none()
    if client_id is None:
        client_id = conn.execute(
            insert(clients_t).values(**values).returning(clients_t.c.id)
        ).scalar_one()
        conn.execute(insert(live_t).values(client_id=client_id, balance=ZERO))
    else:
        conn.execute(update(clients_t).where(clients_t.c.id == client_id).values(**values))
    counts["clients"] += 1
    set_tags(conn, client_id, spec.tags)
    for account in spec.accounts:
        owner = conn.execute(
            select(accounts_t.c.client_id, accounts_t.c.password_hash).where(
                accounts_t.c.name == account.name
            )
        ).one_or_none()
        password_hash = None
        if account.password is not None:
            old = owner.password_hash if owner is not None else None
            keep = old is not None and check_password(old, account.password.encode())
            password_hash = old if keep else hash_password(account.password)
        row = {
            "client_id": client_id,
            "name": account.name,
            "ident": account.ident,
            "value": account.value,
            "tech_prefix": account.tech_prefix,
            "password_hash": password_hash,
            "enabled": True,
        }
        if owner is None:
            conn.execute(insert(accounts_t).values(**row))
        else:
            conn.execute(update(accounts_t).where(accounts_t.c.name == account.name).values(**row))
        counts["accounts"] += 1
    for payment in spec.payments:
        if add_transaction(conn, client_id, payment.amount, payment.note, external_id=payment.id):
            counts["payments"] += 1


def set_tags(conn: Connection, client_id: int, tags: Sequence[str]) -> None:
    conn.execute(delete(client_tags_t).where(client_tags_t.c.client_id == client_id))
    for tag in dict.fromkeys(tags):
        tag_id = conn.execute(select(tags_t.c.id).where(tags_t.c.name == tag)).scalar_one_or_none()
        if tag_id is None:
            tag_id = conn.execute(
                insert(tags_t).values(name=tag).returning(tags_t.c.id)
            ).scalar_one()
        conn.execute(insert(client_tags_t).values(client_id=client_id, tag_id=tag_id))


# --- money -----------------------------------------------------------------------------------
def add_transaction(
    conn: Connection,
    client_id: int,
    amount: Decimal,
    note: str,
    *,
    external_id: str | None = None,
) -> bool:
    """A payment (positive) or manual charge (negative); False when ``external_id`` was applied."""
    if external_id is not None:
        seen = conn.execute(
            select(transactions_t.c.id).where(transactions_t.c.external_id == external_id)
        ).scalar_one_or_none()
        if seen is not None:
            return False
    conn.execute(
        insert(transactions_t).values(
            client_id=client_id,
            kind="payment" if amount >= 0 else "charge",
            amount=amount,
            note=note,
            external_id=external_id,
            created_at=utcnow(),
        )
    )
    change_balance(conn, client_id, amount)
    return True


def add_payment(engine: Engine, client: str, amount: Decimal, note: str) -> dict[str, Any]:
    with engine.begin() as conn:
        row = find_client(conn, client)
        add_transaction(conn, row.id, amount, note)
    return client_summary(engine, str(row.id))


# --- clients -----------------------------------------------------------------------------------
def find_client(conn: Connection, name_or_id: str) -> Any:
    row = conn.execute(select(clients_t).where(clients_t.c.name == name_or_id)).one_or_none()
    if row is None and name_or_id.isdigit():
        row = conn.execute(select(clients_t).where(clients_t.c.id == int(name_or_id))).one_or_none()
    if row is None:
        raise NotFoundError(f"no client named {name_or_id!r}")
    return row


def _tags_of(conn: Connection, client_ids: Sequence[int]) -> dict[int, list[str]]:
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


def _balances(
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


def _client_dict(
    row: Any, balances: dict[str, Any], tags: list[str], table: str | None
) -> dict[str, Any]:
    live = balances["live"]
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
        "fixed_balance": fmt(balances["fixed"]),
        "held": fmt(balances["held"]),
        "active_calls": balances["active_calls"],
        "rate_table": table,
        "capacity": row.capacity,
        "low_balance": None
        if row.low_balance_threshold is None
        else {"threshold": fmt(row.low_balance_threshold), "capacity": row.low_balance_capacity},
        "bill_events_by": row.bill_events_by,
        "tags": tags,
        "reseller": row.reseller,
        "payment_terms": row.payment_terms,
        "main_email": row.main_email,
    }


def client_summary(engine: Engine, name_or_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = find_client(conn, name_or_id)
        table = None
        if row.rate_table_id is not None:
            table = conn.execute(
                select(rate_tables_t.c.name).where(rate_tables_t.c.id == row.rate_table_id)
            ).scalar_one()
        balances = _balances(conn, [row.id], utcnow())[row.id]
        return _client_dict(row, balances, _tags_of(conn, [row.id])[row.id], table)


def list_clients(
    engine: Engine,
    *,
    name: str | None = None,
    email: str | None = None,
    status: str = "active",
    tag: str | None = None,
) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(clients_t).order_by(clients_t.c.name)
        if status != "all":
            query = query.where(clients_t.c.status == status)
        if name:
            query = query.where(
                func.lower(clients_t.c.name).startswith(name.lower(), autoescape=True)
            )
        rows = list(conn.execute(query))
        if email:
            pattern = email.lower()
            rows = [
                r
                for r in rows
                if r.main_email and fnmatch.fnmatchcase(r.main_email.lower(), pattern)
            ]
        ids = [r.id for r in rows]
        tags = _tags_of(conn, ids)
        if tag:
            rows = [r for r in rows if tag in tags[r.id]]
            ids = [r.id for r in rows]
        tables = {
            r.id: r.name for r in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.name))
        }
        balances = _balances(conn, ids, utcnow())
        return [
            _client_dict(r, balances[r.id], tags[r.id], tables.get(r.rate_table_id)) for r in rows
        ]


# --- settings ----------------------------------------------------------------------------------
def set_setting(conn: Connection, name: str, value: str) -> None:
    updated = conn.execute(
        update(settings_t).where(settings_t.c.name == name).values(value=value)
    ).rowcount
    if not updated:
        conn.execute(insert(settings_t).values(name=name, value=value))
    bump_catalog_version(conn)


def show_settings(engine: Engine, defaults: dict[str, str]) -> dict[str, str]:
    with engine.connect() as conn:
        stored = {
            r.name: r.value for r in conn.execute(select(settings_t.c.name, settings_t.c.value))
        }
    return {**defaults, **stored}


def update_setting(engine: Engine, name: str, value: str) -> None:
    with engine.begin() as conn:
        set_setting(conn, name, value)


# --- calls -------------------------------------------------------------------------------------
def list_sessions(engine: Engine, client: str | None = None) -> list[dict[str, Any]]:
    now = utcnow()
    with engine.connect() as conn:
        query = (
            select(calls_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == calls_t.c.client_id)
            .where(live_calls_condition(now))
            .order_by(calls_t.c.id)
        )
        if client:
            query = query.where(clients_t.c.id == find_client(conn, client).id)
        rows = list(conn.execute(query))
        keys: dict[int, list[str]] = {}
        from .sql_store import call_keys_t

        if rows:
            for call_id, key in conn.execute(
                select(call_keys_t.c.call_id, call_keys_t.c.key).where(
                    call_keys_t.c.call_id.in_([r.id for r in rows])
                )
            ):
                keys.setdefault(call_id, []).append(key)
    return [
        {
            "id": r.id,
            "acct_session_id": r.acct_session_id,
            "identifiers": sorted(keys.get(r.id, [])),
            "client": r.client_name,
            "nas": r.nas_key,
            "called": r.called,
            "state": r.state,
            "granted_seconds": r.granted_seconds,
            "held": fmt(r.hold),
            "authorized_at": _iso(r.authorized_at),
            "started_at": _iso(r.started_at),
        }
        for r in rows
    ]


def list_cdrs(engine: Engine, client: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = (
            select(cdrs_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == cdrs_t.c.client_id)
            .order_by(cdrs_t.c.id)
        )
        if client:
            query = query.where(clients_t.c.id == find_client(conn, client).id)
        rows = list(conn.execute(query))
    return [
        {
            "id": r.id,
            "acct_session_id": r.acct_session_id,
            "client": r.client_name,
            "nas": r.nas_key,
            "called": r.called,
            "duration": r.duration,
            "billed_duration": r.billed_duration,
            "cost": fmt(r.cost),
            "rate_code": r.rate_code,
            "rated_at": _iso(r.rated_at),
            "started_at": _iso(r.started_at),
            "stopped_at": _iso(r.stopped_at),
            "closed_by": r.closed_by,
        }
        for r in rows
    ]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
