"""The audit log: every change made with billingctl or ``load``, with before and after.

An entry is written in the same transaction as the change it records, so the log never
claims a change that was rolled back. Snapshots are plain JSON; passwords appear only as
``***`` (``*** (changed)`` when the change set a new one).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select

from billing_core.adapters.sql.models import AuditRow, RateTableRow, table
from billing_core.adapters.sql.tables import accounts_t, clients_t, utcnow
from billing_core.domain.money import display
from billing_core.errors import NotFoundError
from billingctl.provisioning import CLIENT_FIELDS

from .client_queries import tags_of

audit_t = table(AuditRow)
rate_tables_t = table(RateTableRow)

MASK = "***"
MASK_CHANGED = "*** (changed)"

#: Client columns recorded in a client's snapshot, in this order (rate_table_id as a name).
SNAPSHOT_COLUMNS = (
    "name",
    *("rate_table_id" if field == "rate_table" else field for field in CLIENT_FIELDS),
)


def current_actor() -> str:
    """The operating-system user running the command."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a bare container): still record the change
        return "unknown"


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who makes the changes and with which command (``clients edit``, ``load``)."""

    command: str
    actor: str = field(default_factory=current_actor)


_PLAIN = frozenset({str, int, bool, float})


def jsonable(value: Any) -> Any:
    """A snapshot value as JSON: amounts as decimal strings, days and times in ISO form."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, Decimal):
        return display(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record(
    conn: Connection,
    audit: AuditContext,
    *,
    entity_type: str,
    entity_id: object,
    entity_name: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    client_id: int | None = None,
    client_name: str | None = None,
) -> bool:
    """Write one entry; nothing when before and after are equal (no change). True if written."""
    values = entry_values(
        audit,
        entity_type=entity_type,
        entity_id=entity_id,
        entity_name=entity_name,
        before=before,
        after=after,
        client_id=client_id,
        client_name=client_name,
    )
    if values is None:
        return False
    conn.execute(insert(audit_t).values(**values))
    return True


def entry_values(
    audit: AuditContext,
    *,
    entity_type: str,
    entity_id: object,
    entity_name: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    client_id: int | None = None,
    client_name: str | None = None,
    at: datetime | None = None,
    as_json: bool = False,
) -> dict[str, Any] | None:
    """The audit row ``record`` writes (None when before and after are equal), for a caller
    that writes many at once; ``as_json``: before and after are JSON values already (the
    snapshots of ``snapshots_of``), not to be walked again."""
    before_json = before if as_json or before is None else jsonable(before)
    after_json = after if as_json or after is None else jsonable(after)
    if before_json is not None and before_json == after_json:
        return None
    return {
        "at": at or utcnow(),
        "actor": audit.actor[:128],
        "command": audit.command[:64],
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        "entity_name": entity_name,
        "client_id": client_id,
        "client_name": client_name,
        "before": None if before_json is None else json.dumps(before_json, sort_keys=True),
        "after": None if after_json is None else json.dumps(after_json, sort_keys=True),
    }


# --- snapshots ---------------------------------------------------------------------------------
def account_snapshot(row: Any, *, password_changed: bool = False) -> dict[str, Any]:
    password = None
    if row.password_hash is not None or getattr(row, "secret_enc", None) is not None:
        password = MASK_CHANGED if password_changed else MASK
    return {
        "name": row.name,
        "ident": row.ident,
        "value": row.value,
        "tech_prefix": row.tech_prefix,
        "password": password,
        "auth_methods": getattr(row, "auth_methods", None) or "pap",
        "enabled": bool(row.enabled),
        "originate": bool(row.originate),
        "terminate": bool(row.terminate),
    }


def client_snapshot(
    conn: Connection, client_id: int, *, changed_passwords: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """A client as the audit log records it: its fields, tags and accounts (masked)."""
    row = conn.execute(select(clients_t).where(clients_t.c.id == client_id)).one_or_none()
    if row is None:
        return None
    snapshot: dict[str, Any] = {}
    for column in SNAPSHOT_COLUMNS:
        value = getattr(row, column)
        if column == "rate_table_id":
            name = None
            if value is not None:
                name = conn.execute(
                    select(rate_tables_t.c.name).where(rate_tables_t.c.id == value)
                ).scalar_one_or_none()
            snapshot["rate_table"] = name
        elif column in {"postpaid", "hidden_numbers", "autoinvoicing"}:
            snapshot[column] = bool(value)
        else:
            snapshot[column] = value
    snapshot["tags"] = tags_of(conn, [client_id])[client_id]
    snapshot["accounts"] = [
        account_snapshot(a, password_changed=a.name in changed_passwords)
        for a in conn.execute(
            select(accounts_t)
            .where(accounts_t.c.client_id == client_id)
            .order_by(accounts_t.c.name)
        )
    ]
    return jsonable(snapshot)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ClientSnapshot:
    """A client's row as read, and its snapshot as ``client_snapshot`` makes it."""

    row: Mapping[str, Any]
    snapshot: dict[str, Any]


def snapshots_of(
    conn: Connection,
    client_ids: Sequence[int],
    *,
    changed_passwords: Mapping[int, set[str]] | None = None,
) -> dict[int, ClientSnapshot]:
    """``client_snapshot`` of many clients in a few statements (those that exist)."""
    changed = changed_passwords or {}
    out: dict[int, ClientSnapshot] = {}
    table_names = {
        int(r.id): str(r.name)
        for r in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.name))
    }
    for start in range(0, len(client_ids), _SNAPSHOT_CHUNK):
        chunk = list(client_ids[start : start + _SNAPSHOT_CHUNK])
        accounts: dict[int, list[dict[str, Any]]] = {cid: [] for cid in chunk}
        for a in conn.execute(
            select(accounts_t)
            .where(accounts_t.c.client_id.in_(chunk))
            .order_by(accounts_t.c.client_id, accounts_t.c.name)
        ):
            names = changed.get(a.client_id, ())
            accounts[a.client_id].append(account_snapshot(a, password_changed=a.name in names))
        tags = tags_of(conn, chunk)
        for row in conn.execute(select(clients_t).where(clients_t.c.id.in_(chunk))):
            snapshot = jsonable(_client_fields(row, table_names))
            snapshot["tags"] = tags[row.id]
            # plain already (strings, booleans, None): 100,000 of them in a carrier's load
            snapshot["accounts"] = accounts[row.id]
            out[int(row.id)] = ClientSnapshot(dict(row._mapping), snapshot)
    return out


_SNAPSHOT_CHUNK = 2000


def _client_fields(row: Any, table_names: Mapping[int, str]) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    for column in SNAPSHOT_COLUMNS:
        value = getattr(row, column)
        if column == "rate_table_id":
            snapshot["rate_table"] = None if value is None else table_names.get(value)
        elif column in {"postpaid", "hidden_numbers", "autoinvoicing"}:
            snapshot[column] = bool(value)
        else:
            snapshot[column] = value
    return snapshot


# --- reading -----------------------------------------------------------------------------------
def list_audit(
    engine: Engine,
    *,
    client: str | None = None,
    entity_type: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The latest ``limit`` entries (0: all), oldest first; ``client`` by name or id, and also
    the entries of a client that was fully deleted (matched by the name it had)."""
    with engine.connect() as conn:
        query = select(audit_t)
        if client is not None:
            row = conn.execute(select(clients_t).where(clients_t.c.name == client)).one_or_none()
            if row is None and client.isdigit():
                row = conn.execute(
                    select(clients_t).where(clients_t.c.id == int(client))
                ).one_or_none()
            if row is not None:
                query = query.where(
                    or_(audit_t.c.client_id == row.id, audit_t.c.client_name == row.name)
                )
            else:
                query = query.where(audit_t.c.client_name == client)
                known = conn.execute(query.limit(1)).first()
                if known is None:
                    raise NotFoundError(f"no client named {client!r} (nor any audit entry)")
        if entity_type is not None:
            query = query.where(audit_t.c.entity_type == entity_type)
        query = query.order_by(audit_t.c.id.desc())
        if limit > 0:
            query = query.limit(limit)
        rows = list(conn.execute(query))
    rows.reverse()
    return [_entry(r) for r in rows]


def _entry(row: Any) -> dict[str, Any]:
    before = None if row.before is None else json.loads(row.before)
    after = None if row.after is None else json.loads(row.after)
    if before is None:
        changes = ["created"]
    elif after is None:
        changes = ["removed"]
    else:
        keys = list(dict.fromkeys([*before, *after]))
        changes = [k for k in keys if before.get(k) != after.get(k)]
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "command": row.command,
        "entity": row.entity_type,
        "entity_id": row.entity_id,
        "name": row.entity_name,
        "client": row.client_name,
        "changes": changes,
        "before": before,
        "after": after,
    }
