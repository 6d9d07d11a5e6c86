"""``load``'s clients written set-based: a batch of clients per round of statements.

The per-client path (``admin.upsert_client``, ``upsert_accounts``, ``post_payments``) costs
about 17 statements a client; here a batch of clients costs a few statements per table:
one read of what exists (clients, tags, accounts, payment ids), executemany inserts and
updates of only the rows that differ, and the audit entries in one executemany. What is
written is what the per-client path writes, row for row and entry for entry (the same
audit snapshots, a payment's live sequence, the status events), in the caller's
transaction; a second load of the same file writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update

from billing_core.adapters.sql.bulk import bulk_for
from billing_core.adapters.sql.tables import (
    accounts_t,
    clients_t,
    live_t,
    transactions_t,
    utcnow,
)
from billing_core.domain.money import ZERO
from billing_core.errors import UserError
from billing_core.ports import SecretCipher
from billingctl.provisioning import AccountSpec, ClientSpec

from .account_secrets import secret_columns
from .admin import LiveMove, _client_values, new_client_id
from .audit import AuditContext, ClientSnapshot, audit_t, entry_values, snapshots_of
from .client_queries import client_tags_t, rate_tables_t, tags_of, tags_t

__all__ = ["BatchResult", "ClientBatch", "insert_rows", "rate_table_ids", "write_batch"]

#: IN lists are cut to this many values (SQLite's limit on bound values is 32766).
_IN_CHUNK = 5000
_ACCOUNT_WRITE = (
    "client_id",
    "ident",
    "value",
    "tech_prefix",
    "auth_methods",
    "password_hash",
    "secret_enc",
    "secret_version",
    "enabled",
)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys): COPY on PostgreSQL (a server-side cost per
    row several times lower than one INSERT each), executemany on SQLite. Values go through
    the columns' bind processing either way, so they are stored as an INSERT stores them."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    processors = [column.type.bind_processor(conn.dialect) for column in columns]
    driver = conn.connection.driver_connection
    assert driver is not None
    quoted = ", ".join(f'"{name}"' for name in names)
    with (
        driver.cursor() as cursor,
        cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy,
    ):
        for row in rows:
            copy.write_row(
                [
                    row[name] if process is None else process(row[name])
                    for name, process in zip(names, processors, strict=True)
                ]
            )


def rate_table_ids(
    conn: Connection, clients: Sequence[ClientSpec], table_ids: Mapping[str, int]
) -> dict[str, int]:
    """The ids of every rate table the clients name: the file's, else the database's; an
    unknown one is refused at the first client naming it (before anything is written)."""
    ids = dict(table_ids)
    wanted = sorted({c.rate_table for c in clients if c.rate_table and c.rate_table not in ids})
    for chunk in _chunks(wanted):
        for row in conn.execute(
            select(rate_tables_t.c.id, rate_tables_t.c.name).where(rate_tables_t.c.name.in_(chunk))
        ):
            ids[row.name] = int(row.id)
    for index, client in enumerate(clients):
        if client.rate_table is not None and client.rate_table not in ids:
            raise UserError(
                f"clients[{index}].rate_table: unknown rate table {client.rate_table!r}"
            )
    return ids


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """Clients of the file, ``first`` being the index of ``clients[0]`` in it."""

    clients: Sequence[ClientSpec]
    first: int
    table_ids: Mapping[str, int]
    cipher: SecretCipher
    audit: AuditContext
    #: the status rules (``services.clients``): whether a status keeps accounts in
    #: service, and what follows a status change, in the same transaction
    in_service: Callable[[str], bool]
    status_changed: Callable[[Connection, int, str, str, str], None]


@dataclass(slots=True)
class BatchResult:
    """What a batch wrote: the payments applied (for a live state outside the database)."""

    applied: list[LiveMove] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """A batch's clients by name: ids, old statuses, and which were touched by a write."""

    ids: dict[str, int] = field(default_factory=dict)
    old_status: dict[str, str] = field(default_factory=dict)  # existing clients only
    before: dict[int, ClientSnapshot] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    changed_passwords: dict[int, set[str]] = field(default_factory=dict)


def write_batch(conn: Connection, batch: ClientBatch) -> BatchResult:
    """The batch's clients, tags, accounts and payments, audited, in ``conn``'s transaction."""
    plan = _Plan()
    existing = _existing_clients(conn, [c.name for c in batch.clients])
    for name, (client_id, status) in existing.items():
        plan.ids[name] = client_id
        plan.old_status[name] = status
    plan.before = snapshots_of(conn, list(plan.ids.values()))
    _write_clients(conn, batch, plan)
    _write_tags(conn, batch, plan)
    _write_accounts(conn, batch, plan)
    _status_changes(conn, batch, plan)
    result = BatchResult()
    entries = _client_entries(conn, batch, plan)
    _write_payments(conn, batch, plan, entries, result)
    insert_rows(conn, audit_t, [row for per_client in entries for row in per_client])
    return result


def _existing_clients(conn: Connection, names: Sequence[str]) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for chunk in _chunks(names):
        for row in conn.execute(
            select(clients_t.c.id, clients_t.c.name, clients_t.c.status).where(
                clients_t.c.name.in_(chunk)
            )
        ):
            found[row.name] = (int(row.id), str(row.status))
    return found


def _write_clients(conn: Connection, batch: ClientBatch, plan: _Plan) -> None:
    """New clients inserted (with their live balance), changed ones updated."""
    values = {
        c.name: _client_values(c, batch.table_ids[c.rate_table] if c.rate_table else None)
        for c in batch.clients
    }
    new = [c.name for c in batch.clients if c.name not in plan.ids]
    if new:
        first_id = new_client_id(conn)
        rows = [values[name] for name in new]
        if first_id is not None:  # SQLite: ids past every one ever used (admin.new_client_id)
            rows = [{**row, "id": first_id + i} for i, row in enumerate(rows)]
        conn.execute(insert(clients_t), rows)
        for name, (client_id, _status) in _existing_clients(conn, new).items():
            plan.ids[name] = client_id
            plan.touched.add(client_id)
        conn.execute(
            insert(live_t), [{"client_id": plan.ids[name], "balance": ZERO} for name in new]
        )
    changed = [
        {**values[name], "b_id": plan.ids[name]}
        for name in plan.old_status
        if _differs(plan.before.get(plan.ids[name]), values[name])
    ]
    if changed:
        conn.execute(
            update(clients_t).where(clients_t.c.id == bindparam("b_id")),
            changed,
        )
        plan.touched.update(int(row["b_id"]) for row in changed)


def _differs(before: ClientSnapshot | None, values: Mapping[str, Any]) -> bool:
    """Whether writing ``values`` would change the client's row (read into ``before``)."""
    if before is None:
        return True
    return any(before.row[key] != value for key, value in values.items())


def _write_tags(conn: Connection, batch: ClientBatch, plan: _Plan) -> None:
    """Each client's tags become exactly the file's; a tag is created on first use."""
    current = tags_of(conn, list(plan.ids.values()))
    wanted = {
        plan.ids[c.name]: list(dict.fromkeys(c.tags))
        for c in batch.clients
        if set(c.tags) != set(current.get(plan.ids[c.name], []))
    }
    if not wanted:
        return
    names = sorted({tag for tags in wanted.values() for tag in tags})
    tag_ids = _tag_ids(conn, names)
    missing = [name for name in names if name not in tag_ids]
    if missing:
        conn.execute(insert(tags_t), [{"name": name} for name in missing])
        tag_ids.update(_tag_ids(conn, missing))
    for chunk in _chunks(list(wanted)):
        conn.execute(delete(client_tags_t).where(client_tags_t.c.client_id.in_(chunk)))
    links = [
        {"client_id": client_id, "tag_id": tag_ids[tag]}
        for client_id, tags in wanted.items()
        for tag in tags
    ]
    insert_rows(conn, client_tags_t, links)
    plan.touched.update(wanted)


def _tag_ids(conn: Connection, names: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(names):
        for row in conn.execute(select(tags_t.c.id, tags_t.c.name).where(tags_t.c.name.in_(chunk))):
            found[row.name] = int(row.id)
    return found


def _write_accounts(conn: Connection, batch: ClientBatch, plan: _Plan) -> None:
    """The clients' accounts by name: new ones inserted (originating and terminating when
    the client is in service), the ones that differ updated (a moved account too)."""
    names = [a.name for c in batch.clients for a in c.accounts]
    old: dict[str, Any] = {}
    for chunk in _chunks(names):
        for found in conn.execute(select(accounts_t).where(accounts_t.c.name.in_(chunk))):
            old[found.name] = found
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for offset, client in enumerate(batch.clients):
        client_id = plan.ids[client.name]
        in_service = batch.in_service(client.status)
        for account in client.accounts:
            owner = old.get(account.name)
            row = _account_row(batch, batch.first + offset, client_id, account, owner, plan)
            if owner is None:
                inserts.append(
                    {**row, "name": account.name, "originate": in_service, "terminate": in_service}
                )
                plan.touched.add(client_id)
            elif any(getattr(owner, key) != row[key] for key in _ACCOUNT_WRITE):
                updates.append({**row, "b_id": owner.id})
                # an account taken from another client shows in this client's entry only,
                # as when clients were written one at a time
                plan.touched.add(client_id)
    insert_rows(conn, accounts_t, inserts)
    if updates:
        conn.execute(update(accounts_t).where(accounts_t.c.id == bindparam("b_id")), updates)


def _account_row(
    batch: ClientBatch,
    index: int,
    client_id: int,
    account: AccountSpec,
    owner: Any | None,
    plan: _Plan,
) -> dict[str, Any]:
    """The columns ``_ACCOUNT_WRITE`` of an account as the file gives it; ``owner`` is its
    row (None: new). Its credentials as ``secret_columns`` keeps them (a password unchanged
    keeps its hash or ciphertext)."""
    try:
        secret = secret_columns(account.password, account.auth_methods, batch.cipher, owner)
    except UserError as exc:
        raise UserError(f"clients[{index}].accounts: {account.name}: {exc}") from None
    if owner is not None and "secret_version" in secret and account.password is not None:
        plan.changed_passwords.setdefault(client_id, set()).add(account.name)
    version = int(owner.secret_version or 0) if owner is not None else 0
    return {
        "client_id": client_id,
        "ident": account.ident,
        "value": account.value,
        "tech_prefix": account.tech_prefix,
        "password_hash": None,
        "secret_enc": None,
        **secret,
        "secret_version": secret.get("secret_version", version),
        "enabled": True,
    }


def _status_changes(conn: Connection, batch: ClientBatch, plan: _Plan) -> None:
    """An existing client whose status the file changes: its accounts follow, the daemon is
    told (the batch's ``status_changed``, per client: it is rare)."""
    for client in batch.clients:
        old = plan.old_status.get(client.name)
        if old is not None and old != client.status:
            client_id = plan.ids[client.name]
            batch.status_changed(conn, client_id, client.name, old, client.status)
            plan.touched.add(client_id)


def _client_entries(
    conn: Connection, batch: ClientBatch, plan: _Plan
) -> list[list[dict[str, Any]]]:
    """Per client of the batch (in file order), its audit entry if it changed."""
    touched = [plan.ids[c.name] for c in batch.clients if plan.ids[c.name] in plan.touched]
    after = snapshots_of(conn, touched, changed_passwords=plan.changed_passwords)
    now = utcnow()
    entries: list[list[dict[str, Any]]] = []
    for client in batch.clients:
        client_id = plan.ids[client.name]
        entry = None
        if client_id in after:
            before = plan.before.get(client_id)
            entry = entry_values(
                batch.audit,
                entity_type="client",
                entity_id=client_id,
                entity_name=client.name,
                before=None if before is None else before.snapshot,
                after=after[client_id].snapshot,
                client_id=client_id,
                client_name=client.name,
                at=now,
                as_json=True,
            )
        entries.append([] if entry is None else [entry])
    return entries


def _write_payments(
    conn: Connection,
    batch: ClientBatch,
    plan: _Plan,
    entries: list[list[dict[str, Any]]],
    result: BatchResult,
) -> None:
    """The payments not applied before (by id): ledger rows, the live balance moved once
    per payment (its own sequence, as one at a time would), an audit entry each."""
    wanted = [(i, c, p) for i, c in enumerate(batch.clients) for p in c.payments]
    seen = _applied_ids(conn, [p.id for _i, _c, p in wanted])
    new = [(i, c, p) for i, c, p in wanted if p.id not in seen]
    if not new:
        return
    now = utcnow()
    conn.execute(
        insert(transactions_t),
        [
            {
                "client_id": plan.ids[c.name],
                "kind": "payment" if p.amount >= 0 else "charge",
                "amount": p.amount,
                "note": p.note,
                "external_id": p.id,
                "created_at": now,
            }
            for _i, c, p in new
        ],
    )
    ids = _applied_ids(conn, [p.id for _i, _c, p in new])
    seqs = _move_in_rounds(conn, [(plan.ids[c.name], p.amount) for _i, c, p in new])
    for (i, c, p), seq in zip(new, seqs, strict=True):
        client_id = plan.ids[c.name]
        result.applied.append((client_id, p.amount, seq))
        entry = entry_values(
            batch.audit,
            entity_type="transaction",
            entity_id=ids[p.id],
            entity_name=p.id,
            before=None,
            after={
                "kind": "payment" if p.amount >= 0 else "charge",
                "amount": p.amount,
                "note": p.note,
                "external_id": p.id,
            },
            client_id=client_id,
            client_name=c.name,
            at=now,
        )
        if entry is not None:
            entries[i].append(entry)


def _applied_ids(conn: Connection, external_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(external_ids):
        for row in conn.execute(
            select(transactions_t.c.id, transactions_t.c.external_id).where(
                transactions_t.c.external_id.in_(chunk)
            )
        ):
            found[str(row.external_id)] = int(row.id)
    return found


def _move_in_rounds(conn: Connection, moves: Iterable[tuple[int, Decimal]]) -> list[int]:
    """Each move's live sequence: round k moves the k-th payment of every client, so a
    client with several gets consecutive sequences in file order, as one at a time would."""
    rounds: list[dict[int, Decimal]] = []
    where: list[tuple[int, int]] = []
    count: dict[int, int] = {}
    for client_id, amount in moves:
        k = count.get(client_id, 0)
        count[client_id] = k + 1
        if k == len(rounds):
            rounds.append({})
        rounds[k][client_id] = amount
        where.append((k, client_id))
    seqs = [bulk_for(conn).move_balances(moves_k) for moves_k in rounds]
    return [seqs[k][client_id] for k, client_id in where]
