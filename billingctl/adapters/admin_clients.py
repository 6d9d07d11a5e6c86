"""The Clients section's SQL: add, the pieces of an edit and of a full delete (run by
``billingctl.services.clients``, which holds the rules), client templates.

Field values arrive validated by ``billingctl.provisioning.validate_client_fields`` (the
same rules as ``load``), keyed by :data:`~billingctl.provisioning.CLIENT_FIELDS` name;
here they are checked against the database (rate tables, unique names) and written, with
the catalog version bumped and an audit entry, in one transaction per command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from billing_core.adapters.sql.catalog import bump_catalog_version
from billing_core.adapters.sql.models import ClientTemplateRow, table
from billing_core.adapters.sql.tables import (
    accounts_t,
    call_keys_t,
    calls_t,
    cdrs_t,
    clients_t,
    live_calls_condition,
    live_t,
    transactions_t,
)
from billing_core.domain.money import ZERO
from billing_core.domain.money import display as fmt
from billing_core.errors import NotFoundError, UserError
from billingctl.provisioning import (
    CLIENT_DEFAULTS,
    TEMPLATE_FIELDS,
    check_low_balance,
)

from .admin import new_client_id, set_tags
from .audit import AuditContext, client_snapshot, jsonable, record
from .client_queries import (
    client_summary,
    client_tags_t,
    find_client,
    invoices_t,
    rate_tables_t,
    tags_of,
)

templates_t = table(ClientTemplateRow)


@dataclass(frozen=True, slots=True)
class TagChange:
    """``replace`` (None: keep the set) then ``add`` and ``remove``."""

    replace: tuple[str, ...] | None = None
    add: tuple[str, ...] = field(default=())
    remove: tuple[str, ...] = field(default=())

    def apply(self, current: Sequence[str]) -> list[str]:
        tags = list(current if self.replace is None else self.replace)
        tags += [t for t in self.add if t not in tags]
        return [t for t in tags if t not in self.remove]

    def __bool__(self) -> bool:
        return self.replace is not None or bool(self.add) or bool(self.remove)


# --- fields <-> columns ------------------------------------------------------------------------
def _rate_table_id(conn: Connection, name: str) -> tuple[int, str]:
    row = conn.execute(
        select(rate_tables_t.c.id, rate_tables_t.c.currency).where(rate_tables_t.c.name == name)
    ).one_or_none()
    if row is None:
        raise UserError(f"rate_table: unknown rate table {name!r}")
    return int(row.id), str(row.currency)


def _columns(
    conn: Connection, fields: Mapping[str, object], *, check_currency: bool
) -> dict[str, object]:
    """Client columns for ``fields`` (rate_table name -> id), checked against each other."""
    columns = {key: value for key, value in fields.items() if key != "rate_table"}
    if "rate_table" in fields:
        name = fields["rate_table"]
        columns["rate_table_id"] = None
        if name is not None:
            table_id, table_currency = _rate_table_id(conn, str(name))
            columns["rate_table_id"] = table_id
            currency = fields.get("currency")
            if check_currency and currency is not None and currency != table_currency:
                raise UserError(
                    f"rate_table: rate table {name!r} is in {table_currency},"
                    f" the client's currency is {currency}"
                )
    if "low_balance_threshold" in fields or "low_balance_capacity" in fields:
        check_low_balance(fields.get("low_balance_threshold"), fields.get("low_balance_capacity"))
    return columns


def _fields_of(conn: Connection, row: Any, names: Sequence[str]) -> dict[str, object]:
    """A client's (or template's) current values by field name."""
    values: dict[str, object] = {}
    for name in names:
        if name == "rate_table":
            values[name] = None
            if row.rate_table_id is not None:
                values[name] = conn.execute(
                    select(rate_tables_t.c.name).where(rate_tables_t.c.id == row.rate_table_id)
                ).scalar_one()
        else:
            values[name] = getattr(row, name)
    return values


# --- clients -----------------------------------------------------------------------------------
def add_client(
    engine: Engine,
    name: str,
    fields: Mapping[str, object],
    *,
    tags: Sequence[str] | None,
    template: str | None,
    audit: AuditContext,
) -> dict[str, Any]:
    """A new client: ``fields`` given, then the template's values, then the defaults."""
    with engine.begin() as conn:
        taken = conn.execute(select(clients_t.c.id).where(clients_t.c.name == name)).first()
        if taken is not None:
            raise UserError(f"name: a client named {name!r} already exists")
        values: dict[str, object] = dict(CLIENT_DEFAULTS)
        template_tags: list[str] = []
        if template is not None:
            row = _find_template(conn, template)
            for key, value in _fields_of(conn, row, TEMPLATE_FIELDS).items():
                if value is not None:
                    values[key] = value
            template_tags = [] if row.tags is None else list(json.loads(row.tags))
        values.update(fields)
        for key, default in CLIENT_DEFAULTS.items():
            if values.get(key) is None:
                values[key] = default
        columns = _columns(conn, values, check_currency=True)
        chosen = new_client_id(conn)
        if chosen is not None:
            columns["id"] = chosen
        client_id = conn.execute(
            insert(clients_t).values(name=name, **columns).returning(clients_t.c.id)
        ).scalar_one()
        conn.execute(insert(live_t).values(client_id=client_id, balance=ZERO))
        set_tags(conn, client_id, list(tags) if tags is not None else template_tags)
        bump_catalog_version(conn)
        record(
            conn,
            audit,
            entity_type="client",
            entity_id=client_id,
            entity_name=name,
            before=None,
            after=client_snapshot(conn, client_id),
            client_id=client_id,
            client_name=name,
        )
    return client_summary(engine, str(client_id))


@contextmanager
def client_transaction(engine: Engine, name_or_id: str) -> Iterator[tuple[Connection, Any]]:
    """One transaction and the client's row, read in it."""
    with engine.begin() as conn:
        yield conn, find_client(conn, name_or_id)


def client_id(engine: Engine, name_or_id: str) -> int:
    with engine.connect() as conn:
        return int(find_client(conn, name_or_id).id)


def find_clients(conn: Connection, keys: Sequence[str]) -> list[Any]:
    """The clients named (by name or id), each once, in the order given."""
    rows: list[Any] = []
    for key in keys:
        try:
            row = find_client(conn, key)
        except NotFoundError:
            raise NotFoundError(f"ID: no client {key!r}; nothing changed") from None
        if all(r.id != row.id for r in rows):
            rows.append(row)
    return rows


def snapshot(conn: Connection, client_id: int) -> dict[str, Any]:
    """The client as the audit log shows it."""
    shown = client_snapshot(conn, client_id)
    assert shown is not None
    return shown


def write_edit(
    conn: Connection,
    row: Any,
    fields: Mapping[str, object],
    *,
    new_name: str | None,
    tags: TagChange,
) -> None:
    """Write an edit's fields, name and tags to one client, checked against each other."""
    check_currency = "currency" in fields or "rate_table" in fields
    merged = {**_fields_of(conn, row, ("currency", "rate_table")), **fields}
    if "low_balance_threshold" in fields or "low_balance_capacity" in fields:
        merged = {
            "low_balance_threshold": row.low_balance_threshold,
            "low_balance_capacity": row.low_balance_capacity,
            **merged,
        }
    columns = _columns(conn, merged, check_currency=check_currency)
    columns = {
        k: v
        for k, v in columns.items()
        if k in fields or (k == "rate_table_id" and "rate_table" in fields)
    }
    if new_name is not None and new_name != row.name:
        taken = conn.execute(select(clients_t.c.id).where(clients_t.c.name == new_name)).first()
        if taken is not None:
            raise UserError(f"name: a client named {new_name!r} already exists")
        columns["name"] = new_name
    if columns:
        conn.execute(update(clients_t).where(clients_t.c.id == row.id).values(**columns))
    if tags:
        set_tags(conn, row.id, tags.apply(tags_of(conn, [row.id])[row.id]))


def record_edit(
    conn: Connection, client_id: int, before: dict[str, Any], audit: AuditContext
) -> list[str]:
    """After an edit: the fields that changed; when any did, the catalog moves on (the
    daemon reloads) and the audit log gets the change."""
    after = snapshot(conn, client_id)
    changed = [key for key in after if before.get(key) != after.get(key)]
    if changed:
        bump_catalog_version(conn)
        record(
            conn,
            audit,
            entity_type="client",
            entity_id=client_id,
            entity_name=after["name"],
            before=before,
            after=after,
            client_id=client_id,
            client_name=after["name"],
        )
    return changed


def count_accounts(conn: Connection, client_id: int) -> int:
    return int(
        conn.execute(select(func.count()).where(accounts_t.c.client_id == client_id)).scalar_one()
    )


def calls_in_progress(conn: Connection, client_id: int, now: datetime) -> int:
    """The client's calls in progress as the database knows them."""
    return int(
        conn.execute(
            select(func.count()).where(calls_t.c.client_id == client_id, live_calls_condition(now))
        ).scalar_one()
    )


def remove_client(conn: Connection, row: Any, *, audit: AuditContext) -> dict[str, Any]:
    """Remove the client and everything that belongs to it (its calls, CDRs, ledger,
    invoices, accounts, tags, live balance), audited with its last state. Returns its name
    and the counts removed by kind."""
    before = snapshot(conn, row.id)
    live = conn.execute(
        select(live_t.c.balance).where(live_t.c.client_id == row.id)
    ).scalar_one_or_none()
    removed: dict[str, Any] = {"name": row.name}
    call_ids = select(calls_t.c.id).where(calls_t.c.client_id == row.id)
    conn.execute(delete(call_keys_t).where(call_keys_t.c.call_id.in_(call_ids)))
    for label, tbl in (
        ("calls", calls_t),
        ("cdrs", cdrs_t),
        ("transactions", transactions_t),
        ("invoices", invoices_t),
        ("accounts", accounts_t),
        ("tags", client_tags_t),
        ("live_balance", live_t),
    ):
        removed[label] = conn.execute(delete(tbl).where(tbl.c.client_id == row.id)).rowcount
    conn.execute(delete(clients_t).where(clients_t.c.id == row.id))
    bump_catalog_version(conn)
    record(
        conn,
        audit,
        entity_type="client",
        entity_id=row.id,
        entity_name=row.name,
        before={**before, "live_balance": fmt(live) if live is not None else None},
        after=None,
        client_id=row.id,
        client_name=row.name,
    )
    removed.pop("live_balance")
    return removed


# --- templates ---------------------------------------------------------------------------------
def _find_template(conn: Connection, name: str) -> Any:
    row = conn.execute(select(templates_t).where(templates_t.c.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"template: no template named {name!r}")
    return row


def _template_dict(conn: Connection, row: Any) -> dict[str, Any]:
    values = _fields_of(conn, row, TEMPLATE_FIELDS)
    shown: dict[str, Any] = {"id": row.id, "name": row.name}
    shown.update(jsonable(values))
    shown["tags"] = None if row.tags is None else json.loads(row.tags)
    return shown


def _template_columns(
    conn: Connection, fields: Mapping[str, object], tags: Sequence[str] | None
) -> dict[str, object]:
    columns = _columns(conn, fields, check_currency=False)
    if tags is not None:
        columns["tags"] = json.dumps(list(tags))
    return columns


def add_template(
    engine: Engine,
    name: str,
    fields: Mapping[str, object],
    *,
    tags: Sequence[str] | None,
    audit: AuditContext,
) -> dict[str, Any]:
    unknown = set(fields) - set(TEMPLATE_FIELDS)
    if unknown:
        raise UserError(f"{sorted(unknown)[0]}: not a template field")
    with engine.begin() as conn:
        if conn.execute(select(templates_t.c.id).where(templates_t.c.name == name)).first():
            raise UserError(f"name: a template named {name!r} already exists")
        _check_template_currency(conn, fields)
        columns = _template_columns(conn, fields, tags)
        template_id = conn.execute(
            insert(templates_t).values(name=name, **columns).returning(templates_t.c.id)
        ).scalar_one()
        shown = _template_dict(conn, _find_template(conn, name))
        record(
            conn,
            audit,
            entity_type="template",
            entity_id=template_id,
            entity_name=name,
            before=None,
            after=shown,
        )
    return shown


def _check_template_currency(conn: Connection, fields: Mapping[str, object]) -> None:
    currency, rate_table = fields.get("currency"), fields.get("rate_table")
    if currency is not None and rate_table is not None:
        _columns(conn, {"currency": currency, "rate_table": rate_table}, check_currency=True)


def edit_template(
    engine: Engine,
    name: str,
    fields: Mapping[str, object],
    *,
    new_name: str | None = None,
    tags: TagChange | None = None,
    audit: AuditContext,
) -> tuple[dict[str, Any], list[str]]:
    """Change the fields given; an empty value (None here) makes a field "not set"."""
    with engine.begin() as conn:
        row = _find_template(conn, name)
        before = _template_dict(conn, row)
        merged = {
            **_fields_of(conn, row, ("currency", "rate_table")),
            **fields,
        }
        _check_template_currency(conn, merged)
        new_tags = None
        if tags:
            current = [] if row.tags is None else list(json.loads(row.tags))
            new_tags = tags.apply(current)
        columns = _template_columns(conn, fields, new_tags)
        if new_name is not None and new_name != row.name:
            taken = conn.execute(select(templates_t.c.id).where(templates_t.c.name == new_name))
            if taken.first() is not None:
                raise UserError(f"name: a template named {new_name!r} already exists")
            columns["name"] = new_name
        if columns:
            conn.execute(update(templates_t).where(templates_t.c.id == row.id).values(**columns))
        after = _template_dict(conn, _find_template(conn, new_name or name))
        changed = [key for key in after if before.get(key) != after.get(key)]
        record(
            conn,
            audit,
            entity_type="template",
            entity_id=row.id,
            entity_name=after["name"],
            before=before,
            after=after,
        )
    return after, changed


def show_template(engine: Engine, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return _template_dict(conn, _find_template(conn, name))


def list_templates(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = list(conn.execute(select(templates_t).order_by(templates_t.c.name)))
        return [_template_dict(conn, row) for row in rows]


def delete_template(engine: Engine, name: str, *, audit: AuditContext) -> None:
    """Clients made from it keep their values (a template is copied at ``clients add``)."""
    with engine.begin() as conn:
        row = _find_template(conn, name)
        before = _template_dict(conn, row)
        conn.execute(delete(templates_t).where(templates_t.c.id == row.id))
        record(
            conn,
            audit,
            entity_type="template",
            entity_id=row.id,
            entity_name=row.name,
            before=before,
            after=None,
        )
