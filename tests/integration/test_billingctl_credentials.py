"""billingctl and credentials: --auth-methods, accounts show, the key, rotate-key, and no
secret in any output, audit entry or stored column (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_core.adapters.secretbox import AesGcmCipher
from billing_core.adapters.sql.tables import accounts_t

from .billingctl_support import Ctl, ctl

__all__ = ["ctl"]  # the fixture

KEY = bytes(range(32))
NEW_KEY = bytes(range(7, 39))


def _key_file(tmp_path: Path, name: str, key: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(key.hex() + "\n")
    path.chmod(mode)
    return path


def _with_key(ctl: Ctl, path: Path) -> None:
    text = ctl.config.read_text().split("[security]")[0]
    ctl.config.write_text(text + f'[security]\nsecrets_key_file = "{path}"\n')


def _secret(ctl: Ctl, name: str) -> str | None:
    with ctl.engine().connect() as conn:
        value = conn.execute(
            select(accounts_t.c.secret_enc).where(accounts_t.c.name == name)
        ).scalar_one()
    return None if value is None else str(value)


def test_methods_storage_show_and_rotation(ctl: Ctl, tmp_path: Path) -> None:
    ctl("clients", "add", "Acme")
    add = ("accounts", "add", "Acme")
    # without a key, chap or digest is refused with one line naming the setting
    error = ctl.fail(*add, "sip", "--ident", "login", "--value", "sip", "--password", "s3cret",
                     "--auth-methods", "digest")  # fmt: skip
    assert error.startswith("security.secrets_key_file:")
    assert "pap" in ctl.fail(*add, "x", "--ident", "login", "--value", "x", "--auth-methods",
                             "pap,ntlm")  # fmt: skip
    _with_key(ctl, _key_file(tmp_path, "k1", KEY))
    ctl(*add, "sip", "--ident", "login", "--value", "sip", "--password", "s3cret",
        "--auth-methods", "digest,chap")  # fmt: skip
    ctl(*add, "open", "--ident", "login", "--value", "open")
    ctl(*add, "plain", "--ident", "login", "--value", "plain", "--password", "pw")
    token = _secret(ctl, "sip")
    assert token is not None and AesGcmCipher(KEY).decrypt(token) == b"s3cret"

    shown = ctl.json("accounts", "show", "sip")
    assert shown["auth_methods"] == "chap,digest"
    assert shown["password_storage"] == "encrypted"
    assert ctl.json("accounts", "show", "open")["password_storage"] == (
        "none: identified by name alone"
    )
    assert ctl.json("accounts", "show", "plain")["password_storage"] == "hashed"
    listed = {a["name"]: a["auth_methods"] for a in ctl.json("accounts", "list")}
    assert listed == {"open": "pap", "plain": "pap", "sip": "chap,digest"}

    # a hashed password cannot become chap without being given again
    assert "--password" in ctl.fail("accounts", "edit", "plain", "--auth-methods", "chap")
    ctl("accounts", "edit", "plain", "--auth-methods", "pap,chap", "--password", "pw")
    assert _secret(ctl, "plain") is not None
    ctl("accounts", "edit", "plain", "--auth-methods", "pap")  # back to a hash, decrypted
    assert _secret(ctl, "plain") is None

    # rotation: a key file of another mode is refused; then every secret re-encrypted
    loose = _key_file(tmp_path, "k2-loose", NEW_KEY, mode=0o644)
    assert "mode 0600" in ctl.fail("security", "rotate-key", "--new-key-file", str(loose))
    new = _key_file(tmp_path, "k2", NEW_KEY)
    assert "1 account secrets re-encrypted" in ctl("security", "rotate-key", "--new-key-file",
                                                   str(new))  # fmt: skip
    rotated = _secret(ctl, "sip")
    assert rotated is not None and rotated != token
    assert AesGcmCipher(NEW_KEY).decrypt(rotated) == b"s3cret"
    # with the old key still configured, a second rotation is refused and changes nothing
    assert "does not decrypt" in ctl.fail("security", "rotate-key", "--new-key-file", str(new))
    _with_key(ctl, new)
    ctl("accounts", "edit", "sip", "--auth-methods", "digest")

    everything = "\n".join(
        [
            ctl("accounts", "list", "--format", "json"),
            ctl("accounts", "show", "sip"),
            ctl("audit", "list", "--format", "json"),
            ctl("clients", "show", "Acme", "--format", "json"),
        ]
    )
    for secret in ("s3cret", b"s3cret".hex(), KEY.hex(), NEW_KEY.hex(), rotated):
        assert secret not in everything
    audit = json.loads(ctl("audit", "list", "--entity", "account", "--format", "json"))
    assert audit and all("v1$" not in json.dumps(entry) for entry in audit)


def test_load_with_auth_methods_and_path_errors(ctl: Ctl, tmp_path: Path) -> None:
    _with_key(ctl, _key_file(tmp_path, "k", KEY))
    path = tmp_path / "p.yaml"
    path.write_text(
        "clients:\n  - name: Acme\n    accounts:\n"
        "      - {name: a, ident: login, value: a, password: pw, auth_methods: [pap, digest]}\n"
        "      - {name: b, ident: ip, value: 10.0.0.1, auth_methods: [pap]}\n"
    )
    error = ctl.fail("load", str(path))
    assert error.startswith("clients[0].accounts[1].auth_methods: only allowed for ident login")
    path.write_text(
        "clients:\n  - name: Acme\n    accounts:\n"
        "      - {name: a, ident: login, value: a, password: pw, auth_methods: [pap, digest]}\n"
    )
    ctl("load", str(path))
    first = _secret(ctl, "a")
    ctl("load", str(path))
    assert _secret(ctl, "a") == first  # idempotent: nothing re-encrypted
    assert ctl.json("accounts", "show", "a")["auth_methods"] == "pap,digest"


@pytest.mark.parametrize("content", ["short", "zz" * 32])
def test_a_bad_key_is_one_line(ctl: Ctl, tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad"
    path.write_text(content)
    path.chmod(0o600)
    _with_key(ctl, path)
    # a bad key is a bad config: exit 2, as radiusd check-config gives
    error = ctl.fail("accounts", "add", "Nobody", "n", "--ident", "login", "--value", "n", code=2)
    assert error.startswith("security.secrets_key_file: the key must be 64 hex digits")
