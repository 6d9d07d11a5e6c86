"""Clients in the console: the rules a client's status sets, and the operations that keep
them (edit, mass edit, delete, full delete), each in one transaction of the adapters'."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from billing_core.errors import UserError
from billingctl.adapters import admin, admin_clients
from billingctl.adapters.client_queries import client_summary

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from billing_core.ports import LiveState, LiveView
    from billingctl.adapters.admin_clients import TagChange
    from billingctl.adapters.audit import AuditContext


# --- rules -----------------------------------------------------------------------------------
def accounts_in_service(status: str) -> bool:
    """A deleted client's accounts neither originate nor terminate; those of an active or
    stopped client do (a stopped client's calls are refused by authorization instead)."""
    return status != "deleted"


def account_flags_after(old_status: str, new_status: str) -> bool | None:
    """What the accounts' originate and terminate flags become when a client's status
    changes: None leaves them as they are (flags set account by account survive a change
    between active and stop); entering or leaving deleted sets them all."""
    if accounts_in_service(old_status) == accounts_in_service(new_status):
        return None
    return accounts_in_service(new_status)


def refuse_full_delete(client: str, *, calls_in_progress: int) -> None:
    """A client with calls in progress is never removed: their accounting would find no
    client. The operator deletes it (status deleted) and removes it once they end."""
    if calls_in_progress:
        raise UserError(
            f"client: {client} has {calls_in_progress} call(s) in progress;"
            " delete it first (clients delete) and full-delete once they have ended"
        )


def refuse_full_delete_live(client: str, view: LiveView) -> None:
    """The same, as the live state in Redis knows the calls (authorizations included)."""
    if view.active_calls or view.held:
        raise UserError(
            f"client: {client} has calls in progress (live state); delete it first"
            " (clients delete) and full-delete once they have ended"
        )


def status_changed(conn: Connection, client_id: int, name: str, old: str, new: str) -> None:
    """In the transaction that changed a client's status: its accounts follow it, and the
    daemon is told (the event, Disconnect-Requests for a client stopped or deleted)."""
    flags = account_flags_after(old, new)
    if flags is not None:
        admin.set_account_flags(conn, client_id, in_service=flags)
    admin.client_status_changed(conn, client_id, name, old, new)


# --- operations ------------------------------------------------------------------------------
def _edit(
    conn: Connection,
    row: Any,
    fields: Mapping[str, object],
    *,
    new_name: str | None,
    tags: TagChange,
    audit: AuditContext,
) -> list[str]:
    """One client's edit in ``conn``'s transaction: the fields that changed."""
    before = admin_clients.snapshot(conn, row.id)
    admin_clients.write_edit(conn, row, fields, new_name=new_name, tags=tags)
    if "status" in fields:
        status_changed(conn, row.id, new_name or row.name, row.status, str(fields["status"]))
    return admin_clients.record_edit(conn, row.id, before, audit)


def edit_client(
    engine: Engine,
    name_or_id: str,
    fields: Mapping[str, object],
    *,
    new_name: str | None = None,
    tags: TagChange | None = None,
    audit: AuditContext,
) -> tuple[dict[str, Any], list[str]]:
    """Change the fields given; returns the client and the names of the fields that changed."""
    with admin_clients.client_transaction(engine, name_or_id) as (conn, row):
        changed = _edit(conn, row, fields, new_name=new_name, tags=_tags(tags), audit=audit)
    return client_summary(engine, str(row.id)), changed


def mass_edit_clients(
    engine: Engine,
    clients: Sequence[str],
    fields: Mapping[str, object],
    *,
    tags: TagChange | None = None,
    audit: AuditContext,
) -> list[tuple[str, list[str]]]:
    """The same change to many clients in one transaction: all of them or none."""
    with engine.begin() as conn:
        return [
            (row.name, _edit(conn, row, fields, new_name=None, tags=_tags(tags), audit=audit))
            for row in admin_clients.find_clients(conn, clients)
        ]


def delete_client(engine: Engine, name_or_id: str, *, audit: AuditContext) -> tuple[str, int]:
    """Status deleted: authorization rejects its calls and its accounts neither originate nor
    terminate; the accounts, ledger and CDRs stay. Returns (name, accounts stopped)."""
    with admin_clients.client_transaction(engine, name_or_id) as (conn, row):
        if row.status == "deleted":
            return row.name, 0
        _edit(conn, row, {"status": "deleted"}, new_name=None, tags=_tags(None), audit=audit)
        return row.name, admin_clients.count_accounts(conn, row.id)


def full_delete_client(
    engine: Engine, name_or_id: str, *, audit: AuditContext, live: LiveState | None = None
) -> dict[str, Any]:
    """Remove the client and everything that belongs to it, in one transaction; refused
    while it has calls in progress, as the database or, when given, the live state in Redis
    knows them. Returns its name and what was removed (counts by kind)."""
    now = datetime.now(UTC)
    if live is not None:
        client_id = admin_clients.client_id(engine, name_or_id)
        refuse_full_delete_live(name_or_id, live.view([client_id], now)[client_id])
    with admin_clients.client_transaction(engine, name_or_id) as (conn, row):
        refuse_full_delete(
            row.name, calls_in_progress=admin_clients.calls_in_progress(conn, row.id, now)
        )
        return admin_clients.remove_client(conn, row, audit=audit)


def _tags(tags: TagChange | None) -> TagChange:
    return tags or admin_clients.TagChange()
