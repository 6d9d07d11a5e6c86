"""billingctl's field rules (pure: provisioning's validators field by field) and its parser."""

from __future__ import annotations

import argparse
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billingctl.cli import build_parser, main
from billingctl.provisioning import (
    CLIENT_FIELDS,
    TEMPLATE_FIELDS,
    ProvisioningError,
    check_low_balance,
    check_tags,
    parse_day,
    rate_from_csv_row,
    validate_account,
    validate_client_fields,
)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"credit": "-999999999.999999"}, {"credit": Decimal("-999999999.999999")}),
        ({"credit": "10"}, {"credit": Decimal("10")}),
        ({"timezone": "Europe/Madrid"}, {"timezone": "Europe/Madrid"}),
        ({"timezone": "UTC"}, {"timezone": "UTC"}),
        ({"postpaid": "YES", "autoinvoicing": "false"}, {"postpaid": True, "autoinvoicing": False}),
        ({"hidden_numbers": True}, {"hidden_numbers": True}),
        (
            {"capacity": "0", "low_balance_capacity": "3"},
            {"capacity": 0, "low_balance_capacity": 3},
        ),
        ({"capacity": ""}, {"capacity": None}),
        ({"main_email": " noc@acme.example "}, {"main_email": "noc@acme.example"}),
        ({"last_invoiced": "2026-01-31"}, {"last_invoiced": date(2026, 1, 31)}),
        (
            {"status": "stop", "bill_events_by": "setup"},
            {"status": "stop", "bill_events_by": "setup"},
        ),
        ({"locale": "en-US", "reseller": "north"}, {"locale": "en-US", "reseller": "north"}),
    ],
)
def test_valid_client_fields(fields: dict[str, object], expected: dict[str, object]) -> None:
    assert validate_client_fields(fields) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"credit": "1000000000"}, "credit: must have at most 9 digits before the point"),
        ({"credit": "-1000000000"}, "credit: must have at most 9 digits before the point"),
        ({"credit": "1.0000001"}, "credit: must have at most 6 decimal places"),
        ({"credit": "ten"}, 'credit: must be a decimal string like "0.10"'),
        ({"main_email": "nöc@acme.example"}, "main_email: must use Latin characters only"),
        ({"rates_email": "почта@acme.example"}, "rates_email: must use Latin characters only"),
        ({"billing_email": "billing"}, "billing_email: must be an email address like"),
        ({"timezone": "Mars/Olympus"}, 'timezone: unknown time zone "Mars/Olympus"'),
        ({"timezone": ""}, "timezone: must not be empty"),
        ({"status": "gone"}, "status: must be one of active, stop, deleted"),
        ({"currency": "dollars"}, "currency: must be a 3-letter uppercase currency code"),
        ({"capacity": "1.5"}, "capacity: must be a whole number >= 0"),
        ({"postpaid": "1"}, "postpaid: must be yes or no"),
        ({"last_invoiced": "yesterday"}, 'last_invoiced: must be a date like "2026-01-31"'),
        ({"payment_terms": "x" * 65}, "payment_terms: must be at most 64 characters"),
        ({"colour": "red"}, "colour: unknown client field"),
    ],
)
def test_refused_client_fields(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ProvisioningError) as caught:
        validate_client_fields(fields)
    assert str(caught.value).startswith(message)


def test_a_template_may_clear_any_field() -> None:
    assert validate_client_fields({"currency": "", "postpaid": ""}, clear_any=True) == {
        "currency": None,
        "postpaid": None,
    }
    assert "last_invoiced" in CLIENT_FIELDS
    assert "last_invoiced" not in TEMPLATE_FIELDS


def test_tags_days_low_balance_and_accounts() -> None:
    assert check_tags(["gold", " vip ", "gold"]) == ("gold", "vip")
    with pytest.raises(ProvisioningError, match=r"^tag: must not be empty$"):
        check_tags([""])
    assert parse_day("2026-02-28", "until") == date(2026, 2, 28)
    with pytest.raises(ProvisioningError, match=r"^until: must be a date"):
        parse_day("2026-02-30", "until")
    check_low_balance(None, None)
    check_low_balance(Decimal(5), 1)
    with pytest.raises(ProvisioningError, match=r"^low_balance_threshold: is required with"):
        check_low_balance(None, 1)
    account = validate_account(name="gw", ident="ip", value="::ffff:10.0.0.1")
    assert account.value == "10.0.0.1"
    with pytest.raises(ProvisioningError, match=r"^ident: must be one of login, ip, ani$"):
        validate_account(name="gw", ident="sip", value="x")
    with pytest.raises(ProvisioningError, match=r"^password: only allowed for ident login$"):
        validate_account(name="gw", ident="ani", value="15551234567", password="pw")


def test_a_rates_csv_row_names_its_file_line_and_column() -> None:
    row = {"code": "1", "rate": "0.01", "effective_date": "2026-01-01", "interval": "0"}
    with pytest.raises(ProvisioningError) as caught:
        rate_from_csv_row(row, "r.csv line 7")
    assert str(caught.value) == "r.csv line 7: interval: must be a whole number >= 1"
    ok = rate_from_csv_row({**row, "interval": "", "name": " USA "}, "r.csv line 8")
    assert (ok.code, ok.name, ok.interval, ok.rate) == ("1", "USA", 1, Decimal("0.01"))


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((name, child))
                found += [(f"{name} {sub}", p) for sub, p in _subparsers(child)]
    return found


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [name for name, _parser in _subparsers(build_parser())]
    for expected in (
        "clients add",
        "clients full-delete",
        "clients mass-edit",
        "templates edit",
        "accounts disable",
        "rates import",
        "transactions export",
        "invoices generate",
        "audit list",
    ):
        assert expected in commands
    for command in commands:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*command.split(), "--help"])
        assert done.value.code == 0, command
        assert "usage: billingctl" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clients", "full-delete"], "the following arguments are required: NAME_OR_ID"),
        (["payments", "add", "Acme", "abc"], "argument AMOUNT: not a decimal amount: 'abc'"),
        (["invoices", "generate", "--client", "Acme"], "required: --until"),
        (["accounts", "add", "Acme", "gw", "--ident", "sip", "--value", "x"], "invalid choice"),
        (["audit", "list", "--limit", "-1"], "expected a whole number >= 0"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: billingctl")
    assert message in err.splitlines()[-1]


def test_field_errors_are_one_line_before_touching_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADIUSD_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    assert main(["clients", "add", "Acme", "--credit", "1234567890"]) == 1
    assert capsys.readouterr().err == (
        "billingctl: credit: must have at most 9 digits before the point\n"
    )
    assert main(["clients", "full-delete", "Acme"]) == 1
    assert capsys.readouterr().err.startswith("billingctl: --yes: required to remove client")
    assert not (tmp_path / "never.db").exists()


_CELLS = st.sampled_from(
    ["", "0", "1", "01", "60", "-1", "+5", "1.5", "0.0100", "0.1234567", "1.000000000",
     "1e3", " 7", "7 ", "abc", "2026-01-01", "2026-01-01T00:00:00Z", "2025-12-31",
     "2026-13-01", "2026-01-01T05:00:00+05:00", "1234567890123", "٣"]
)  # fmt: skip


_COLUMNS = st.sampled_from(
    ["code", "name", "rate", "setup_fee", "min_volume", "interval", "grace_volume",
     "effective_date", "end_date"]
)  # fmt: skip


_VALID_ROW = {
    "code": "1555",
    "name": "USA",
    "rate": "0.0100",
    "setup_fee": "0",
    "min_volume": "60",
    "interval": "60",
    "grace_volume": "0",
    "effective_date": "2026-01-01",
    "end_date": "",
}


@given(st.dictionaries(_COLUMNS, _CELLS, max_size=3), st.sets(_COLUMNS, max_size=2))
def test_the_fast_rate_path_agrees_with_the_full_rules(
    changed: dict[str, str], dropped: set[str]
) -> None:
    """A valid row with a few cells changed or left out: the same RateSpec, or the same
    one-line error, as load's validation (the fast path takes the plain rows only)."""
    from billingctl.provisioning import _columned, _csv_row, _rate

    cells = {k: v for k, v in {**_VALID_ROW, **changed}.items() if k not in dropped}

    def full() -> object:
        try:
            return _rate(_csv_row(cells, "f.csv line 2"), _columned("f.csv line 2"))
        except ProvisioningError as exc:
            return str(exc)

    def fast() -> object:
        try:
            return rate_from_csv_row(cells, "f.csv line 2")
        except ProvisioningError as exc:
            return str(exc)

    assert fast() == full()
