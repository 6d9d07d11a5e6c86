"""billingctl accounts on SQLite and PostgreSQL: add/list/edit/disable/enable/delete."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import accounts_t
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import check_password

from .billingctl_support import Ctl, ctl

__all__ = ["ctl"]  # the fixture


def _password_hash(ctl: Ctl, name: str) -> str | None:
    with ctl.engine().connect() as conn:
        value = conn.execute(
            select(accounts_t.c.password_hash).where(accounts_t.c.name == name)
        ).scalar_one()
    return None if value is None else str(value)


def test_accounts_lifecycle(ctl: Ctl, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl("clients", "add", "Acme")
    ctl("clients", "add", "Beta")
    out = ctl(
        "accounts", "add", "Acme", "acme-login", "--ident", "login", "--value", "acme",
        "--password", "s3cret",
    )  # fmt: skip
    assert out == "account acme-login added to Acme\n"
    ctl("accounts", "add", "Acme", "acme-ip", "--ident", "ip", "--value", "::ffff:10.1.1.1",
        "--tech-prefix", "123#")  # fmt: skip
    ctl("accounts", "add", "Beta", "beta-ani", "--ident", "ani", "--value", "+15551234567")

    stored = _password_hash(ctl, "acme-login")
    assert stored is not None
    assert stored.startswith("sha256$")
    assert check_password(stored, b"s3cret")
    assert "s3cret" not in stored

    listed = ctl.json("accounts", "list")
    assert [(a["client"], a["name"], a["ident"], a["value"]) for a in listed] == [
        ("Acme", "acme-ip", "ip", "10.1.1.1"),  # canonical IPv4
        ("Acme", "acme-login", "login", "acme"),
        ("Beta", "beta-ani", "ani", "15551234567"),  # '+' dropped
    ]
    assert [a["password"] for a in listed] == [False, True, False]
    assert [a["name"] for a in ctl.json("accounts", "list", "--client", "Beta")] == ["beta-ani"]
    table = ctl("accounts", "list")
    assert "s3cret" not in table and "sha256" not in table

    # edit: new password (from stdin), tech prefix removed, renamed
    monkeypatch.setattr("sys.stdin", io.StringIO("n3w pass\n"))
    out = ctl("accounts", "edit", "acme-login", "--password-stdin")
    assert out == "account acme-login updated: password\n"
    assert check_password(_password_hash(ctl, "acme-login") or "", b"n3w pass")
    out = ctl("accounts", "edit", "acme-ip", "--tech-prefix", "", "--name", "acme-gw")
    assert out == "account acme-gw updated: name, tech_prefix\n"
    assert ctl("accounts", "disable", "acme-gw") == "account acme-gw disabled\n"
    assert ctl("accounts", "disable", "acme-gw") == "account acme-gw disabled already\n"
    caller = CallerFacts(framed_ip="10.1.1.1", called="15550001111")
    assert SqlStore(ctl.engine()).load_catalog().accounts.identify(caller) is None  # disabled
    ctl("accounts", "enable", "acme-gw")
    found = SqlStore(ctl.engine()).load_catalog().accounts.identify(caller)
    assert found is not None
    assert found.account.name == "acme-gw"
    ctl("accounts", "edit", "acme-gw", "--originate", "no")
    gw = next(a for a in ctl.json("accounts", "list") if a["name"] == "acme-gw")
    assert (gw["enabled"], gw["originate"], gw["terminate"], gw["tech_prefix"]) == (
        True,
        False,
        True,
        None,
    )

    # refusals name the field
    refusals = [
        (("add", "Acme", "x", "--ident", "ip", "--value", "10.1.1"),
         "value: must be an IPv4 or IPv6 address"),
        (("add", "Acme", "x", "--ident", "ani", "--value", "555-CALL"),
         "value: must be a number: digits, optionally after '+'"),
        (("add", "Acme", "x", "--ident", "ip", "--value", "10.9.9.9", "--password", "p"),
         "password: only allowed for ident login"),
        (("add", "Acme", "x", "--ident", "login", "--value", "z", "--password", ""),
         "password: must not be empty"),
        (("add", "Acme", "acme-gw", "--ident", "login", "--value", "z"),
         "name: an account named 'acme-gw' already exists"),
        (("add", "Beta", "x", "--ident", "ip", "--value", "10.1.1.1"),
         "value: ip '10.1.1.1' with the same tech_prefix is already account 'acme-gw'"),
        (("add", "Nobody", "x", "--ident", "ip", "--value", "10.3.3.3"),
         "no client named 'Nobody'"),
        (("edit", "acme-login", "--ident", "ip", "--value", "10.4.4.4"),
         "password: only allowed for ident login"),
        (("edit", "nope", "--value", "1"), "no account named 'nope'"),
        (("edit", "acme-gw",), "nothing to change"),
    ]  # fmt: skip
    for args, message in refusals:
        assert ctl.fail("accounts", *args).startswith(message), args
    # dropping the password lets the login account become an ip account
    ctl("accounts", "edit", "acme-login", "--ident", "ip", "--value", "10.4.4.4", "--no-password")
    assert _password_hash(ctl, "acme-login") is None
    code, _out, err = ctl.run("accounts", "edit", "acme-gw", "--enabled", "perhaps")
    assert code == 2
    assert "expected yes or no" in err

    assert ctl("accounts", "delete", "beta-ani") == "account beta-ani of Beta deleted\n"
    assert [a["name"] for a in ctl.json("accounts", "list")] == ["acme-gw", "acme-login"]

    # no password ever reaches the audit log
    entries = ctl.json("audit", "list", "--entity", "account", "--limit", "0")
    text = str(entries)
    assert "s3cret" not in text and "n3w pass" not in text and "sha256" not in text
    created = next(e for e in entries if e["name"] == "acme-login" and e["before"] is None)
    assert created["after"]["password"] == "***"
    changed = next(e for e in entries if e["changes"] == ["password"])
    assert (changed["before"]["password"], changed["after"]["password"]) == (
        "***",
        "*** (changed)",
    )
