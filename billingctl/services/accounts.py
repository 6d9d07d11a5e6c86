"""Accounts in the console: what an edit means (which password and methods a change
leaves, what only a login account may carry) and the flags a new account starts with;
the SQL is ``billingctl.adapters.admin_accounts``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from billing_core.domain.credentials import DEFAULT_METHODS, AuthMethod, parse_auth_methods
from billing_core.errors import UserError
from billingctl.adapters import admin_accounts, admin_clients
from billingctl.adapters.admin_accounts import AccountChange, AccountEdit
from billingctl.provisioning import validate_account
from billingctl.services.clients import accounts_in_service

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from billing_core.ports import SecretCipher
    from billingctl.adapters.audit import AuditContext


class CurrentAccount(Protocol):
    """What an edit is decided from (an account row)."""

    @property
    def name(self) -> str: ...

    @property
    def ident(self) -> str: ...

    @property
    def value(self) -> str: ...

    @property
    def tech_prefix(self) -> str | None: ...

    @property
    def password_hash(self) -> str | None: ...

    @property
    def secret_enc(self) -> bytes | None: ...

    @property
    def auth_methods(self) -> str | None: ...

    @property
    def enabled(self) -> bool: ...


def _methods(current: CurrentAccount, change: AccountChange, ident: str) -> frozenset[AuthMethod]:
    if change.auth_methods is None:
        return parse_auth_methods(current.auth_methods or "pap")
    try:
        methods = parse_auth_methods(change.auth_methods)
    except ValueError as exc:
        raise UserError(f"auth_methods: {exc}") from None
    if ident != "login":
        raise UserError("auth_methods: only allowed for ident login")
    return methods


def plan_edit(current: CurrentAccount, change: AccountChange) -> AccountEdit:
    """What ``change`` makes of the account ``current``. A password and methods belong to
    login accounts only: an account leaving login loses its password, which must then be
    dropped on purpose (--no-password)."""
    tech_prefix = current.tech_prefix
    if change.tech_prefix is not None:
        tech_prefix = change.tech_prefix or None
    ident = change.ident or current.ident
    has_password = current.password_hash is not None or current.secret_enc is not None
    clear = change.clear_password or (change.ident is not None and ident != "login")
    if clear and has_password and not change.clear_password:
        raise UserError(
            f"password: only allowed for ident login (give --no-password to drop it"
            f" from {current.name!r})"
        )
    methods = _methods(current, change, ident)
    if clear and ident != "login":
        methods = DEFAULT_METHODS
    spec = validate_account(
        name=change.new_name or current.name,
        ident=ident,
        value=change.value if change.value is not None else current.value,
        tech_prefix=tech_prefix,
        password=change.password,
    )
    return AccountEdit(
        spec=spec,
        methods=methods,
        clear_password=clear,
        reset_methods=change.clear_password and change.auth_methods is None,
        disables=bool(current.enabled) and change.enabled is False,
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
    """A new account of ``client``, originating and terminating unless the client is
    deleted."""
    spec = validate_account(
        name=name,
        ident=ident,
        value=value,
        tech_prefix=tech_prefix,
        password=password,
        auth_methods=auth_methods,
    )
    secret = admin_accounts.new_secret(spec, cipher)
    with admin_clients.client_transaction(engine, client) as (conn, owner):
        return admin_accounts.insert_account(
            conn,
            owner,
            spec,
            secret,
            enabled=enabled,
            in_service=accounts_in_service(owner.status),
            audit=audit,
        )


def edit_account(
    engine: Engine,
    name: str,
    change: AccountChange,
    *,
    audit: AuditContext,
    cipher: SecretCipher | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Apply ``change``; returns the account and the names of the fields that changed."""
    with admin_accounts.account_transaction(engine, name) as (conn, row):
        edit = plan_edit(row, change)
        password_changed = admin_accounts.write_edit(conn, row, change, edit, cipher=cipher)
        if edit.disables:
            admin_accounts.account_disabled(conn, row, edit.spec.name)
        return admin_accounts.record_edit(
            conn, row, edit.spec.name, password_changed=password_changed, audit=audit
        )
