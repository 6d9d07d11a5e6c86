"""How a login account's password is stored: the columns for a password and its methods.

PAP only: a salted hash (``password_hash``). CHAP or Digest: the password itself encrypted
under the server key (``secret_enc``), because both need it to verify a caller; never both.
``secret_version`` moves when the password itself changes, so that a daemon keeps the
secrets it decrypted across a key rotation (``rotate_key``), which changes no version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select, update

from billing_core.adapters.secretbox import NoKeyCipher
from billing_core.adapters.sql.catalog import bump_catalog_version
from billing_core.adapters.sql.tables import accounts_t
from billing_core.domain.credentials import methods_text, needs_secret
from billing_core.domain.model import check_password, hash_password
from billing_core.errors import UserError
from billing_core.ports import SecretCipher, SecretUnavailable

NO_KEY = (
    "security.secrets_key_file: chap and digest keep the password encrypted under the server"
    " key: set [security] secrets_key_file or secrets_key_env"
)


def _same_secret(cipher: SecretCipher, token: str | None, password: str) -> bool:
    if token is None:
        return False
    try:
        return cipher.decrypt(token) == password.encode("utf-8")
    except SecretUnavailable:
        return False


def secret_columns(
    password: str | None,
    methods: Iterable[str],
    cipher: SecretCipher,
    old: Any | None = None,
    *,
    keep_password: bool = False,
) -> dict[str, Any]:
    """The credential columns of an account given its (new) password and methods; ``old``
    is its current row (None: a new account). ``keep_password``: no password given, keep the
    stored one in the form the methods need (UserError when it cannot be converted)."""
    chosen = set(methods)
    text = methods_text(chosen)
    version = int(old.secret_version or 0) if old is not None else 0
    if password is None and keep_password and old is not None:
        if old.secret_enc is None and old.password_hash is None:
            if needs_secret(chosen):
                raise UserError("auth_methods: chap and digest need a password (--password)")
            return {"auth_methods": text}
        if needs_secret(chosen) and old.secret_enc is None:
            raise UserError(
                "auth_methods: the password is stored hashed (PAP only); give it again"
                " (--password) to allow chap or digest"
            )
        if not needs_secret(chosen) and old.secret_enc is not None:
            try:
                plain = cipher.decrypt(old.secret_enc).decode("utf-8")
            except (SecretUnavailable, UnicodeDecodeError):
                raise UserError(
                    "auth_methods: the stored password cannot be decrypted with the server key;"
                    " give it again (--password)"
                ) from None
            return {
                "auth_methods": text,
                "password_hash": hash_password(plain),
                "secret_enc": None,
            }
        return {"auth_methods": text}
    if password is None:
        return {"auth_methods": text, "password_hash": None, "secret_enc": None}
    if needs_secret(chosen):
        if isinstance(cipher, NoKeyCipher):
            raise UserError(NO_KEY)
        if old is not None and _same_secret(cipher, old.secret_enc, password):
            return {"auth_methods": text, "password_hash": None, "secret_enc": old.secret_enc}
        return {
            "auth_methods": text,
            "password_hash": None,
            "secret_enc": cipher.encrypt(password.encode("utf-8")),
            "secret_version": version + 1,
        }
    old_hash = old.password_hash if old is not None else None
    if old_hash is not None and check_password(old_hash, password.encode("utf-8")):
        return {"auth_methods": text, "password_hash": old_hash, "secret_enc": None}
    return {
        "auth_methods": text,
        "password_hash": hash_password(password),
        "secret_enc": None,
        "secret_version": version + 1,
    }


def rotate_key(engine: Engine, old: SecretCipher, new: SecretCipher) -> int:
    """Re-encrypt every stored secret under the new key, in one transaction; the secrets
    themselves (and their versions) do not change. Refused whole if one secret does not
    decrypt with the current key. Returns how many were re-encrypted."""
    if isinstance(old, NoKeyCipher):
        raise UserError(
            "security.secrets_key_file: no current server key to rotate from:"
            " set [security] secrets_key_file or secrets_key_env"
        )
    with engine.begin() as conn:
        rows = conn.execute(
            select(accounts_t.c.id, accounts_t.c.name, accounts_t.c.secret_enc)
            .where(accounts_t.c.secret_enc.is_not(None))
            .order_by(accounts_t.c.id)
            .with_for_update()
        ).all()
        updates = []
        for row in rows:
            try:
                plain = old.decrypt(row.secret_enc)
            except SecretUnavailable:
                raise UserError(
                    f"account {row.name!r}: its secret does not decrypt with the current key;"
                    " nothing was changed"
                ) from None
            updates.append((row.id, new.encrypt(plain)))
        for account_id, token in updates:
            conn.execute(
                update(accounts_t).where(accounts_t.c.id == account_id).values(secret_enc=token)
            )
        if updates:
            bump_catalog_version(conn)
        return len(updates)
