"""Accounts: how a client's calls are recognized (login, ip or ani, with a tech prefix).

Validated with ``load``'s rules (``provisioning.validate_account``); passwords are stored
in the form their methods need (``account_secrets``) and never shown or logged. Every
change bumps the catalog version: the daemon identifies callers from its in-memory index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from billing_core.adapters.sql_disconnect import account_disabled
from billing_core.adapters.sql_store import accounts_t, bump_catalog_version, clients_t, utcnow
from billing_core.domain.credentials import DEFAULT_METHODS, methods_text, parse_auth_methods
from billing_core.errors import NotFoundError, UserError
from billing_core.ports import SecretCipher
from billingctl.provisioning import validate_account

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


def add_account(
    engine: Engine,
    client: str,
    name: str,
    *,
    ident: str,
    value: str,
    tech_prefix: str | None = None,
    password: str | None = None,
    auth_methods: str | None = None,
    enabled: bool = True,
    audit: AuditContext,
    cipher: SecretCipher | None = None,
) -> dict[str, Any]:
    from billing_core.adapters.secretbox import NoKeyCipher

    spec = validate_account(
        name=name,
        ident=ident,
        value=value,
        tech_prefix=tech_prefix,
        password=password,
        auth_methods=auth_methods,
    )
    secret = secret_columns(spec.password, spec.auth_methods, cipher or NoKeyCipher())
    with engine.begin() as conn:
        owner = find_client(conn, client)
        if conn.execute(select(accounts_t.c.id).where(accounts_t.c.name == spec.name)).first():
            raise UserError(f"name: an account named {spec.name!r} already exists")
        _check_identity(conn, spec.ident, spec.value, spec.tech_prefix, exclude=None)
        in_service = owner.status != "deleted"
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


def edit_account(
    engine: Engine,
    name: str,
    change: AccountChange,
    *,
    audit: AuditContext,
    cipher: SecretCipher | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Apply ``change``; returns the account and the names of the fields that changed."""
    from billing_core.adapters.secretbox import NoKeyCipher

    with engine.begin() as conn:
        row = _find_account(conn, name)
        before = account_snapshot(row)
        tech_prefix = row.tech_prefix
        if change.tech_prefix is not None:
            tech_prefix = change.tech_prefix or None
        ident = change.ident or row.ident
        has_password = row.password_hash is not None or row.secret_enc is not None
        clear = change.clear_password or (change.ident is not None and ident != "login")
        if clear and has_password and not change.clear_password:
            raise UserError(
                f"password: only allowed for ident login (give --no-password to drop it"
                f" from {row.name!r})"
            )
        methods_given = change.auth_methods
        if methods_given is not None:
            try:
                methods = parse_auth_methods(methods_given)
            except ValueError as exc:
                raise UserError(f"auth_methods: {exc}") from None
            if ident != "login":
                raise UserError("auth_methods: only allowed for ident login")
        else:
            methods = parse_auth_methods(row.auth_methods or "pap")
        if clear:
            methods = DEFAULT_METHODS if ident != "login" else methods
        spec = validate_account(
            name=change.new_name or row.name,
            ident=ident,
            value=change.value if change.value is not None else row.value,
            tech_prefix=tech_prefix,
            password=change.password,
        )
        if clear:
            secret = secret_columns(None, methods, cipher or NoKeyCipher(), row)
            if change.clear_password and change.auth_methods is None:
                secret["auth_methods"] = methods_text(DEFAULT_METHODS)
        else:
            secret = secret_columns(
                change.password,
                methods,
                cipher or NoKeyCipher(),
                row,
                keep_password=change.password is None,
            )
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
        if row.enabled and change.enabled is False:
            account_disabled(conn, row.id, spec.name, row.client_id, utcnow())
        new_row = _find_account(conn, spec.name)
        after = account_snapshot(new_row, password_changed="secret_version" in secret)
        changed = [key for key in after if before.get(key) != after.get(key)]
        if changed:
            bump_catalog_version(conn)
            client_name = _client_name(conn, row.client_id)
            record(
                conn,
                audit,
                entity_type="account",
                entity_id=row.id,
                entity_name=spec.name,
                before=before,
                after=after,
                client_id=row.client_id,
                client_name=client_name,
            )
        return _account_dict(new_row, _client_name(conn, row.client_id)), changed


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
