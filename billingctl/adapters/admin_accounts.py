"""Accounts' SQL: how a client's calls are recognized (login, ip or ani, with a tech prefix).

Validated with ``load``'s rules (``provisioning.validate_account``) and decided by
``billingctl.services.accounts``; passwords are stored
in the form their methods need (``account_secrets``) and never shown or logged. Every
change bumps the catalog version: the daemon identifies callers from its in-memory index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from billing_core.adapters.sql import disconnect as sql_disconnect
from billing_core.adapters.sql.catalog import bump_catalog_version
from billing_core.adapters.sql.tables import accounts_t, clients_t, utcnow
from billing_core.domain.credentials import DEFAULT_METHODS, AuthMethod, methods_text
from billing_core.errors import NotFoundError, UserError
from billing_core.ports import SecretCipher
from billingctl.provisioning import AccountSpec

from .account_secrets import secret_columns
from .audit import AuditContext, account_snapshot, record
from .client_queries import find_client


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What ``accounts edit`` changes; None leaves a field as it is."""

    ident: str | None = None
    value: str | None = None
    tech_prefix: str | None = None  # "" clears it
    password: str | None = None
    clear_password: bool = False
    auth_methods: str | None = None  # "pap,chap,digest"
    enabled: bool | None = None
    originate: bool | None = None
    terminate: bool | None = None
    new_name: str | None = None


@dataclass(frozen=True, slots=True)
class AccountEdit:
    """An edit decided (``billingctl.services.accounts.plan_edit``): the account as it
    becomes, the methods its password may be proven by, whether its password goes, and
    whether the stored methods go back to the default."""

    spec: AccountSpec
    methods: frozenset[AuthMethod]
    clear_password: bool
    reset_methods: bool
    disables: bool  # an enabled account disabled: the daemon ends its calls


def _find_account(conn: Connection, name: str) -> Any:
    row = conn.execute(select(accounts_t).where(accounts_t.c.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"no account named {name!r}")
    return row


def _check_identity(
    conn: Connection, ident: str, value: str, tech_prefix: str | None, *, exclude: int | None
) -> None:
    query = select(accounts_t.c.name).where(
        accounts_t.c.ident == ident,
        accounts_t.c.value == value,
        accounts_t.c.tech_prefix.is_(None)
        if tech_prefix is None
        else accounts_t.c.tech_prefix == tech_prefix,
    )
    if exclude is not None:
        query = query.where(accounts_t.c.id != exclude)
    other = conn.execute(query).scalar_one_or_none()
    if other is not None:
        raise UserError(
            f"value: {ident} {value!r} with the same tech_prefix is already account {other!r}"
        )


def _client_name(conn: Connection, client_id: int) -> str:
    return str(
        conn.execute(select(clients_t.c.name).where(clients_t.c.id == client_id)).scalar_one()
    )


@contextmanager
def account_transaction(engine: Engine, name: str) -> Iterator[tuple[Connection, Any]]:
    """One transaction and the account's row, read in it."""
    with engine.begin() as conn:
        yield conn, _find_account(conn, name)


def new_secret(spec: AccountSpec, cipher: SecretCipher | None) -> dict[str, Any]:
    """The credential columns of a new account."""
    from billing_core.adapters.secretbox import NoKeyCipher

    return secret_columns(spec.password, spec.auth_methods, cipher or NoKeyCipher())


def insert_account(
    conn: Connection,
    owner: Any,
    spec: AccountSpec,
    secret: dict[str, Any],
    *,
    enabled: bool,
    in_service: bool,
    audit: AuditContext,
) -> dict[str, Any]:
    """A new account of the client ``owner`` (its name and identity unique), audited."""
    if conn.execute(select(accounts_t.c.id).where(accounts_t.c.name == spec.name)).first():
        raise UserError(f"name: an account named {spec.name!r} already exists")
    _check_identity(conn, spec.ident, spec.value, spec.tech_prefix, exclude=None)
    account_id = conn.execute(
        insert(accounts_t)
        .values(
            client_id=owner.id,
            name=spec.name,
            ident=spec.ident,
            value=spec.value,
            tech_prefix=spec.tech_prefix,
            **secret,
            enabled=enabled,
            originate=in_service,
            terminate=in_service,
        )
        .returning(accounts_t.c.id)
    ).scalar_one()
    row = _find_account(conn, spec.name)
    bump_catalog_version(conn)
    record(
        conn,
        audit,
        entity_type="account",
        entity_id=account_id,
        entity_name=spec.name,
        before=None,
        after=account_snapshot(row),
        client_id=owner.id,
        client_name=owner.name,
    )
    return _account_dict(row, owner.name)


def _edited_secret(
    row: Any, change: AccountChange, edit: AccountEdit, cipher: SecretCipher
) -> dict[str, Any]:
    if edit.clear_password:
        secret = secret_columns(None, edit.methods, cipher, row)
        if edit.reset_methods:
            secret["auth_methods"] = methods_text(DEFAULT_METHODS)
        return secret
    return secret_columns(
        change.password, edit.methods, cipher, row, keep_password=change.password is None
    )


def write_edit(
    conn: Connection,
    row: Any,
    change: AccountChange,
    edit: AccountEdit,
    *,
    cipher: SecretCipher | None = None,
) -> bool:
    """Write an edit decided by ``billingctl.services.accounts.plan_edit`` (its name and
    identity still unique); True when the password changed."""
    from billing_core.adapters.secretbox import NoKeyCipher

    spec = edit.spec
    secret = _edited_secret(row, change, edit, cipher or NoKeyCipher())
    if (
        spec.name != row.name
        and conn.execute(select(accounts_t.c.id).where(accounts_t.c.name == spec.name)).first()
    ):
        raise UserError(f"name: an account named {spec.name!r} already exists")
    _check_identity(conn, spec.ident, spec.value, spec.tech_prefix, exclude=row.id)
    values: dict[str, object] = {
        "name": spec.name,
        "ident": spec.ident,
        "value": spec.value,
        "tech_prefix": spec.tech_prefix,
        **secret,
    }
    for key in ("enabled", "originate", "terminate"):
        flag = getattr(change, key)
        if flag is not None:
            values[key] = flag
    conn.execute(update(accounts_t).where(accounts_t.c.id == row.id).values(**values))
    return "secret_version" in secret


def account_disabled(conn: Connection, row: Any, name: str) -> None:
    """Tell the daemon, in the edit's transaction: the event, a Disconnect-Request for each
    of the account's calls."""
    sql_disconnect.account_disabled(conn, row.id, name, row.client_id, utcnow())


def record_edit(
    conn: Connection, row: Any, name: str, *, password_changed: bool, audit: AuditContext
) -> tuple[dict[str, Any], list[str]]:
    """After an edit of the account ``row`` (now named ``name``): the account and the fields
    that changed; when any did, the catalog moves on and the audit log gets the change."""
    before = account_snapshot(row)
    new_row = _find_account(conn, name)
    after = account_snapshot(new_row, password_changed=password_changed)
    changed = [key for key in after if before.get(key) != after.get(key)]
    client_name = _client_name(conn, row.client_id)
    if changed:
        bump_catalog_version(conn)
        record(
            conn,
            audit,
            entity_type="account",
            entity_id=row.id,
            entity_name=name,
            before=before,
            after=after,
            client_id=row.client_id,
            client_name=client_name,
        )
    return _account_dict(new_row, client_name), changed


def delete_account(engine: Engine, name: str, *, audit: AuditContext) -> str:
    """Remove the account; its CDRs and the client's ledger stay. Returns the client's name."""
    with engine.begin() as conn:
        row = _find_account(conn, name)
        client_name = _client_name(conn, row.client_id)
        conn.execute(delete(accounts_t).where(accounts_t.c.id == row.id))
        bump_catalog_version(conn)
        record(
            conn,
            audit,
            entity_type="account",
            entity_id=row.id,
            entity_name=row.name,
            before=account_snapshot(row),
            after=None,
            client_id=row.client_id,
            client_name=client_name,
        )
        return client_name


def list_accounts(engine: Engine, client: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = (
            select(accounts_t, clients_t.c.name.label("client_name"))
            .join(clients_t, clients_t.c.id == accounts_t.c.client_id)
            .order_by(clients_t.c.name, accounts_t.c.name)
        )
        if client is not None:
            query = query.where(accounts_t.c.client_id == find_client(conn, client).id)
        return [_account_dict(row, row.client_name) for row in conn.execute(query)]


def _account_dict(row: Any, client_name: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "client": client_name,
        "ident": row.ident,
        "value": row.value,
        "tech_prefix": row.tech_prefix,
        "password": row.password_hash is not None or row.secret_enc is not None,
        "auth_methods": _methods_shown(row),
        "password_storage": _storage(row),
        "enabled": bool(row.enabled),
        "originate": bool(row.originate),
        "terminate": bool(row.terminate),
    }


def _methods_shown(row: Any) -> str:
    if row.ident != "login":
        return ""
    return str(row.auth_methods or "pap")


def _storage(row: Any) -> str:
    """How the account's caller is proven (never the secret itself)."""
    if row.ident != "login":
        return ""
    if row.secret_enc is not None:
        return "encrypted"
    if row.password_hash is not None:
        return "hashed"
    return "none: identified by name alone"


def show_account(engine: Engine, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = _find_account(conn, name)
        return _account_dict(row, _client_name(conn, row.client_id))
