"""The provisioning file: validation (pure) and the file loader (CONTRACT §4)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billingctl.provisioning import (
    AccountSpec,
    ClientSpec,
    CompanySpec,
    LowBalanceSpec,
    PaymentSpec,
    ProvisioningError,
    ProvisioningSpec,
    RateSpec,
    RateTableSpec,
    parse_provisioning,
)
from billingctl.provisioning_file import load_provisioning_file

CONTRACT_EXAMPLE = """\
settings:
  max_call_length: 3600
rate_tables:
  - name: retail-usd
    currency: USD
    rates:                        # or  csv: rates.csv
      - {code: "1", name: "USA", rate: "0.0100", setup_fee: "0", min_volume: 60, interval: 60,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z", end_date: null}
clients:
  - name: Acme
    status: active                # active | stop | deleted
    currency: USD
    timezone: UTC
    locale: es                    # optional
    tags: [gold]
    bill_events_by: disconnect    # setup | connect | disconnect
    postpaid: false
    credit: "0"                   # may be negative; at most 9 digits before the point
    rate_table: retail-usd
    capacity: 10                  # null: unlimited
    low_balance: {threshold: "5.00", capacity: 1}
    company: {name: "Acme Ltd", main_email: "noc@acme.example", billing_email: "bill@acme.example"}
    payments: [{id: "acme-opening", amount: "10.00", note: "opening"}]
    accounts:
      - {name: acme-ip,    ident: ip,    value: "10.1.1.1", tech_prefix: "123#"}
      - {name: acme-login, ident: login, value: "acme", password: "s3cret"}
      - {name: acme-ani,   ident: ani,   value: "15551234567"}
"""

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)
ACME_PW = "s3cret"  # the login account's password in the example


def no_csv(relpath: str) -> Iterator[tuple[int, Mapping[str, str]]]:
    raise AssertionError(f"no CSV expected, asked for {relpath}")


def fake_csv(
    files: Mapping[str, list[tuple[int, dict[str, str]]]],
) -> Callable[[str], Iterator[tuple[int, Mapping[str, str]]]]:
    def read_csv(relpath: str) -> Iterator[tuple[int, Mapping[str, str]]]:
        if relpath not in files:
            raise FileNotFoundError(2, "No such file or directory")
        yield from files[relpath]

    return read_csv


def base_doc() -> dict[str, Any]:
    """A valid document in the shape of the contract's example (fresh each call)."""
    return {
        "settings": {"max_call_length": 3600},
        "rate_tables": [
            {
                "name": "retail-usd",
                "currency": "USD",
                "rates": [
                    {
                        "code": "1",
                        "name": "USA",
                        "rate": "0.0100",
                        "setup_fee": "0",
                        "min_volume": 60,
                        "interval": 60,
                        "grace_volume": 0,
                        "effective_date": "2026-01-01T00:00:00Z",
                        "end_date": None,
                    }
                ],
            }
        ],
        "clients": [
            {
                "name": "Acme",
                "credit": "0",
                "rate_table": "retail-usd",
                "company": {"name": "Acme Ltd", "main_email": "noc@acme.example"},
                "payments": [{"id": "acme-opening", "amount": "10.00", "note": "opening"}],
                "accounts": [
                    {"name": "acme-ip", "ident": "ip", "value": "10.1.1.1", "tech_prefix": "123#"},
                    {"name": "acme-login", "ident": "login", "value": "acme", "password": "s3cret"},
                    {"name": "acme-ani", "ident": "ani", "value": "15551234567"},
                ],
            }
        ],
    }


def second_client(**fields: object) -> dict[str, object]:
    return {"name": "Beta", **fields}


def rate(**fields: object) -> dict[str, object]:
    return {"code": "1", "rate": "0.01", "effective_date": "2026-01-01", **fields}


Edit = Callable[[dict[str, Any]], None]


def walk(doc: Any, path: str) -> tuple[Any, str | int]:
    """The container of the last step of ``a.b[0].c`` (a path as in the messages), and that step."""
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        keys.append(name)
        keys.extend(int(index) for index in rest.rstrip("]").split("][") if index)
    target = doc
    for key in keys[:-1]:
        target = target[key]
    return target, keys[-1]


def setting(path: str, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target, key = walk(doc, path)
        target[key] = value

    return edit


def appending(path: str, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target, key = walk(doc, path)
        target[key].append(copy.deepcopy(value))

    return edit


def deleting(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target, key = walk(doc, path)
        del target[key]

    return edit


def parse(doc: object) -> ProvisioningSpec:
    return parse_provisioning(doc, no_csv)


# --- the contract's example ----------------------------------------------------------------


def test_contract_example_from_yaml(tmp_path: Path) -> None:
    file = tmp_path / "demo.yaml"
    file.write_text(CONTRACT_EXAMPLE, encoding="utf-8")

    spec = load_provisioning_file(file)

    assert spec == ProvisioningSpec(
        max_call_length=3600,
        rate_tables=(
            RateTableSpec(
                name="retail-usd",
                currency="USD",
                rates=(
                    RateSpec(
                        code="1",
                        name="USA",
                        rate=Decimal("0.0100"),
                        setup_fee=Decimal("0"),
                        min_volume=60,
                        interval=60,
                        grace_volume=0,
                        effective_date=JAN1,
                        end_date=None,
                    ),
                ),
            ),
        ),
        clients=(
            ClientSpec(
                name="Acme",
                status="active",
                currency="USD",
                timezone="UTC",
                locale="es",
                tags=("gold",),
                bill_events_by="disconnect",
                postpaid=False,
                credit=Decimal("0"),
                rate_table="retail-usd",
                capacity=10,
                low_balance=LowBalanceSpec(threshold=Decimal("5.00"), capacity=1),
                company=CompanySpec(
                    name="Acme Ltd",
                    main_email="noc@acme.example",
                    billing_email="bill@acme.example",
                ),
                payments=(PaymentSpec(id="acme-opening", amount=Decimal("10.00"), note="opening"),),
                accounts=(
                    AccountSpec("acme-ip", "ip", "10.1.1.1", tech_prefix="123#", password=None),
                    AccountSpec("acme-login", "login", "acme", tech_prefix=None, password=ACME_PW),
                    AccountSpec("acme-ani", "ani", "15551234567", tech_prefix=None, password=None),
                ),
            ),
        ),
    )
    assert spec.rate_tables[0].rates[0].effective_date.tzinfo is UTC


def test_contract_example_as_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "demo.yaml"
    yaml_file.write_text(CONTRACT_EXAMPLE, encoding="utf-8")
    json_file = tmp_path / "demo.json"
    json_file.write_text(json.dumps(base_doc()), encoding="utf-8")

    assert load_provisioning_file(json_file) == parse(base_doc())
    from_yaml, from_json = load_provisioning_file(yaml_file), load_provisioning_file(json_file)
    assert from_yaml.rate_tables == from_json.rate_tables
    assert from_yaml.clients[0].accounts == from_json.clients[0].accounts


# --- defaults ------------------------------------------------------------------------------


def test_empty_sections_are_accepted() -> None:
    assert parse({}) == ProvisioningSpec(max_call_length=None, rate_tables=(), clients=())
    assert parse({"settings": None, "rate_tables": None, "clients": None}) == parse({})
    assert parse({"clients": [{"name": "A"}]}).rate_tables == ()
    assert parse({"rate_tables": base_doc()["rate_tables"]}).clients == ()


def test_client_defaults() -> None:
    client = parse({"clients": [{"name": "Acme"}]}).clients[0]
    assert client == ClientSpec(
        name="Acme",
        status="active",
        currency="USD",
        timezone="UTC",
        locale=None,
        tags=(),
        bill_events_by="disconnect",
        postpaid=False,
        credit=Decimal(0),
        rate_table=None,
        capacity=None,
        low_balance=None,
        company=CompanySpec(),
        payments=(),
        accounts=(),
    )
    assert client.company == CompanySpec(*([None] * 9))


def test_rate_and_table_defaults() -> None:
    spec = parse({"rate_tables": [{"name": "t", "rates": [rate()]}]})
    assert spec.rate_tables[0] == RateTableSpec(
        name="t",
        currency="USD",
        rates=(
            RateSpec(
                code="1",
                name="",
                rate=Decimal("0.01"),
                setup_fee=Decimal(0),
                min_volume=0,
                interval=1,
                grace_volume=0,
                effective_date=JAN1,
                end_date=None,
            ),
        ),
    )


def test_payment_and_account_defaults() -> None:
    client = parse(
        {
            "clients": [
                {
                    "name": "A",
                    "payments": [{"id": "p1", "amount": "-2.5"}],
                    "accounts": [{"name": "a", "ident": "login", "value": "user"}],
                }
            ]
        }
    ).clients[0]
    assert client.payments == (PaymentSpec(id="p1", amount=Decimal("-2.5"), note=""),)
    assert client.accounts == (AccountSpec("a", "login", "user", tech_prefix=None, password=None),)


# --- accepted values and their normal forms ------------------------------------------------


def value_of(doc: dict[str, Any], path: str) -> object:
    spec: Any = parse(doc)
    for part in path.split("."):
        name, _, rest = part.partition("[")
        spec = getattr(spec, name)
        for index in (int(i) for i in rest.rstrip("]").split("][") if i):
            spec = spec[index]
    return spec


RATE0 = "rate_tables[0].rates[0]"
ACCOUNT0 = "clients[0].accounts[0]"


@pytest.mark.parametrize(
    ("edit", "path", "expected"),
    [
        (setting(f"{RATE0}.effective_date", "2026-01-01"), f"{RATE0}.effective_date", JAN1),
        (
            setting(f"{RATE0}.effective_date", "2026-01-01T05:30:00"),
            f"{RATE0}.effective_date",
            datetime(2026, 1, 1, 5, 30, tzinfo=UTC),
        ),
        (
            setting(f"{RATE0}.effective_date", "2026-01-01T02:00:00+02:00"),
            f"{RATE0}.effective_date",
            JAN1,
        ),
        (setting(f"{RATE0}.effective_date", date(2026, 1, 1)), f"{RATE0}.effective_date", JAN1),
        (
            setting(f"{RATE0}.effective_date", datetime(2026, 1, 1, 1, 0)),
            f"{RATE0}.effective_date",
            datetime(2026, 1, 1, 1, 0, tzinfo=UTC),
        ),
        (
            setting(f"{RATE0}.end_date", "2026-02-01"),
            f"{RATE0}.end_date",
            datetime(2026, 2, 1, tzinfo=UTC),
        ),
        (setting(f"{RATE0}.code", " 1 212 "), f"{RATE0}.code", "1212"),
        (setting(f"{RATE0}.rate", 0), f"{RATE0}.rate", Decimal(0)),
        (setting(f"{RATE0}.rate", "0.1000000"), f"{RATE0}.rate", Decimal("0.100000")),
        (setting(f"{RATE0}.interval", "6"), f"{RATE0}.interval", 6),
        (
            setting("clients[0].credit", "-999999999.999999"),
            "clients[0].credit",
            Decimal("-999999999.999999"),
        ),
        (setting("clients[0].credit", 25), "clients[0].credit", Decimal(25)),
        (setting("clients[0].capacity", 0), "clients[0].capacity", 0),
        (setting("clients[0].tags", ["a", "b", "a"]), "clients[0].tags", ("a", "b")),
        (setting("clients[0].timezone", "Europe/Madrid"), "clients[0].timezone", "Europe/Madrid"),
        (setting("clients[0].locale", "en-US"), "clients[0].locale", "en-US"),
        (setting("clients[0].postpaid", True), "clients[0].postpaid", True),
        (setting("clients[0].status", "stop"), "clients[0].status", "stop"),
        (setting("clients[0].bill_events_by", "setup"), "clients[0].bill_events_by", "setup"),
        (setting("clients[0].rate_table", "only-in-db"), "clients[0].rate_table", "only-in-db"),
        (setting("clients[0].rate_table", None), "clients[0].rate_table", None),
        (setting("clients[0].company.billing_email", ""), "clients[0].company.billing_email", None),
        (setting(f"{ACCOUNT0}.value", "::ffff:10.0.0.1"), f"{ACCOUNT0}.value", "10.0.0.1"),
        (setting(f"{ACCOUNT0}.value", "2001:DB8:0::1"), f"{ACCOUNT0}.value", "2001:db8::1"),
        (
            setting("clients[0].accounts[2].value", "+4420771234"),
            "clients[0].accounts[2].value",
            "4420771234",
        ),
        (
            setting("clients[0].payments[0].amount", "-5"),
            "clients[0].payments[0].amount",
            Decimal(-5),
        ),
    ],
)
def test_accepted(edit: Edit, path: str, expected: object) -> None:
    doc = base_doc()
    edit(doc)
    assert value_of(doc, path) == expected


# --- refusals, each with its exact path ----------------------------------------------------


AMOUNT_HINT = 'must be a decimal string like "0.10"'

REFUSALS: list[tuple[str, Edit, str]] = [
    # document and settings
    ("unknown top-level key", setting("colour", "red"), "colour: unknown key"),
    ("unknown settings key", setting("settings.timeout", 5), "settings.timeout: unknown key"),
    ("bool max_call_length", setting("settings.max_call_length", True),
     "settings.max_call_length: must be a whole number >= 1"),
    ("zero max_call_length", setting("settings.max_call_length", 0),
     "settings.max_call_length: must be a whole number >= 1"),
    ("float max_call_length", setting("settings.max_call_length", 60.0),
     "settings.max_call_length: must be a whole number >= 1"),
    ("clients not a list", setting("clients", {"name": "A"}), "clients: must be a list"),
    # rate tables
    ("both rates and csv", setting("rate_tables[0].csv", "rates.csv"),
     "rate_tables[0].csv: not allowed together with rates: give one of them"),
    ("neither rates nor csv", deleting("rate_tables[0].rates"),
     "rate_tables[0]: needs rates (a list) or csv (a file name)"),
    ("duplicate table name", appending("rate_tables", {"name": "retail-usd", "rates": []}),
     'rate_tables[1].name: duplicate rate table name "retail-usd" (also at rate_tables[0].name)'),
    ("lowercase currency", setting("rate_tables[0].currency", "usd"),
     'rate_tables[0].currency: must be a 3-letter uppercase currency code like "USD"'),
    ("unknown rate key", setting(f"{RATE0}.colour", "x"), f"{RATE0}.colour: unknown key"),
    ("float rate", setting(f"{RATE0}.rate", 0.1), f"{RATE0}.rate: {AMOUNT_HINT}"),
    ("bool rate", setting(f"{RATE0}.rate", False), f"{RATE0}.rate: {AMOUNT_HINT}"),
    ("exponent rate", setting(f"{RATE0}.rate", "1e-3"), f"{RATE0}.rate: {AMOUNT_HINT}"),
    ("NaN rate", setting(f"{RATE0}.rate", "NaN"), f"{RATE0}.rate: {AMOUNT_HINT}"),
    ("Infinity rate", setting(f"{RATE0}.rate", "Infinity"), f"{RATE0}.rate: {AMOUNT_HINT}"),
    ("7 decimals", setting(f"{RATE0}.rate", "0.0000001"),
     f"{RATE0}.rate: must have at most 6 decimal places"),
    ("negative rate", setting(f"{RATE0}.rate", "-0.01"), f"{RATE0}.rate: must be >= 0"),
    ("missing rate", deleting(f"{RATE0}.rate"),
     f'{RATE0}.rate: is required: a decimal string like "0.10"'),
    ("negative setup_fee", setting(f"{RATE0}.setup_fee", "-1"), f"{RATE0}.setup_fee: must be >= 0"),
    ("interval 0", setting(f"{RATE0}.interval", 0),
     f"{RATE0}.interval: must be a whole number >= 1"),
    ("min_volume -1", setting(f"{RATE0}.min_volume", -1),
     f"{RATE0}.min_volume: must be a whole number >= 0"),
    ("grace_volume -1", setting(f"{RATE0}.grace_volume", -1),
     f"{RATE0}.grace_volume: must be a whole number >= 0"),
    ("float interval", setting(f"{RATE0}.interval", 1.5),
     f"{RATE0}.interval: must be a whole number >= 1"),
    ("code with letters", setting(f"{RATE0}.code", "1a"),
     f"{RATE0}.code: must contain digits only"),
    ("empty code", setting(f"{RATE0}.code", "  "), f"{RATE0}.code: must not be empty"),
    ("unquoted code", setting(f"{RATE0}.code", 1),
     f'{RATE0}.code: must be a string of digits like "1" (quote it)'),
    ("missing effective_date", deleting(f"{RATE0}.effective_date"),
     f'{RATE0}.effective_date: is required: an ISO 8601 date or time like "2026-01-01T00:00:00Z"'),
    ("bad effective_date", setting(f"{RATE0}.effective_date", "2026-13-01"),
     f'{RATE0}.effective_date: must be an ISO 8601 date or time like "2026-01-01T00:00:00Z"'),
    ("end_date before effective_date", setting(f"{RATE0}.end_date", "2025-12-31T23:59:59Z"),
     f"{RATE0}.end_date: must be after effective_date"),
    ("end_date equal to effective_date", setting(f"{RATE0}.end_date", "2026-01-01"),
     f"{RATE0}.end_date: must be after effective_date"),
    ("duplicate code and effective_date",
     appending("rate_tables[0].rates", rate(effective_date="2026-01-01T01:00:00+01:00")),
     "rate_tables[0].rates[1].effective_date: code 1 already has a rate effective"
     " 2026-01-01T00:00:00+00:00 (at rate_tables[0].rates[0])"),
    # clients
    ("unknown client key", setting("clients[0].colour", "red"), "clients[0].colour: unknown key"),
    ("missing client name", deleting("clients[0].name"), "clients[0].name: is required"),
    ("empty client name", setting("clients[0].name", " "), "clients[0].name: must not be empty"),
    ("duplicate client name", appending("clients", {"name": "Acme"}),
     'clients[1].name: duplicate client name "Acme" (also at clients[0])'),
    ("status", setting("clients[0].status", "paused"),
     "clients[0].status: must be one of active, stop, deleted"),
    ("bill_events_by", setting("clients[0].bill_events_by", "answer"),
     "clients[0].bill_events_by: must be one of setup, connect, disconnect"),
    ("client currency", setting("clients[0].currency", "EURO"),
     'clients[0].currency: must be a 3-letter uppercase currency code like "USD"'),
    ("unknown timezone", setting("clients[0].timezone", "Mars/Olympus"),
     'clients[0].timezone: unknown time zone "Mars/Olympus"'),
    ("timezone path", setting("clients[0].timezone", "../../etc/passwd"),
     'clients[0].timezone: unknown time zone "../../etc/passwd"'),
    ("locale", setting("clients[0].locale", "español"),
     'clients[0].locale: must be a language tag like "es" or "en-US"'),
    ("postpaid as string", setting("clients[0].postpaid", "no"),
     "clients[0].postpaid: must be true or false"),
    ("credit of 10 digits", setting("clients[0].credit", "1234567890"),
     "clients[0].credit: must have at most 9 digits before the point"),
    ("negative credit of 10 digits", setting("clients[0].credit", "-1000000000.5"),
     "clients[0].credit: must have at most 9 digits before the point"),
    ("float credit", setting("clients[0].credit", 10.5), f"clients[0].credit: {AMOUNT_HINT}"),
    ("capacity -1", setting("clients[0].capacity", -1),
     "clients[0].capacity: must be a whole number >= 0"),
    ("rate table of another currency",
     setting("clients[0].currency", "EUR"),
     'clients[0].rate_table: rate table "retail-usd" is in USD, the client\'s currency is EUR'),
    ("empty rate_table", setting("clients[0].rate_table", ""),
     "clients[0].rate_table: must not be empty"),
    ("tag not a string", setting("clients[0].tags", ["gold", 7]),
     'clients[0].tags[1]: must be a string (quote it: "7")'),
    ("low_balance without capacity", setting("clients[0].low_balance", {"threshold": "5"}),
     "clients[0].low_balance.capacity: is required: a whole number >= 0"),
    ("low_balance float threshold",
     setting("clients[0].low_balance", {"threshold": 5.0, "capacity": 1}),
     f"clients[0].low_balance.threshold: {AMOUNT_HINT}"),
    ("company unknown key", setting("clients[0].company.phone", "1"),
     "clients[0].company.phone: unknown key"),
    ("non-Latin email", setting("clients[0].company.main_email", "почта@acme.example"),
     "clients[0].company.main_email: must use Latin characters only"),
    ("non-Latin domain", setting("clients[0].company.rates_email", "rates@acmé.example"),
     "clients[0].company.rates_email: must use Latin characters only"),
    ("not an email", setting("clients[0].company.billing_email", "billing at acme"),
     'clients[0].company.billing_email: must be an email address like "noc@example.com"'),
    # payments
    ("payment without id", setting("clients[0].payments[0]", {"amount": "1"}),
     "clients[0].payments[0].id: is required"),
    ("payment id not a string", setting("clients[0].payments[0].id", 17),
     'clients[0].payments[0].id: must be a string (quote it: "17")'),
    ("payment float amount", setting("clients[0].payments[0].amount", 10.0),
     f"clients[0].payments[0].amount: {AMOUNT_HINT}"),
    ("duplicate payment id in a client",
     appending("clients", second_client(payments=[{"id": "acme-opening", "amount": "1"}])),
     'clients[1].payments[0].id: duplicate payment id "acme-opening"'
     " (also at clients[0].payments[0].id)"),
    # accounts
    ("unknown ident", setting("clients[0].accounts[1].ident", "sip"),
     "clients[0].accounts[1].ident: must be one of login, ip, ani"),
    ("missing ident", deleting("clients[0].accounts[1].ident"),
     "clients[0].accounts[1].ident: is required: one of login, ip, ani"),
    ("password on an ip account", setting(f"{ACCOUNT0}.password", "x"),
     f"{ACCOUNT0}.password: only allowed for ident login"),
    ("password on an ani account", setting("clients[0].accounts[2].password", "x"),
     "clients[0].accounts[2].password: only allowed for ident login"),
    ("empty password", setting("clients[0].accounts[1].password", ""),
     "clients[0].accounts[1].password: must not be empty (leave it out for none)"),
    ("missing value", deleting(f"{ACCOUNT0}.value"), f"{ACCOUNT0}.value: is required"),
    ("bad ip", setting(f"{ACCOUNT0}.value", "10.1.1.300"),
     f"{ACCOUNT0}.value: must be an IPv4 or IPv6 address"),
    ("ip network", setting(f"{ACCOUNT0}.value", "10.1.1.0/24"),
     f"{ACCOUNT0}.value: must be an IPv4 or IPv6 address"),
    ("ani with letters", setting("clients[0].accounts[2].value", "1555-CALL"),
     "clients[0].accounts[2].value: must be a number: digits, optionally after '+'"),
    ("empty tech_prefix", setting(f"{ACCOUNT0}.tech_prefix", ""),
     f"{ACCOUNT0}.tech_prefix: must not be empty"),
    ("duplicate account name across clients",
     appending("clients", second_client(accounts=[{"name": "acme-ani", "ident": "ani",
                                                    "value": "1999"}])),
     'clients[1].accounts[0].name: duplicate account name "acme-ani"'
     " (also at clients[0].accounts[2])"),
    ("same identity twice",
     appending("clients", second_client(accounts=[{"name": "b", "ident": "ip",
                                                    "value": "10.1.1.1", "tech_prefix": "123#"}])),
     'clients[1].accounts[0].value: ip "10.1.1.1" with the same tech_prefix is already'
     " at clients[0].accounts[0]"),
    ("unknown account key", setting(f"{ACCOUNT0}.enabled", True),
     f"{ACCOUNT0}.enabled: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [(edit, message) for _, edit, message in REFUSALS],
    ids=[name for name, _, _ in REFUSALS],
)
def test_refused(edit: Edit, message: str) -> None:
    doc = base_doc()
    edit(doc)
    with pytest.raises(ProvisioningError) as caught:
        parse(doc)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert message.startswith(caught.value.path + ": ")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "document: is empty"),
        ([1, 2], "document: must be a mapping with keys settings, rate_tables, clients"),
        ({"clients": [["Acme"]]}, "clients[0]: must be a mapping with keys name, status, currency,"
         " timezone, locale, tags, bill_events_by, postpaid, credit, rate_table, capacity,"
         " low_balance, notify_client_below, notify_admin_below, company, payments,"
         " accounts"),
        ({1: "x"}, "1: unknown key"),
    ],
)  # fmt: skip
def test_refused_documents(doc: object, message: str) -> None:
    with pytest.raises(ProvisioningError) as caught:
        parse(doc)
    assert str(caught.value) == message


def test_the_whole_document_is_checked_before_returning() -> None:
    doc = base_doc()
    doc["clients"].append(second_client(accounts=[{"name": "x", "ident": "carrier-pigeon"}]))
    with pytest.raises(ProvisioningError, match=r"^clients\[1\]\.accounts\[0\]\.ident: "):
        parse(doc)


# --- rates from CSV (pure: a fake reader) --------------------------------------------------


def csv_doc(csv_name: str = "rates.csv") -> dict[str, Any]:
    return {"rate_tables": [{"name": "t", "csv": csv_name}]}


def test_csv_rows_with_empty_cells_take_defaults() -> None:
    reader = fake_csv(
        {
            "rates.csv": [
                (2, {"code": "44", "rate": "0.02", "effective_date": "2026-01-01", "end_date": ""}),
                (4, {"code": "4420", "rate": "0.03", "effective_date": "2026-01-01",
                     "interval": " 60 ", "name": "UK London", "end_date": "2027-01-01"}),
            ]
        }
    )  # fmt: skip
    rates = parse_provisioning(csv_doc(), reader).rate_tables[0].rates
    assert rates[0] == RateSpec("44", "", Decimal("0.02"), Decimal(0), 0, 1, 0, JAN1, None)
    assert rates[1].interval == 60
    assert rates[1].name == "UK London"
    assert rates[1].end_date == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"code": "1", "rate": "0.01", "effective_date": "2026-01-01", "interval": "0"},
         "rates.csv line 4: interval: must be a whole number >= 1"),
        ({"code": "1", "rate": "0.1234567", "effective_date": "2026-01-01"},
         "rates.csv line 4: rate: must have at most 6 decimal places"),
        ({"code": "1", "rate": "", "effective_date": "2026-01-01"},
         'rates.csv line 4: rate: is required: a decimal string like "0.10"'),
        ({"code": "1", "rate": "0.01", "effective_date": "2026-01-01", "colour": "red"},
         "rates.csv line 4: colour: unknown column"),
        ({"code": "1", "rate": "0.01", "effective_date": "2026-01-01", "end_date": "2025-01-01"},
         "rates.csv line 4: end_date: must be after effective_date"),
        ({"code": "44", "rate": "0.01", "effective_date": "2026-01-01T00:00:00Z"},
         "rates.csv line 4: effective_date: code 44 already has a rate effective"
         " 2026-01-01T00:00:00+00:00 (at line 2)"),
    ],
)  # fmt: skip
def test_csv_row_refused(row: dict[str, str], message: str) -> None:
    good = {"code": "44", "rate": "0.02", "effective_date": "2026-01-01"}
    reader = fake_csv({"rates.csv": [(2, good), (4, row)]})
    with pytest.raises(ProvisioningError) as caught:
        parse_provisioning(csv_doc(), reader)
    assert str(caught.value) == message


def test_csv_that_cannot_be_read() -> None:
    with pytest.raises(ProvisioningError) as caught:
        parse_provisioning(csv_doc("nope.csv"), fake_csv({}))
    assert (
        str(caught.value) == "rate_tables[0].csv: cannot read nope.csv: No such file or directory"
    )


# --- the file loader -----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TABLE_FROM_CSV = "rate_tables:\n  - name: t\n    currency: USD\n    csv: {csv}\n"


def test_loader_reads_csv_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "rates").mkdir()
    write(
        tmp_path / "rates" / "usd.csv",
        "code,name,rate,setup_fee,min_volume,interval,grace_volume,effective_date,end_date\n"
        '"1",USA,0.0100,,60,60,0,2026-01-01T00:00:00Z,\n'
        "\n"
        '44 20,"London, UK",0.02,0.05,,,,2026-01-01,2027-01-01\n',
    )
    spec = load_provisioning_file(
        write(tmp_path / "p.yaml", TABLE_FROM_CSV.format(csv="rates/usd.csv"))
    )
    assert spec.rate_tables[0].rates == (
        RateSpec("1", "USA", Decimal("0.0100"), Decimal(0), 60, 60, 0, JAN1, None),
        RateSpec("4420", "London, UK", Decimal("0.02"), Decimal("0.05"), 0, 1, 0, JAN1,
                 datetime(2027, 1, 1, tzinfo=UTC)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        # a blank line does not shift the numbering: the bad row is line 4 of the file
        ("code,rate,effective_date,interval\n1,0.01,2026-01-01,60\n\n2,0.02,2026-01-01,0\n",
         "rates.csv line 4: interval: must be a whole number >= 1"),
        ('code,rate,effective_date,name\n1,0.01,2026-01-01,"two\nlines"\n2,0.2,2026-01-01,x\n'
         "3,0.1,yesterday,\n",
         'rates.csv line 5: effective_date: must be an ISO 8601 date or time like'
         ' "2026-01-01T00:00:00Z"'),
        ("code,rate,effective_date\n1,0.01,2026-01-01,extra\n",
         "rates.csv line 2: column 4: has no name in the header"),
        ("code,effective_date\n1,2026-01-01\n",
         "rates.csv line 1: header lacks rate (needs code, rate, effective_date)"),
        ("code,rate,effective_date,colour\n", "rates.csv line 1: colour: unknown column"),
        ("code,rate,rate,effective_date\n", "rates.csv line 1: rate: repeated column"),
        ("", "rates.csv line 1: must be a header naming at least code, rate, effective_date"),
        ('code,rate,effective_date\n"1"x,0.1,2026-01-01\n',
         "rates.csv line 2: invalid CSV: ',' expected after '\"'"),
    ],
)  # fmt: skip
def test_loader_csv_refused(tmp_path: Path, csv_text: str, message: str) -> None:
    write(tmp_path / "rates.csv", csv_text)
    file = write(tmp_path / "p.yaml", TABLE_FROM_CSV.format(csv="rates.csv"))
    with pytest.raises(ProvisioningError) as caught:
        load_provisioning_file(file)
    assert str(caught.value) == message


def test_loader_missing_csv(tmp_path: Path) -> None:
    file = write(tmp_path / "p.yaml", TABLE_FROM_CSV.format(csv="nope.csv"))
    with pytest.raises(ProvisioningError) as caught:
        load_provisioning_file(file)
    assert (
        str(caught.value) == "rate_tables[0].csv: cannot read nope.csv: No such file or directory"
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("demo.yaml", None, "demo.yaml: cannot read: No such file or directory"),
        ("demo.yaml", "clients:\n  - name: A\n    tags: [a\n",
         "demo.yaml line 4: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("demo.yaml", "clients:\n  - name: A\n    credit: '1'\n    credit: '2'\n",
         "demo.yaml line 4: invalid YAML: found duplicate key 'credit'"),
        ("demo.yaml", "rate_tables:\n  - name: t\n    rates:\n      - {code: '1', rate: 0.1,"
         " effective_date: 2026-01-01}\n",
         'rate_tables[0].rates[0].rate: must be a decimal string like "0.10"'),
        ("demo.yaml", "", "document: is empty"),
        ("demo.json", '{"clients": [\n{"name": "A",}]}',
         "demo.json line 2: invalid JSON: Expecting property name enclosed in double quotes"),
        ("demo.json", '{"clients": [], "clients": []}',
         "demo.json: invalid JSON: found duplicate key 'clients'"),
    ],
)  # fmt: skip
def test_loader_refused(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    file = tmp_path / name
    if text is not None:
        write(file, text)
    with pytest.raises(ProvisioningError) as caught:
        load_provisioning_file(file)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_loader_yaml_dates_and_merge_keys(tmp_path: Path) -> None:
    file = write(
        tmp_path / "p.yaml",
        "rate_tables:\n"
        "  - name: t\n"
        "    rates:\n"
        "      - &base {code: '1', rate: '0.01', effective_date: 2026-01-01}\n"
        "      - {<<: *base, code: '2', effective_date: 2026-01-01 06:00:00+02:00}\n",
    )
    rates = load_provisioning_file(file).rate_tables[0].rates
    assert [r.effective_date for r in rates] == [JAN1, datetime(2026, 1, 1, 4, tzinfo=UTC)]
    assert [r.code for r in rates] == ["1", "2"]


_YAML_SHAPES = [
    "settings: {max_call_length: 3600}\nclients: [{name: A, postpaid: true, credit: '1.5'}]\n",
    "a: &x {k: [1, 2.5, null, ~, yes, 'no', 2026-01-01, 2026-01-01 06:00:00+02:00]}\n"
    "b: {<<: *x, j: !!str 7}\nc: [*x, *x]\n1: one\n0x10: sixteen\n",
    "- !!set {a, b}\n- !!binary aGk=\n- !!omap [{a: 1}]\n- {1.5: x, null: y}\n- ''\n",
    "plain\n",
    "",
]


@pytest.mark.parametrize("text", _YAML_SHAPES)
def test_loader_builds_yaml_as_pyyaml_does(tmp_path: Path, text: str) -> None:
    """The direct build of strings, lists and mappings (the fast path after parsing) gives
    what PyYAML's own safe constructor gives, with either parser."""
    import yaml

    from billingctl import provisioning_file

    expected = yaml.load(text, Loader=yaml.SafeLoader)
    assert provisioning_file._load_yaml(text, "p.yaml") == expected
    assert provisioning_file._read_yaml(yaml.SafeLoader, text, "p.yaml") == expected


# --- property: amounts round-trip exactly --------------------------------------------------


@given(st.from_regex(r"\A[+-]?[0-9]{1,9}(\.[0-9]{1,6})?\Z", fullmatch=True))
def test_amount_strings_round_trip_exactly(text: str) -> None:
    doc = {"clients": [{"name": "A", "credit": text, "payments": [{"id": "p", "amount": text}]}]}
    client = parse(doc).clients[0]
    assert client.credit == Decimal(text)
    assert str(client.credit) == str(Decimal(text))
    assert client.payments[0].amount == Decimal(text)
    assert str(client.payments[0].amount) == str(Decimal(text))
