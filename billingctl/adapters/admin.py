"""Operator operations over the database (billingctl): provisioning, payments, listings.

Every change that authorization reads bumps the catalog version in the same transaction, so
a running daemon picks it up within a second. Every change is recorded in the audit log in
the same transaction (``audit.py``). The provisioning pieces here (rate tables, clients,
accounts, payments) are run in one transaction by ``billingctl.services.load``, with the
status rules of ``billingctl.services.clients``. Clients are read through
``client_queries``; the Clients section's other operations live in ``admin_clients``,
accounts in ``admin_accounts``, money in ``admin_money`` and rates in ``rates_import``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from billing_core.adapters.sql import disconnect as sql_disconnect
from billing_core.adapters.sql.catalog import bump_catalog_version, bump_rates_version
from billing_core.adapters.sql.live import change_balance
from billing_core.adapters.sql.tables import (
    accounts_t,
    call_keys_t,
    calls_t,
    cdrs_t,
    clients_t,
    live_calls_condition,
    live_t,
    rates_t,
    settings_t,
    transactions_t,
    utcnow,
)
from billing_core.domain.money import ZERO
from billing_core.domain.money import display as fmt
from billing_core.errors import UserError
from billing_core.ports import SecretCipher
from billingctl.provisioning import ClientSpec, RateTableSpec, rate_row

from .account_secrets import secret_columns
from .audit import AuditContext, audit_t, client_snapshot, record
from .client_queries import (
    client_summary,
    client_tags_t,
    find_client,
    list_clients,
    rate_tables_t,
    tags_of,
    tags_t,
)

__all__ = [
    "add_payment",
    "add_transaction",
    "client_summary",
    "find_client",
    "list_cdrs",
    "list_clients",
    "list_sessions",
    "new_client_id",
    "post_payments",
    "record_client",
    "record_transaction",
    "set_account_flags",
    "set_setting",
    "set_tags",
    "show_settings",
    "tags_of",
    "update_setting",
    "upsert_accounts",
    "upsert_client",
    "upsert_rate_table",
]

SETTINGS_DEFAULTS = {"max_call_length": None}

# a ledger write's live effect: (client id, amount, the client's live sequence after it)
LiveMove = tuple[int, Decimal, int]


# --- provisioning (billingctl.services.load runs these in one transaction) ---------------
_RATE_VALUES = ("name", "rate", "setup_fee", "min_volume", "interval", "grace_volume", "end_date")


def upsert_rate_table(conn: Connection, table: RateTableSpec, audit: AuditContext) -> int:
    """The table's rates by (code, effective_date): new ones added, changed ones replaced."""
    old = conn.execute(
        select(rate_tables_t.c.id, rate_tables_t.c.currency).where(
            rate_tables_t.c.name == table.name
        )
    ).one_or_none()
    if old is None:
        table_id = conn.execute(
            insert(rate_tables_t)
            .values(name=table.name, currency=table.currency)
            .returning(rate_tables_t.c.id)
        ).scalar_one()
    else:
        table_id = old.id
        if old.currency != table.currency:
            conn.execute(
                update(rate_tables_t)
                .where(rate_tables_t.c.id == table_id)
                .values(currency=table.currency)
            )
    existing = {
        (row.code, row.effective_date): row
        for row in conn.execute(select(rates_t).where(rates_t.c.rate_table_id == table_id))
    }
    stale: list[int] = []
    rows: list[dict[str, Any]] = []
    for rate in table.rates:
        values = {"rate_table_id": table_id, **rate_row(rate)}
        current = existing.get((rate.code, rate.effective_date))
        if current is not None:
            if all(getattr(current, key) == values[key] for key in _RATE_VALUES):
                continue  # unchanged: not rewritten
            stale.append(current.id)
        rows.append(values)
    for chunk in _chunks(stale, 500):
        conn.execute(delete(rates_t).where(rates_t.c.id.in_(chunk)))
    if rows:
        conn.execute(insert(rates_t), rows)
        bump_rates_version(conn, int(table_id))
    if old is None or old.currency != table.currency or rows:
        added = len(rows) - len(stale)
        record(
            conn,
            audit,
            entity_type="rate_table",
            entity_id=table_id,
            entity_name=table.name,
            before=None if old is None else {"currency": old.currency, "rates": len(existing)},
            after={
                "currency": table.currency,
                "rates": len(existing) + added,
                "rates_added": added,
                "rates_changed": len(stale),
            },
        )
    return int(table_id)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _rate_table_of(
    conn: Connection, spec: ClientSpec, index: int, table_ids: dict[str, int]
) -> int | None:
    """The id of the client's rate table: one of this file's, else one in the database."""
    if spec.rate_table is None:
        return None
    rate_table_id = table_ids.get(spec.rate_table)
    if rate_table_id is None:
        rate_table_id = conn.execute(
            select(rate_tables_t.c.id).where(rate_tables_t.c.name == spec.rate_table)
        ).scalar_one_or_none()
    if rate_table_id is None:
        raise UserError(f"clients[{index}].rate_table: unknown rate table {spec.rate_table!r}")
    return int(rate_table_id)


def _client_values(spec: ClientSpec, rate_table_id: int | None) -> dict[str, Any]:
    company = spec.company
    return {
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
        "notify_client_below": spec.notify_client_below,
        "notify_admin_below": spec.notify_admin_below,
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


@dataclass(frozen=True, slots=True)
class Upserted:
    """A client written by ``upsert_client``: its id, and its status and audit snapshot
    before (None: it is new)."""

    client_id: int
    old_status: str | None
    before: dict[str, Any] | None


def upsert_client(
    conn: Connection, spec: ClientSpec, index: int, table_ids: dict[str, int]
) -> Upserted:
    """The client's row (by name) and tags, as the file gives them."""
    values = _client_values(spec, _rate_table_of(conn, spec, index, table_ids))
    old = conn.execute(
        select(clients_t.c.id, clients_t.c.status).where(clients_t.c.name == spec.name)
    ).one_or_none()
    if old is None:
        chosen = new_client_id(conn)
        if chosen is not None:
            values["id"] = chosen
        client_id = conn.execute(
            insert(clients_t).values(**values).returning(clients_t.c.id)
        ).scalar_one()
        conn.execute(insert(live_t).values(client_id=client_id, balance=ZERO))
        upserted = Upserted(int(client_id), None, None)
    else:
        upserted = Upserted(int(old.id), str(old.status), client_snapshot(conn, old.id))
        conn.execute(update(clients_t).where(clients_t.c.id == old.id).values(**values))
    set_tags(conn, upserted.client_id, spec.tags)
    return upserted


def upsert_accounts(
    conn: Connection,
    client_id: int,
    spec: ClientSpec,
    index: int,
    *,
    cipher: SecretCipher,
    in_service: bool,
) -> set[str]:
    """The client's accounts (by name; a new one originates and terminates when
    ``in_service``); returns the names of those whose password changed."""
    changed_passwords: set[str] = set()
    for account in spec.accounts:
        owner = conn.execute(
            select(
                accounts_t.c.client_id,
                accounts_t.c.password_hash,
                accounts_t.c.secret_enc,
                accounts_t.c.secret_version,
            ).where(accounts_t.c.name == account.name)
        ).one_or_none()
        try:
            secret = secret_columns(account.password, account.auth_methods, cipher, owner)
        except UserError as exc:
            raise UserError(f"clients[{index}].accounts: {account.name}: {exc}") from None
        if owner is not None and "secret_version" in secret and account.password is not None:
            changed_passwords.add(account.name)
        row = {
            "client_id": client_id,
            "name": account.name,
            "ident": account.ident,
            "value": account.value,
            "tech_prefix": account.tech_prefix,
            **secret,
            "enabled": True,
        }
        if owner is None:
            conn.execute(
                insert(accounts_t).values(**row, originate=in_service, terminate=in_service)
            )
        else:
            conn.execute(update(accounts_t).where(accounts_t.c.name == account.name).values(**row))
    return changed_passwords


def record_client(
    conn: Connection,
    audit: AuditContext,
    client_id: int,
    name: str,
    before: dict[str, Any] | None,
    changed_passwords: set[str],
) -> None:
    record(
        conn,
        audit,
        entity_type="client",
        entity_id=client_id,
        entity_name=name,
        before=before,
        after=client_snapshot(conn, client_id, changed_passwords=frozenset(changed_passwords)),
        client_id=client_id,
        client_name=name,
    )


def post_payments(
    conn: Connection, audit: AuditContext, client_id: int, spec: ClientSpec
) -> list[LiveMove]:
    """The file's payments of the client not applied before (by their id), each audited."""
    applied: list[LiveMove] = []
    for payment in spec.payments:
        posted = add_transaction(
            conn, client_id, payment.amount, payment.note, external_id=payment.id
        )
        if posted is not None:
            transaction_id, seq = posted
            applied.append((client_id, payment.amount, seq))
            record_transaction(conn, audit, transaction_id, client_id, spec.name)
    return applied


def new_client_id(conn: Connection) -> int | None:
    """The id for a new client: None (the sequence's) on PostgreSQL, which never reuses one.

    SQLite would give a fully deleted client's id to the next client; every client ever
    created has an audit entry carrying its id, so ids are allocated past those too."""
    if conn.dialect.name == "postgresql":
        return None
    highest = conn.execute(
        select(func.max(clients_t.c.id)).union_all(select(func.max(audit_t.c.client_id)))
    ).scalars()
    return max((int(v) for v in highest if v is not None), default=0) + 1


def set_account_flags(conn: Connection, client_id: int, *, in_service: bool) -> int:
    """Every account of the client originates and terminates, or neither does (which one:
    ``billingctl.services.clients``). Returns the number of accounts."""
    return int(
        conn.execute(
            update(accounts_t)
            .where(accounts_t.c.client_id == client_id)
            .values(originate=in_service, terminate=in_service)
        ).rowcount
    )


def client_status_changed(conn: Connection, client_id: int, name: str, old: str, new: str) -> None:
    """Tell the daemon, in the change's transaction: the event, and a Disconnect-Request
    for each call of a client set to stop or deleted."""
    sql_disconnect.client_status_changed(conn, client_id, name, old, new, utcnow())


def set_tags(conn: Connection, client_id: int, tags: Sequence[str]) -> None:
    """The client's tags become exactly ``tags``; a tag is created on first use."""
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
) -> tuple[int, int] | None:
    """A payment (positive) or manual charge (negative): its id and the client's live
    sequence after it, or None when ``external_id`` was applied already."""
    if external_id is not None:
        seen = conn.execute(
            select(transactions_t.c.id).where(transactions_t.c.external_id == external_id)
        ).scalar_one_or_none()
        if seen is not None:
            return None
    transaction_id = conn.execute(
        insert(transactions_t)
        .values(
            client_id=client_id,
            kind="payment" if amount >= 0 else "charge",
            amount=amount,
            note=note,
            external_id=external_id,
            created_at=utcnow(),
        )
        .returning(transactions_t.c.id)
    ).scalar_one()
    return int(transaction_id), change_balance(conn, client_id, amount)


def record_transaction(
    conn: Connection, audit: AuditContext, transaction_id: int, client_id: int, client_name: str
) -> None:
    row = conn.execute(select(transactions_t).where(transactions_t.c.id == transaction_id)).one()
    record(
        conn,
        audit,
        entity_type="transaction",
        entity_id=transaction_id,
        entity_name=row.external_id,
        before=None,
        after={
            "kind": row.kind,
            "amount": row.amount,
            "note": row.note,
            "external_id": row.external_id,
        },
        client_id=client_id,
        client_name=client_name,
    )


def add_payment(
    engine: Engine,
    client: str,
    amount: Decimal,
    note: str,
    audit: AuditContext | None = None,
    *,
    applied: list[LiveMove] | None = None,
) -> dict[str, Any]:
    """A payment or manual charge; ``applied`` (if given) receives (client id, amount, live
    sequence) for a live state kept outside the database to follow after the commit."""
    with engine.begin() as conn:
        row = find_client(conn, client)
        posted = add_transaction(conn, row.id, amount, note)
        assert posted is not None  # no external id: always applied
        transaction_id, seq = posted
        if applied is not None:
            applied.append((row.id, amount, seq))
        record_transaction(
            conn, audit or AuditContext("payments add"), transaction_id, row.id, row.name
        )
    return client_summary(engine, str(row.id))


# --- settings ----------------------------------------------------------------------------------
def set_setting(conn: Connection, name: str, value: str, audit: AuditContext | None = None) -> None:
    old = conn.execute(
        select(settings_t.c.value).where(settings_t.c.name == name)
    ).scalar_one_or_none()
    if old is None:
        conn.execute(insert(settings_t).values(name=name, value=value))
    elif old != value:
        conn.execute(update(settings_t).where(settings_t.c.name == name).values(value=value))
    bump_catalog_version(conn)
    record(
        conn,
        audit or AuditContext("settings set"),
        entity_type="setting",
        entity_id=name,
        entity_name=name,
        before=None if old is None else {"value": old},
        after={"value": value},
    )


def show_settings(engine: Engine, defaults: dict[str, str]) -> dict[str, str]:
    with engine.connect() as conn:
        stored = {
            r.name: r.value for r in conn.execute(select(settings_t.c.name, settings_t.c.value))
        }
    return {**defaults, **stored}


def update_setting(
    engine: Engine, name: str, value: str, audit: AuditContext | None = None
) -> None:
    with engine.begin() as conn:
        set_setting(conn, name, value, audit)


# --- calls -------------------------------------------------------------------------------------
def list_sessions(
    engine: Engine, client: str | None = None, live: Any = None
) -> list[dict[str, Any]]:
    """Calls in progress: from the database, plus (with Redis) the authorizations that hold
    funds in Redis and have no accounting yet."""
    now = utcnow()
    with engine.connect() as conn:
        wanted = find_client(conn, client).id if client else None
        held_only = _held_only(conn, live, wanted, now)
        query = (
            select(calls_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == calls_t.c.client_id)
            .where(live_calls_condition(now))
            .order_by(calls_t.c.id)
        )
        if wanted is not None:
            query = query.where(clients_t.c.id == wanted)
        rows = list(conn.execute(query))
        keys = _call_keys(conn, [r.id for r in rows])
    return [_session(r, keys.get(r.id, [])) for r in rows] + held_only


def _held_only(
    conn: Connection, live: Any, wanted: int | None, now: datetime
) -> list[dict[str, Any]]:
    """The authorizations a live state in Redis holds without accounting yet (none when the
    database is the live state: its calls table has them)."""
    if live is None or not hasattr(live, "held_calls"):
        return []
    names = {r.id: r.name for r in conn.execute(select(clients_t.c.id, clients_t.c.name))}
    return [
        {
            "id": None,
            "acct_session_id": hold["acct_session_id"],
            "identifiers": sorted(hold["identifiers"]),
            "client": names.get(hold["client_id"], str(hold["client_id"])),
            "nas": hold["nas"],
            "called": hold["called"],
            "state": "held",
            "granted_seconds": hold["granted_seconds"],
            "held": fmt(hold["held"]),
            "authorized_at": _iso(hold["authorized_at"]),
            "started_at": None,
        }
        for hold in live.held_calls(now)
        if wanted is None or hold["client_id"] == wanted
    ]


def _call_keys(conn: Connection, call_ids: Sequence[int]) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = {}
    if call_ids:
        for call_id, key in conn.execute(
            select(call_keys_t.c.call_id, call_keys_t.c.key).where(
                call_keys_t.c.call_id.in_(call_ids)
            )
        ):
            keys.setdefault(call_id, []).append(key)
    return keys


def _session(r: Any, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "id": r.id,
        "acct_session_id": r.acct_session_id,
        "identifiers": sorted(keys),
        "client": r.client_name,
        "nas": r.nas_key,
        "called": r.called,
        "state": r.state,
        "granted_seconds": r.granted_seconds,
        "held": fmt(r.hold),
        "authorized_at": _iso(r.authorized_at),
        "started_at": _iso(r.started_at),
    }


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
