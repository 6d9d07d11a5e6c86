"""billingctl's Clients section on SQLite and PostgreSQL: add/edit/show/list/export,
templates and tags, delete and full delete, mass edit, and the refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import (
    accounts_t,
    calls_t,
    cdrs_t,
    clients_t,
    live_t,
    transactions_t,
)
from billing_core.domain.model import RejectReason
from billing_core.domain.money import ZERO
from billing_core.domain.policy import check_client
from billingctl.adapters.admin_clients import templates_t
from billingctl.adapters.audit import audit_t
from billingctl.adapters.client_queries import invoices_t

from .billingctl_support import Ctl, add_call_charge, csv_rows, ctl, rates_csv

__all__ = ["ctl"]  # the fixture


def _rate_table(ctl: Ctl, tmp_path: Path, name: str = "retail", currency: str = "USD") -> None:
    file = tmp_path / f"{name}.csv"
    file.write_text(rates_csv([("1", "USA", "0.01", "0", 60, 60, 0, "2026-01-01", "")]))
    ctl("rates", "import", name, str(file), "--currency", currency)


EVERY_FIELD = (
    "--status", "stop",
    "--currency", "EUR",
    "--timezone", "Europe/Madrid",
    "--locale", "es",
    "--tag", "gold", "--tag", "wholesale",
    "--tax-profile", "vat21",
    "--bill-events-by", "connect",
    "--hidden-numbers", "yes",
    "--postpaid", "no",
    "--credit=-123456789.50",
    "--payment-terms", "net30",
    "--rate-table", "retail-eur",
    "--capacity", "10",
    "--low-balance-threshold", "5.00",
    "--low-balance-capacity", "1",
    "--autoinvoicing", "yes",
    "--last-invoiced", "2026-01-31",
    "--reseller", "north",
    "--company-name", "Acme Ltd",
    "--main-email", "noc@acme.example",
    "--billing-email", "bill@acme.example",
    "--rates-email", "rates@acme.example",
    "--address", "1 Main St",
    "--zip-code", "28001",
    "--tax-id", "B123",
    "--registration-id", "R-9",
    "--account-details", "IBAN ES00",
)  # fmt: skip


def test_add_with_every_field_then_show(ctl: Ctl, tmp_path: Path) -> None:
    _refusals_name_the_field_and_write_nothing(ctl, tmp_path)
    _rate_table(ctl, tmp_path, "retail-eur", "EUR")
    assert ctl("clients", "add", "Acme", *EVERY_FIELD) == "client Acme added (id 1)\n"
    shown = ctl.json("clients", "show", "Acme")
    assert {k: shown[k] for k in ("status", "currency", "timezone", "locale", "tags")} == {
        "status": "stop",
        "currency": "EUR",
        "timezone": "Europe/Madrid",
        "locale": "es",
        "tags": ["gold", "wholesale"],
    }
    assert shown["credit"] == "-123456789.50"
    assert shown["available_balance"] == "-123456789.50"
    assert shown["low_balance"] == {"threshold": "5.00", "capacity": 1}
    assert (shown["rate_table"], shown["capacity"], shown["bill_events_by"]) == (
        "retail-eur",
        10,
        "connect",
    )
    assert (shown["hidden_numbers"], shown["autoinvoicing"], shown["postpaid"]) == (
        True,
        True,
        False,
    )
    assert shown["last_invoiced"] == "2026-01-31"
    assert {k: shown[k] for k in ("company_name", "main_email", "rates_email", "zip_code")} == {
        "company_name": "Acme Ltd",
        "main_email": "noc@acme.example",
        "rates_email": "rates@acme.example",
        "zip_code": "28001",
    }
    assert (shown["tax_id"], shown["registration_id"], shown["account_details"]) == (
        "B123",
        "R-9",
        "IBAN ES00",
    )
    assert (shown["reseller"], shown["payment_terms"], shown["tax_profile"]) == (
        "north",
        "net30",
        "vat21",
    )
    # the defaults of CONTRACT §4
    ctl("clients", "add", "Plain")
    assert ctl.fail("clients", "add", "Plain") == "name: a client named 'Plain' already exists"
    plain = ctl.json("clients", "show", "Plain")
    assert (plain["status"], plain["currency"], plain["timezone"], plain["credit"]) == (
        "active",
        "USD",
        "UTC",
        "0.00",
    )
    assert (plain["capacity"], plain["rate_table"], plain["tags"]) == (None, None, [])


REFUSALS = [
    (("--credit", "1234567890"), "credit: must have at most 9 digits before the point"),
    (("--credit=-1234567890.5",), "credit: must have at most 9 digits before the point"),
    (("--main-email", "nöc@acme.example"), "main_email: must use Latin characters only"),
    (("--billing-email", "bill@ácme.example"), "billing_email: must use Latin characters only"),
    (("--timezone", "Mars/Olympus"), 'timezone: unknown time zone "Mars/Olympus"'),
    (("--rate-table", "nope"), "rate_table: unknown rate table 'nope'"),
    (("--rate-table", "retail"), "rate_table: rate table 'retail' is in USD,"),
    (("--status", "gone"), "status: must be one of active, stop, deleted"),
    (("--capacity", "-1"), "capacity: must be a whole number >= 0"),
    (("--postpaid", "maybe"), "postpaid: must be yes or no"),
    (("--low-balance-threshold", "5"), "low_balance_capacity: is required with"),
    (("--last-invoiced", "31/01/2026"), "last_invoiced: must be a date like"),
    (("--currency", "usd"), "currency: must be a 3-letter uppercase currency code"),
    (("--template", "nope"), "template: no template named 'nope'"),
]


def _refusals_name_the_field_and_write_nothing(ctl: Ctl, tmp_path: Path) -> None:
    _rate_table(ctl, tmp_path)
    for args, message in REFUSALS:
        extra = ("--currency", "EUR") if args == ("--rate-table", "retail") else ()
        assert ctl.fail("clients", "add", "Acme", *args, *extra).startswith(message), args
    assert ctl.json("clients", "list", "--status", "all") == []
    # a usage error (an unknown option) exits 2 after the usage
    code, _out, err = ctl.run("clients", "add", "Beta", "--colour", "red")
    assert code == 2
    assert "unrecognized arguments: --colour red" in err


def test_edit_fields_tags_and_name(ctl: Ctl, tmp_path: Path) -> None:
    _rate_table(ctl, tmp_path)
    ctl("clients", "add", "Acme", "--tag", "a", "--tag", "b", "--capacity", "3")
    out = ctl(
        "clients",
        "edit",
        "Acme",
        "--credit",
        "50",
        "--rate-table",
        "retail",
        "--add-tag",
        "c",
        "--remove-tag",
        "a",
        "--capacity",
        "",
    )
    assert out == "client Acme updated: credit, rate_table, capacity, tags\n"
    shown = ctl.json("clients", "show", "Acme")
    assert (shown["credit"], shown["rate_table"], shown["capacity"]) == ("50.00", "retail", None)
    assert shown["tags"] == ["b", "c"]
    ctl("clients", "edit", "1", "--tag", "x", "--name", "Acme Corp")
    assert ctl.json("clients", "show", "Acme Corp")["tags"] == ["x"]
    ctl("clients", "edit", "Acme Corp", "--no-tags")
    assert ctl.json("clients", "show", "1")["tags"] == []
    assert ctl("clients", "edit", "1", "--credit", "50.00") == "client Acme Corp unchanged\n"
    assert ctl.fail("clients", "edit", "1", "--credit", "9999999999") == (
        "credit: must have at most 9 digits before the point"
    )
    assert ctl.fail("clients", "edit", "1", "--timezone", "Europe/Atlantis") == (
        'timezone: unknown time zone "Europe/Atlantis"'
    )
    assert ctl.fail("clients", "edit", "Nobody", "--credit", "1") == "no client named 'Nobody'"
    assert ctl.fail("clients", "edit", "1").startswith("nothing to change")
    _mass_edit_is_all_or_nothing(ctl)


def test_list_filters_columns_and_export(ctl: Ctl, tmp_path: Path) -> None:
    ctl("clients", "add", "Acme", "--main-email", "noc@acme.example", "--tag", "gold")
    ctl("clients", "add", "Acorn", "--main-email", "ops@acorn.example", "--reseller", "north")
    ctl("clients", "add", "Beta", "--main-email", "noc@beta.example", "--payment-terms", "net7")
    ctl("clients", "add", "Gone", "--status", "deleted", "--reseller", "north")
    ctl("payments", "add", "Beta", "12.50")
    ctl("clients", "edit", "Beta", "--credit", "10")

    def names(*filters: str) -> list[str]:
        return [c["name"] for c in ctl.json("clients", "list", *filters)]

    assert names() == ["Acme", "Acorn", "Beta"]  # active by default
    assert names("--status", "all") == ["Acme", "Acorn", "Beta", "Gone"]
    assert names("--status", "deleted") == ["Gone"]
    assert names("--name", "ac") == ["Acme", "Acorn"]
    assert names("--email", "noc@*") == ["Acme", "Beta"]
    assert names("--email", "*.EXAMPLE") == ["Acme", "Acorn", "Beta"]
    assert names("--email", "noc@acme") == []
    assert names("--tag", "gold") == ["Acme"]
    assert names("--reseller", "north") == ["Acorn"]
    assert names("--reseller", "north", "--status", "all") == ["Acorn", "Gone"]

    beta = next(c for c in ctl.json("clients", "list") if c["name"] == "Beta")
    assert (beta["available_balance"], beta["live_balance"], beta["fixed_balance"]) == (
        "22.50",
        "12.50",
        "12.50",
    )
    table = ctl("clients", "list").splitlines()
    assert table[0].split() == [
        "id",
        "name",
        "status",
        "available_balance",
        "live_balance",
        "fixed_balance",
        "payment_terms",
        "tags",
        "reseller",
    ]
    assert table[3].split() == ["3", "Beta", "active", "22.50", "12.50", "12.50", "net7"]

    target = tmp_path / "clients.csv"
    out = ctl("clients", "export", str(target), "--name", "a", "--status", "all")
    assert out == f"exported 2 clients to {target}\n"
    rows = csv_rows(target.read_text())
    assert [r["name"] for r in rows] == ["Acme", "Acorn"]
    assert rows[0] == {
        "id": "1",
        "name": "Acme",
        "status": "active",
        "available_balance": "0.00",
        "live_balance": "0.00",
        "fixed_balance": "0.00",
        "payment_terms": "",
        "tags": "gold",
        "reseller": "",
    }
    assert rows[1]["reseller"] == "north"
    assert ctl("clients", "list", "--format", "csv") == ctl(
        "clients", "list", "--format", "csv", "--status", "active"
    )


def test_templates_and_applying_one(ctl: Ctl, tmp_path: Path) -> None:
    _rate_table(ctl, tmp_path)
    ctl(
        "templates",
        "add",
        "gold",
        "--credit",
        "100",
        "--capacity",
        "5",
        "--rate-table",
        "retail",
        "--payment-terms",
        "net30",
        "--tag",
        "vip",
        "--timezone",
        "America/New_York",
    )
    assert ctl.fail("templates", "add", "gold") == "name: a template named 'gold' already exists"
    assert ctl.fail("templates", "add", "bad", "--main-email", "ñ@x.example") == (
        "main_email: must use Latin characters only"
    )
    shown = ctl.json("templates", "show", "gold")
    assert (shown["credit"], shown["capacity"], shown["rate_table"], shown["tags"]) == (
        "100.00",
        5,
        "retail",
        ["vip"],
    )
    assert shown["postpaid"] is None  # not set by the template
    assert [t["name"] for t in ctl.json("templates", "list")] == ["gold"]

    # given fields win; the others come from the template, then the defaults
    ctl("clients", "add", "Acme", "--template", "gold", "--capacity", "2", "--credit", "7")
    acme = ctl.json("clients", "show", "Acme")
    assert (acme["credit"], acme["capacity"], acme["payment_terms"]) == ("7.00", 2, "net30")
    assert (acme["rate_table"], acme["tags"], acme["timezone"]) == (
        "retail",
        ["vip"],
        "America/New_York",
    )
    assert (acme["status"], acme["currency"], acme["postpaid"]) == ("active", "USD", False)
    ctl("clients", "add", "Beta", "--template", "gold", "--tag", "own")
    assert ctl.json("clients", "show", "Beta")["tags"] == ["own"]

    out = ctl(
        "templates", "edit", "gold", "--capacity", "", "--add-tag", "new", "--postpaid", "yes"
    )
    assert out == "template gold updated: postpaid, capacity, tags\n"
    ctl("clients", "add", "Gamma", "--template", "gold")
    gamma = ctl.json("clients", "show", "Gamma")
    assert (gamma["capacity"], gamma["postpaid"], gamma["tags"]) == (None, True, ["new", "vip"])
    assert acme["capacity"] == ctl.json("clients", "show", "Acme")["capacity"]  # copied once
    ctl("templates", "delete", "gold")
    assert ctl.fail("templates", "show", "gold") == "template: no template named 'gold'"
    with ctl.engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(templates_t)).scalar_one() == 0


def test_delete_keeps_accounts_and_authorization_rejects_the_client(ctl: Ctl) -> None:
    ctl("clients", "add", "Acme")
    ctl("accounts", "add", "Acme", "acme-ip", "--ident", "ip", "--value", "10.1.1.1")
    ctl("accounts", "add", "Acme", "acme-ani", "--ident", "ani", "--value", "+15551234567")
    ctl("payments", "add", "Acme", "5")
    out = ctl("clients", "delete", "Acme")
    assert out.startswith("client Acme deleted: its 2 account(s) stay but no longer originate")
    catalog = SqlStore(ctl.engine()).load_catalog()
    (client,) = catalog.clients.values()
    assert client.status == "deleted"
    rejection = check_client(client)  # what authorization answers: Access-Reject, code 1
    assert rejection is not None
    assert rejection.reason is RejectReason.CLIENT_DELETED
    accounts = ctl.json("accounts", "list", "--client", "Acme")
    assert [(a["name"], a["enabled"], a["originate"], a["terminate"]) for a in accounts] == [
        ("acme-ani", True, False, False),
        ("acme-ip", True, False, False),
    ]
    assert ctl.json("clients", "show", "Acme")["live_balance"] == "5.00"  # the ledger stays
    assert ctl.json("clients", "list") == []
    assert ctl("clients", "delete", "Acme").startswith("client Acme is deleted")
    # undeleting gives the accounts back
    ctl("clients", "edit", "Acme", "--status", "active")
    accounts = ctl.json("accounts", "list")
    assert all(a["originate"] and a["terminate"] for a in accounts)
    _full_delete_needs_yes_and_removes_everything(ctl)


def _full_delete_needs_yes_and_removes_everything(ctl: Ctl) -> None:
    # Acme (id 1) exists with 2 accounts and a payment of 5.00
    ctl("clients", "edit", "Acme", "--tag", "gold")
    ctl("clients", "add", "Other")
    ctl("accounts", "delete", "acme-ani")
    ctl("accounts", "add", "Other", "other-ip", "--ident", "ip", "--value", "10.2.2.2")
    ctl("payments", "add", "Other", "7")
    engine = ctl.engine()
    acme_id, other_id = 1, 2
    yesterday = datetime.now(UTC) - timedelta(days=2)
    add_call_charge(engine, acme_id, "-0.20", yesterday)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for client_id in (acme_id, other_id):
            conn.execute(
                insert(cdrs_t).values(
                    client_id=client_id,
                    nas_key="nas",
                    acct_session_id=f"s{client_id}",
                    called="15550001111",
                    duration=61,
                    billed_duration=120,
                    cost=ZERO,
                    rated_at=now,
                    stopped_at=now,
                    closed_by="stop",
                    created_at=now,
                )
            )
    for name in ("Acme", "Other"):
        ctl("invoices", "generate", "--client", name, "--until", yesterday.date().isoformat())

    error = ctl.fail("clients", "full-delete", "Acme")
    assert error.startswith("--yes: required to remove client 'Acme'")
    assert ctl.json("clients", "show", "Acme")["live_balance"] == "4.80"

    out = ctl("clients", "full-delete", "Acme", "--yes")
    assert out == (
        "client Acme removed for good with 0 calls, 1 cdrs, 2 transactions, 1 invoices,"
        " 1 accounts, 1 tags\n"
    )
    assert ctl.fail("clients", "show", "Acme") == "no client named 'Acme'"
    with engine.connect() as conn:
        for tbl in (clients_t, accounts_t, transactions_t, cdrs_t, live_t, invoices_t):
            owners = set(
                conn.execute(
                    select(tbl.c.client_id if tbl is not clients_t else tbl.c.id)
                ).scalars()
            )
            assert owners == {other_id}, tbl.name
    assert ctl.json("clients", "show", "Other")["live_balance"] == "7.00"
    assert [c.name for c in SqlStore(engine).load_catalog().clients.values()] == ["Other"]
    # the audit log keeps the removed client's history, found by the name it had
    entries = ctl.json("audit", "list", "--client", "Acme")
    assert entries[-1]["command"] == "clients full-delete"
    assert entries[-1]["after"] is None
    assert entries[-1]["before"]["tags"] == ["gold"]
    assert entries[-1]["before"]["live_balance"] == "4.80"
    assert ctl.fail("clients", "full-delete", "Acme", "--yes") == "no client named 'Acme'"
    # a removed client's id is never given to another one (SQLite would reuse the highest)
    assert ctl("clients", "add", "Temp") == "client Temp added (id 3)\n"
    ctl("clients", "full-delete", "Temp", "--yes")
    assert ctl("clients", "add", "Next") == "client Next added (id 4)\n"
    assert [e["name"] for e in ctl.json("audit", "list", "--client", "4")] == ["Next"]
    _full_delete_is_refused_while_calls_are_in_progress(ctl)


def _full_delete_is_refused_while_calls_are_in_progress(ctl: Ctl) -> None:
    ctl("clients", "add", "Busy")
    busy_id = ctl.json("clients", "show", "Busy")["id"]
    engine = ctl.engine()
    with engine.begin() as conn:
        conn.execute(
            insert(calls_t).values(
                client_id=busy_id,
                nas_key="nas",
                called="1555",
                state="active",
                hold=ZERO,
            )
        )
    error = ctl.fail("clients", "full-delete", "Busy", "--yes")
    assert error.startswith("client: Busy has 1 call(s) in progress")
    assert ctl.json("clients", "show", "Busy")["name"] == "Busy"


def _mass_edit_is_all_or_nothing(ctl: Ctl) -> None:
    for name in ("A", "B", "C"):
        ctl("clients", "add", name)  # ids 2, 3, 4
    error = ctl.fail("clients", "mass-edit", "--last-invoiced", "2026-03-31", "2", "3", "99")
    assert error == "ID: no client '99'; nothing changed"
    assert {c["last_invoiced"] for c in ctl.json("clients", "list")} == {None}
    assert ctl.fail("clients", "mass-edit", "--last-invoiced", "2026-02-30", "2") == (
        'last_invoiced: must be a date like "2026-01-31"'
    )
    out = ctl("clients", "mass-edit", "--last-invoiced", "2026-03-31", "2", "C")
    assert out == "2 of 2 clients updated: A, C\n"
    shown = {c["name"]: c["last_invoiced"] for c in ctl.json("clients", "list")}
    assert shown == {"A": "2026-03-31", "Acme Corp": None, "B": None, "C": "2026-03-31"}
    with ctl.engine().connect() as conn:
        commands = list(
            conn.execute(select(audit_t.c.command, audit_t.c.client_name).order_by(audit_t.c.id))
        )
    assert commands[-2:] == [("clients mass-edit", "A"), ("clients mass-edit", "C")]
