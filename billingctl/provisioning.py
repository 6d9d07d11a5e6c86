"""Validation of the provisioning file (CONTRACT §4), pure: no file IO, no YAML.

``parse_provisioning`` takes what ``yaml.safe_load`` / ``json.load`` returned and either
returns a fully validated :class:`ProvisioningSpec` or raises :class:`ProvisioningError`
naming the path of the first offending field. Nothing is returned before the whole
document has been checked, so an invalid file is rejected whole.

Rates given as ``csv: path`` are read through the ``read_csv`` callable supplied by the
caller (``billingctl.provisioning_file`` reads them from disk); it yields
``(line_number, row)`` for each data row, and errors there name the CSV and its line.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing_core.domain.credentials import (
    DEFAULT_METHODS,
    AuthMethod,
    needs_secret,
    parse_auth_methods,
)

__all__ = [
    "CLIENT_DEFAULTS",
    "CLIENT_FIELDS",
    "CLIENT_REQUIRED_FIELDS",
    "NOTIFY_FIELDS",
    "RATE_COLUMNS",
    "RATE_REQUIRED_COLUMNS",
    "TEMPLATE_FIELDS",
    "AccountSpec",
    "BillEventsBy",
    "ClientSpec",
    "CompanySpec",
    "Ident",
    "LowBalanceSpec",
    "PaymentSpec",
    "ProvisioningError",
    "ProvisioningSpec",
    "RateSpec",
    "RateTableSpec",
    "ReadCsv",
    "Status",
    "check_code",
    "check_currency",
    "check_low_balance",
    "check_tags",
    "check_text",
    "parse_day",
    "parse_provisioning",
    "rate_from_csv_row",
    "validate_account",
    "validate_client_fields",
]

Ident = Literal["login", "ip", "ani"]
Status = Literal["active", "stop", "deleted"]
BillEventsBy = Literal["setup", "connect", "disconnect"]

ReadCsv = Callable[[str], Iterable[tuple[int, Mapping[str, str]]]]

#: The columns of a rate (``rates:`` entry keys and rates CSV header names).
RATE_COLUMNS: tuple[str, ...] = (
    "code",
    "name",
    "rate",
    "setup_fee",
    "min_volume",
    "interval",
    "grace_volume",
    "effective_date",
    "end_date",
)


def rate_row(rate: RateSpec) -> dict[str, object]:
    """A rate as a row of the rates table (its columns are the spec's fields)."""
    return {column: getattr(rate, column) for column in RATE_COLUMNS}


#: The columns a rates CSV header must contain.
RATE_REQUIRED_COLUMNS: tuple[str, ...] = ("code", "rate", "effective_date")

_IDENTS: tuple[Ident, ...] = ("login", "ip", "ani")
_STATUSES: tuple[Status, ...] = ("active", "stop", "deleted")
_BILL_EVENTS_BY: tuple[BillEventsBy, ...] = ("setup", "connect", "disconnect")

_TOP_KEYS = ("settings", "rate_tables", "clients")
_SETTINGS_KEYS = ("max_call_length",)
_TABLE_KEYS = ("name", "currency", "rates", "csv")
_CLIENT_KEYS = (
    "name",
    "status",
    "currency",
    "timezone",
    "locale",
    "tags",
    "bill_events_by",
    "postpaid",
    "credit",
    "rate_table",
    "capacity",
    "low_balance",
    "notify_client_below",
    "notify_admin_below",
    "company",
    "payments",
    "accounts",
)
_LOW_BALANCE_KEYS = ("threshold", "capacity")
_COMPANY_KEYS = (
    "name",
    "main_email",
    "billing_email",
    "rates_email",
    "address",
    "zip_code",
    "tax_id",
    "registration_id",
    "account_details",
)
_COMPANY_EMAIL_KEYS = frozenset({"main_email", "billing_email", "rates_email"})
_PAYMENT_KEYS = ("id", "amount", "note")
_ACCOUNT_KEYS = ("name", "ident", "value", "tech_prefix", "password", "auth_methods")

_AMOUNT_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_WHOLE_RE = re.compile(r"[+-]?[0-9]+")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)

_MICRO = Decimal("0.000001")
_MAX_PLACES = 6
_CREDIT_INT_DIGITS = 9
_AMOUNT_INT_DIGITS = 12  # NUMERIC(18, 6): 12 digits before the point

_AMOUNT_HINT = 'must be a decimal string like "0.10"'

_T = TypeVar("_T", bound=str)


class ProvisioningError(ValueError):
    """An invalid provisioning file; ``str(e)`` is one line: ``"<path>: <what is wrong>"``."""

    path: str
    problem: str

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = " ".join(problem.split())
        super().__init__(f"{path}: {self.problem}")


@dataclass(frozen=True, slots=True)
class RateSpec:
    code: str
    name: str
    rate: Decimal
    setup_fee: Decimal
    min_volume: int
    interval: int
    grace_volume: int
    effective_date: datetime  # tz-aware, UTC
    end_date: datetime | None  # tz-aware, UTC; None: open-ended


@dataclass(frozen=True, slots=True)
class RateTableSpec:
    name: str
    currency: str
    rates: tuple[RateSpec, ...]


@dataclass(frozen=True, slots=True)
class AccountSpec:
    name: str
    ident: Ident
    value: str  # ip: canonical form; ani: digits, no leading '+'
    tech_prefix: str | None
    password: str | None  # plain text as written; only for login accounts
    auth_methods: frozenset[AuthMethod] = DEFAULT_METHODS  # how the password may be proven


@dataclass(frozen=True, slots=True)
class PaymentSpec:
    id: str
    amount: Decimal  # may be negative (a charge)
    note: str


@dataclass(frozen=True, slots=True)
class LowBalanceSpec:
    threshold: Decimal
    capacity: int


@dataclass(frozen=True, slots=True)
class CompanySpec:
    name: str | None = None
    main_email: str | None = None
    billing_email: str | None = None
    rates_email: str | None = None
    address: str | None = None
    zip_code: str | None = None
    tax_id: str | None = None
    registration_id: str | None = None
    account_details: str | None = None


@dataclass(frozen=True, slots=True)
class ClientSpec:
    name: str
    status: Status
    currency: str
    timezone: str
    locale: str | None
    tags: tuple[str, ...]
    bill_events_by: BillEventsBy
    postpaid: bool
    credit: Decimal
    rate_table: str | None  # a table of this file, or one the database must already have
    capacity: int | None  # None: unlimited
    low_balance: LowBalanceSpec | None
    company: CompanySpec
    payments: tuple[PaymentSpec, ...]
    accounts: tuple[AccountSpec, ...]
    # low-balance notifications: below this available balance (None: off)
    notify_client_below: Decimal | None = None
    notify_admin_below: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ProvisioningSpec:
    max_call_length: int | None
    rate_tables: tuple[RateTableSpec, ...]
    clients: tuple[ClientSpec, ...]


# --- entry point ---------------------------------------------------------------------------


def parse_provisioning(data: object, read_csv: ReadCsv) -> ProvisioningSpec:
    """Validate a loaded provisioning document; raise ProvisioningError on the first fault."""
    if data is None:
        raise ProvisioningError("document", "is empty")
    top = _mapping(data, "document", _TOP_KEYS, top_level=True)

    max_call_length: int | None = None
    settings_value = top.get("settings")
    if settings_value is not None:
        settings = _mapping(settings_value, "settings", _SETTINGS_KEYS)
        raw = settings.get("max_call_length")
        if raw is not None:
            max_call_length = _whole(raw, "settings.max_call_length", minimum=1)

    tables: list[RateTableSpec] = []
    table_at: dict[str, str] = {}
    for path, item in _items(top.get("rate_tables"), "rate_tables"):
        table = _rate_table(item, path, read_csv)
        name_path = f"{path}.name"
        if table.name in table_at:
            raise ProvisioningError(
                name_path,
                f"duplicate rate table name {_show(table.name)} (also at {table_at[table.name]})",
            )
        table_at[table.name] = name_path
        tables.append(table)
    currency_of = {table.name: table.currency for table in tables}

    seen = _Seen()
    clients = [
        _client(item, path, currency_of, seen)
        for path, item in _items(top.get("clients"), "clients")
    ]
    return ProvisioningSpec(
        max_call_length=max_call_length, rate_tables=tuple(tables), clients=tuple(clients)
    )


# --- rate tables ---------------------------------------------------------------------------


def _rate_table(value: object, path: str, read_csv: ReadCsv) -> RateTableSpec:
    fields = _mapping(value, path, _TABLE_KEYS)
    name = _name(fields.get("name"), f"{path}.name")
    currency = _currency(fields.get("currency"), f"{path}.currency")
    has_rates = fields.get("rates") is not None
    has_csv = fields.get("csv") is not None
    if has_rates and has_csv:
        raise ProvisioningError(f"{path}.csv", "not allowed together with rates: give one of them")
    if not has_rates and not has_csv:
        raise ProvisioningError(path, "needs rates (a list) or csv (a file name)")

    rates: list[RateSpec] = []
    # (code, effective_date) -> where it was first seen
    first_at: dict[tuple[str, datetime], str] = {}
    if has_rates:
        for item_path, item in _items(fields.get("rates"), f"{path}.rates"):
            row = _mapping(item, item_path, RATE_COLUMNS)
            rate = _rate(row, _dotted(item_path))
            _check_unique_rate(rate, f"{item_path}.effective_date", item_path, first_at)
            rates.append(rate)
    else:
        csv_name = _text(fields.get("csv"), f"{path}.csv")
        for line, cells in _csv_rows(read_csv, csv_name, f"{path}.csv"):
            where = f"{csv_name} line {line}"
            rate = rate_from_csv_row(cells, where)
            _check_unique_rate(rate, f"{where}: effective_date", f"line {line}", first_at)
            rates.append(rate)
    return RateTableSpec(name=name, currency=currency, rates=tuple(rates))


def _dotted(base: str) -> Callable[[str], str]:
    """Field paths of a YAML entry: ``rate_tables[0].rates[3].interval``."""

    def at(key: str) -> str:
        return f"{base}.{key}"

    return at


def _columned(base: str) -> Callable[[str], str]:
    """Field paths of a CSV row: ``rates.csv line 4: interval``."""

    def at(key: str) -> str:
        return f"{base}: {key}"

    return at


def _csv_rows(
    read_csv: ReadCsv, csv_name: str, path: str
) -> Iterator[tuple[int, Mapping[str, str]]]:
    """The rows read_csv yields; its OSError/ValueError become a ProvisioningError at ``path``."""
    try:
        rows = iter(read_csv(csv_name))
    except ProvisioningError:
        raise
    except (OSError, ValueError) as exc:
        raise ProvisioningError(path, f"cannot read {csv_name}: {_reason(exc)}") from exc
    while True:
        try:
            item = next(rows)
        except StopIteration:
            return
        except ProvisioningError:
            raise
        except (OSError, ValueError) as exc:
            raise ProvisioningError(path, f"cannot read {csv_name}: {_reason(exc)}") from exc
        yield item


def _csv_row(cells: Mapping[str, str], where: str) -> dict[str, object]:
    """A CSV row as a rate mapping: cells stripped, an empty cell left out (null/default)."""
    row: dict[str, object] = {}
    for column, cell in cells.items():
        if column not in RATE_COLUMNS:
            raise ProvisioningError(f"{where}: {column}", "unknown column")
        text = cell.strip() if isinstance(cell, str) else cell
        if text is not None and text != "":
            row[column] = text
    return row


def _rate(row: Mapping[str, object], at: Callable[[str], str]) -> RateSpec:
    code = _code(row.get("code"), at("code"))
    name_value = row.get("name")
    name = "" if name_value is None else _text(name_value, at("name"), allow_empty=True)
    rate = _amount(row.get("rate"), at("rate"), minimum=Decimal(0))
    setup_value = row.get("setup_fee")
    setup_fee = (
        Decimal(0)
        if setup_value is None
        else _amount(setup_value, at("setup_fee"), minimum=Decimal(0))
    )
    min_volume = _whole_or(row.get("min_volume"), at("min_volume"), minimum=0, default=0)
    interval = _whole_or(row.get("interval"), at("interval"), minimum=1, default=1)
    grace_volume = _whole_or(row.get("grace_volume"), at("grace_volume"), minimum=0, default=0)
    effective_date = _moment(row.get("effective_date"), at("effective_date"))
    end_value = row.get("end_date")
    end_date = None if end_value is None else _moment(end_value, at("end_date"))
    if end_date is not None and end_date <= effective_date:
        raise ProvisioningError(at("end_date"), "must be after effective_date")
    return RateSpec(
        code=code,
        name=name,
        rate=rate,
        setup_fee=setup_fee,
        min_volume=min_volume,
        interval=interval,
        grace_volume=grace_volume,
        effective_date=effective_date,
        end_date=end_date,
    )


def _check_unique_rate(
    rate: RateSpec, path: str, label: str, first_at: dict[tuple[str, datetime], str]
) -> None:
    key = (rate.code, rate.effective_date)
    if key in first_at:
        raise ProvisioningError(
            path,
            f"code {rate.code} already has a rate effective {rate.effective_date.isoformat()}"
            f" (at {first_at[key]})",
        )
    first_at[key] = label


# --- clients -------------------------------------------------------------------------------


class _Seen:
    """File-wide uniqueness: client names, account names and identities, payment ids."""

    def __init__(self) -> None:
        self.clients: dict[str, str] = {}
        self.accounts: dict[str, str] = {}
        self.identities: dict[tuple[str, str, str | None], str] = {}
        self.payments: dict[str, str] = {}


def _client(value: object, path: str, currency_of: Mapping[str, str], seen: _Seen) -> ClientSpec:
    fields = _mapping(value, path, _CLIENT_KEYS)

    name = _client_name(fields.get("name"), path, seen)
    status = _choice(fields.get("status"), f"{path}.status", _STATUSES, default="active")
    currency = _currency(fields.get("currency"), f"{path}.currency")
    timezone = _timezone(fields.get("timezone"), f"{path}.timezone")
    locale = _locale(fields.get("locale"), f"{path}.locale")
    tags = _tags(fields.get("tags"), f"{path}.tags")
    bill_events_by = _choice(
        fields.get("bill_events_by"),
        f"{path}.bill_events_by",
        _BILL_EVENTS_BY,
        default="disconnect",
    )
    postpaid = _flag(fields.get("postpaid"), f"{path}.postpaid", default=False)
    credit = _credit(fields.get("credit"), f"{path}.credit")
    rate_table = _client_rate_table(
        fields.get("rate_table"), f"{path}.rate_table", currency, currency_of
    )
    capacity_value = fields.get("capacity")
    capacity = None if capacity_value is None else _whole(capacity_value, f"{path}.capacity", 0)
    low_balance = _low_balance(fields.get("low_balance"), f"{path}.low_balance")
    notify = {
        key: None if fields.get(key) is None else _amount(fields.get(key), f"{path}.{key}")
        for key in NOTIFY_FIELDS
    }
    company = _company(fields.get("company"), f"{path}.company")
    payments = tuple(
        _payment(item, item_path, seen)
        for item_path, item in _items(fields.get("payments"), f"{path}.payments")
    )
    accounts = tuple(
        _account(item, item_path, seen)
        for item_path, item in _items(fields.get("accounts"), f"{path}.accounts")
    )
    return ClientSpec(
        name=name,
        status=status,
        currency=currency,
        timezone=timezone,
        locale=locale,
        tags=tags,
        bill_events_by=bill_events_by,
        postpaid=postpaid,
        credit=credit,
        rate_table=rate_table,
        capacity=capacity,
        low_balance=low_balance,
        company=company,
        payments=payments,
        accounts=accounts,
        notify_client_below=notify["notify_client_below"],
        notify_admin_below=notify["notify_admin_below"],
    )


def _client_name(value: object, path: str, seen: _Seen) -> str:
    """The client's name, unique in the file."""
    name_path = f"{path}.name"
    name = _name(value, name_path)
    if name in seen.clients:
        raise ProvisioningError(
            name_path, f"duplicate client name {_show(name)} (also at {seen.clients[name]})"
        )
    seen.clients[name] = path
    return name


def _credit(value: object, path: str) -> Decimal:
    return Decimal(0) if value is None else _amount(value, path, int_digits=_CREDIT_INT_DIGITS)


def _client_rate_table(
    value: object, path: str, currency: str, currency_of: Mapping[str, str]
) -> str | None:
    """The client's rate table, in the client's currency when it is one of this file's (a
    name not in this file must already be in the database: the applier checks it)."""
    if value is None:
        return None
    rate_table = _name(value, path)
    table_currency = currency_of.get(rate_table)
    if table_currency is not None and table_currency != currency:
        raise ProvisioningError(
            path,
            f"rate table {_show(rate_table)} is in {table_currency},"
            f" the client's currency is {currency}",
        )
    return rate_table


def _low_balance(value: object, path: str) -> LowBalanceSpec | None:
    if value is None:
        return None
    fields = _mapping(value, path, _LOW_BALANCE_KEYS)
    threshold = _amount(fields.get("threshold"), f"{path}.threshold")
    capacity = _whole(fields.get("capacity"), f"{path}.capacity", minimum=0)
    return LowBalanceSpec(threshold=threshold, capacity=capacity)


def _company(value: object, path: str) -> CompanySpec:
    if value is None:
        return CompanySpec()
    fields = _mapping(value, path, _COMPANY_KEYS)
    found: dict[str, str | None] = {}
    for key in _COMPANY_KEYS:
        raw = fields.get(key)
        text = None if raw is None else _text(raw, f"{path}.{key}", allow_empty=True).strip()
        if text is not None and key in _COMPANY_EMAIL_KEYS and text:
            _check_email(text, f"{path}.{key}")
        found[key] = text or None
    return CompanySpec(**found)


def _check_email(text: str, path: str) -> None:
    if not text.isascii():
        raise ProvisioningError(path, "must use Latin characters only")
    if _EMAIL_RE.fullmatch(text) is None:
        raise ProvisioningError(path, 'must be an email address like "noc@example.com"')


def _payment(value: object, path: str, seen: _Seen) -> PaymentSpec:
    fields = _mapping(value, path, _PAYMENT_KEYS)
    id_path = f"{path}.id"
    payment_id = _text(fields.get("id"), id_path)
    if payment_id in seen.payments:
        raise ProvisioningError(
            id_path,
            f"duplicate payment id {_show(payment_id)} (also at {seen.payments[payment_id]})",
        )
    seen.payments[payment_id] = id_path
    amount = _amount(fields.get("amount"), f"{path}.amount")
    note_value = fields.get("note")
    note = "" if note_value is None else _text(note_value, f"{path}.note", allow_empty=True)
    return PaymentSpec(id=payment_id, amount=amount, note=note)


def _account(value: object, path: str, seen: _Seen) -> AccountSpec:
    fields = _mapping(value, path, _ACCOUNT_KEYS)
    name_path = f"{path}.name"
    name = _name(fields.get("name"), name_path)
    if name in seen.accounts:
        raise ProvisioningError(
            name_path, f"duplicate account name {_show(name)} (also at {seen.accounts[name]})"
        )
    seen.accounts[name] = path
    account = _account_fields(fields, _dotted(path))
    identity = (account.ident, account.value, account.tech_prefix)
    if identity in seen.identities:
        raise ProvisioningError(
            f"{path}.value",
            f"{account.ident} {_show(account.value)} with the same tech_prefix is already"
            f" at {seen.identities[identity]}",
        )
    seen.identities[identity] = path
    return account


def _account_fields(fields: Mapping[str, object], at: Callable[[str], str]) -> AccountSpec:
    """One account's own rules (no file-wide uniqueness); ``at`` names a field's path."""
    name = _name(fields.get("name"), at("name"))
    ident = _choice(fields.get("ident"), at("ident"), _IDENTS, default=None)
    value_path = at("value")
    raw_value = _text(fields.get("value"), value_path)
    if ident == "ip":
        account_value = _ip(raw_value, value_path)
    elif ident == "ani":
        account_value = raw_value.removeprefix("+")
        if not (account_value.isascii() and account_value.isdigit()):
            raise ProvisioningError(value_path, "must be a number: digits, optionally after '+'")
    else:
        account_value = raw_value

    prefix_value = fields.get("tech_prefix")
    tech_prefix = None if prefix_value is None else _text(prefix_value, at("tech_prefix"))

    password_value = fields.get("password")
    password: str | None = None
    if password_value is not None:
        password_path = at("password")
        if ident != "login":
            raise ProvisioningError(password_path, "only allowed for ident login")
        if not isinstance(password_value, str):
            raise ProvisioningError(password_path, "must be a string")
        if password_value == "":
            raise ProvisioningError(password_path, "must not be empty (leave it out for none)")
        password = password_value
    methods_value = fields.get("auth_methods")
    methods = DEFAULT_METHODS
    if methods_value is not None:
        methods_path = at("auth_methods")
        if ident != "login":
            raise ProvisioningError(methods_path, "only allowed for ident login")
        if not isinstance(methods_value, list | tuple | str):
            raise ProvisioningError(methods_path, "must be a list of pap, chap, digest")
        try:
            methods = parse_auth_methods(methods_value)
        except ValueError as exc:
            raise ProvisioningError(methods_path, str(exc)) from None
        if password is None and needs_secret(methods):
            raise ProvisioningError(methods_path, "chap and digest need a password")
    return AccountSpec(
        name=name,
        ident=ident,
        value=account_value,
        tech_prefix=tech_prefix,
        password=password,
        auth_methods=methods,
    )


def _ip(text: str, path: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProvisioningError(path, "must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# --- scalar fields -------------------------------------------------------------------------


def _items(value: object, path: str) -> Iterator[tuple[str, object]]:
    """The entries of a list (null: none), each with its path ``path[i]``."""
    if value is None:
        return
    if not isinstance(value, list | tuple):
        raise ProvisioningError(path, "must be a list")
    for index, item in enumerate(value):
        yield f"{path}[{index}]", item


def _mapping(
    value: object, path: str, allowed: tuple[str, ...], *, top_level: bool = False
) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ProvisioningError(path, f"must be a mapping with keys {', '.join(allowed)}")
    result: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str) or key not in allowed:
            key_path = str(key) if top_level else f"{path}.{key}"
            raise ProvisioningError(key_path, "unknown key")
        result[key] = item
    return result


def _text(value: object, path: str, *, allow_empty: bool = False) -> str:
    """A string, stripped of surrounding whitespace; required and non-empty by default."""
    if value is None:
        raise ProvisioningError(path, "is required")
    if not isinstance(value, str):
        hint = f' (quote it: "{value}")' if isinstance(value, int | float) else ""
        raise ProvisioningError(path, f"must be a string{hint}")
    text = value.strip()
    if not text and not allow_empty:
        raise ProvisioningError(path, "must not be empty")
    return text


def _name(value: object, path: str) -> str:
    return _text(value, path)


def _code(value: object, path: str) -> str:
    if value is None:
        raise ProvisioningError(path, "is required")
    if not isinstance(value, str):
        raise ProvisioningError(path, 'must be a string of digits like "1" (quote it)')
    code = "".join(value.split())
    if not code:
        raise ProvisioningError(path, "must not be empty")
    if not (code.isascii() and code.isdigit()):
        raise ProvisioningError(path, "must contain digits only")
    return code


def _choice(value: object, path: str, choices: tuple[_T, ...], *, default: _T | None) -> _T:
    if value is None:
        if default is None:
            raise ProvisioningError(path, f"is required: one of {', '.join(choices)}")
        return default
    for choice in choices:
        if value == choice:
            return choice
    raise ProvisioningError(path, f"must be one of {', '.join(choices)}")


def _flag(value: object, path: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ProvisioningError(path, "must be true or false")
    return value


def _whole(value: object, path: str, minimum: int) -> int:
    """An int (never a bool or a float), or a string of digits (a CSV cell), ≥ ``minimum``."""
    message = f"must be a whole number >= {minimum}"
    if value is None:
        raise ProvisioningError(path, f"is required: a whole number >= {minimum}")
    if isinstance(value, bool):
        raise ProvisioningError(path, message)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _WHOLE_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ProvisioningError(path, message)
    if number < minimum:
        raise ProvisioningError(path, message)
    return number


def _whole_or(value: object, path: str, *, minimum: int, default: int) -> int:
    return default if value is None else _whole(value, path, minimum)


def _amount(
    value: object,
    path: str,
    *,
    minimum: Decimal | None = None,
    int_digits: int = _AMOUNT_INT_DIGITS,
) -> Decimal:
    """A decimal string (or an int), at most 6 decimal places and ``int_digits`` before the point.

    Floats are refused: YAML reads ``0.1`` as a binary float, which is not the amount written.
    The value is kept as written (``"1.50"`` stays ``Decimal("1.50")``).
    """
    if value is None:
        raise ProvisioningError(path, 'is required: a decimal string like "0.10"')
    if isinstance(value, bool):
        raise ProvisioningError(path, _AMOUNT_HINT)
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str) and _AMOUNT_RE.fullmatch(value.strip()):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits valid literals only
            raise ProvisioningError(path, _AMOUNT_HINT) from None
    elif isinstance(value, Decimal) and value.is_finite():
        amount = value
    else:
        raise ProvisioningError(path, _AMOUNT_HINT)
    if abs(amount) >= Decimal(10) ** int_digits:
        raise ProvisioningError(path, f"must have at most {int_digits} digits before the point")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_MAX_PLACES:
        if amount != amount.quantize(_MICRO):
            raise ProvisioningError(path, f"must have at most {_MAX_PLACES} decimal places")
        amount = amount.quantize(_MICRO)  # only trailing zeros went: the value is unchanged
    if minimum is not None and amount < minimum:
        raise ProvisioningError(path, f"must be >= {minimum}")
    return amount


def _moment(value: object, path: str) -> datetime:
    """ISO 8601 (or a YAML date/datetime); a date alone is midnight UTC; naive means UTC."""
    example = 'an ISO 8601 date or time like "2026-01-01T00:00:00Z"'
    hint = f"must be {example}"
    if value is None:
        raise ProvisioningError(path, f"is required: {example}")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ProvisioningError(path, hint) from None
    else:
        raise ProvisioningError(path, hint)
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _currency(value: object, path: str) -> str:
    if value is None:
        return "USD"
    if not isinstance(value, str) or _CURRENCY_RE.fullmatch(value) is None:
        raise ProvisioningError(path, 'must be a 3-letter uppercase currency code like "USD"')
    return value


def _timezone(value: object, path: str) -> str:
    if value is None:
        return "UTC"
    name = _text(value, path)
    if name == "UTC":
        return name  # the default works even without the tz database
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ProvisioningError(path, f"unknown time zone {_show(name)}") from None
    return name


def _locale(value: object, path: str) -> str | None:
    if value is None:
        return None
    text = _text(value, path)
    if _LOCALE_RE.fullmatch(text) is None:
        raise ProvisioningError(path, 'must be a language tag like "es" or "en-US"')
    return text


def _tags(value: object, path: str) -> tuple[str, ...]:
    tags: list[str] = []
    for item_path, item in _items(value, path):
        tag = _text(item, item_path)
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


def _show(value: str) -> str:
    """A value quoted for a one-line message, shortened when long."""
    text = value if len(value) <= 40 else value[:37] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- the same rules, field by field, for billingctl ----------------------------------------

#: The low-balance notification thresholds of a client or template (amounts; None: off).
NOTIFY_FIELDS: tuple[str, ...] = ("notify_client_below", "notify_admin_below")

#: Client fields that ``billingctl clients add/edit`` and client templates set one by one,
#: named as the database columns (tags and the client's name are separate).
CLIENT_FIELDS: tuple[str, ...] = (
    "status",
    "currency",
    "timezone",
    "locale",
    "bill_events_by",
    "postpaid",
    "credit",
    "rate_table",
    "capacity",
    "low_balance_threshold",
    "low_balance_capacity",
    "notify_client_below",
    "notify_admin_below",
    "reseller",
    "tax_profile",
    "payment_terms",
    "hidden_numbers",
    "autoinvoicing",
    "last_invoiced",
    "company_name",
    "main_email",
    "billing_email",
    "rates_email",
    "address",
    "zip_code",
    "tax_id",
    "registration_id",
    "account_details",
)
#: The fields a client template may hold: a client's, except its last-invoiced date.
TEMPLATE_FIELDS: tuple[str, ...] = tuple(f for f in CLIENT_FIELDS if f != "last_invoiced")
#: Fields a client always has a value for; every other one may be cleared (None).
CLIENT_REQUIRED_FIELDS: frozenset[str] = frozenset(
    {
        "status",
        "currency",
        "timezone",
        "bill_events_by",
        "postpaid",
        "credit",
        "hidden_numbers",
        "autoinvoicing",
    }
)
#: A new client's values for the fields neither given nor taken from a template.
CLIENT_DEFAULTS: Mapping[str, object] = {
    "status": "active",
    "currency": "USD",
    "timezone": "UTC",
    "bill_events_by": "disconnect",
    "postpaid": False,
    "credit": Decimal(0),
    "hidden_numbers": False,
    "autoinvoicing": False,
}

_TEXT_LIMITS: Mapping[str, int] = {
    "name": 128,
    "tag": 64,
    "rate_table": 128,
    "reseller": 128,
    "tax_profile": 128,
    "payment_terms": 64,
    "company_name": 256,
    "main_email": 256,
    "billing_email": 256,
    "rates_email": 256,
    "address": 2000,
    "zip_code": 32,
    "tax_id": 64,
    "registration_id": 64,
    "account_details": 2000,
}
_FLAG_WORDS: Mapping[str, bool] = {"yes": True, "true": True, "no": False, "false": False}


def rate_from_csv_row(cells: Mapping[str, str], where: str) -> RateSpec:
    """One data row of a rates CSV, validated as ``load`` does: errors read
    ``<where>: <column>: <problem>`` (``rates.csv line 4: interval: ...``).

    Plainly written rows (stripped cells, unsigned numbers, at most 6 decimals) take a fast
    path that parses each distinct amount and date once; any other row, valid or not, goes
    through the full rules, so the result and every message are the same either way."""
    return _plain_rate(cells) or _rate(_csv_row(cells, where), _columned(where))


_RATE_COLUMN_SET = frozenset(RATE_COLUMNS)
_PLAIN_AMOUNT_RE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_PLAIN_DIGITS_RE = re.compile(r"[0-9]{1,9}")
_PLAIN_CODE_RE = re.compile(r"[0-9]+")


@functools.lru_cache(maxsize=65536)
def _plain_amount(text: str) -> Decimal | None:
    return Decimal(text) if _PLAIN_AMOUNT_RE.fullmatch(text) else None


@functools.lru_cache(maxsize=4096)
def _plain_moment(text: str) -> datetime | None:
    try:
        return _moment(text, "")
    except ProvisioningError:
        return None


def _plain_whole(text: str | None, default: int) -> int | None:
    if not text:
        return default
    return int(text) if _PLAIN_DIGITS_RE.fullmatch(text) else None


def _plain_rate(cells: Mapping[str, str]) -> RateSpec | None:
    """The fast path of :func:`rate_from_csv_row`: None unless the row is plainly valid."""
    if not cells.keys() <= _RATE_COLUMN_SET:
        return None
    for cell in cells.values():
        if not isinstance(cell, str) or cell != cell.strip():
            return None
    code, rate_text = cells.get("code", ""), cells.get("rate", "")
    if not _PLAIN_CODE_RE.fullmatch(code) or not rate_text:
        return None
    rate = _plain_amount(rate_text)
    setup_text = cells.get("setup_fee")
    setup_fee = _plain_amount(setup_text) if setup_text else Decimal(0)
    min_volume = _plain_whole(cells.get("min_volume"), 0)
    interval = _plain_whole(cells.get("interval"), 1)
    grace_volume = _plain_whole(cells.get("grace_volume"), 0)
    effective_text = cells.get("effective_date")
    effective_date = _plain_moment(effective_text) if effective_text else None
    end_text = cells.get("end_date")
    end_date = _plain_moment(end_text) if end_text else None
    if (
        rate is None
        or setup_fee is None
        or min_volume is None
        or interval is None
        or interval < 1
        or grace_volume is None
        or effective_date is None
        or (end_text and (end_date is None or end_date <= effective_date))
    ):
        return None
    return RateSpec(
        code=code,
        name=cells.get("name") or "",
        rate=rate,
        setup_fee=setup_fee,
        min_volume=min_volume,
        interval=interval,
        grace_volume=grace_volume,
        effective_date=effective_date,
        end_date=end_date,
    )


def validate_client_fields(
    fields: Mapping[str, object], *, clear_any: bool = False
) -> dict[str, object]:
    """Validate the client fields given (by :data:`CLIENT_FIELDS` name) with ``load``'s rules.

    An error names the field: ``credit: must have at most 9 digits before the point``.
    An empty string clears an optional field (the result holds None); with ``clear_any``
    (a template, where None means "not set") every field may be cleared. Booleans may be
    given as ``yes``/``no``/``true``/``false``.
    """
    result: dict[str, object] = {}
    for key, value in fields.items():
        if key not in CLIENT_FIELDS:
            raise ProvisioningError(key, "unknown client field")
        if isinstance(value, str) and value.strip() == "":
            if key in CLIENT_REQUIRED_FIELDS and not clear_any:
                raise ProvisioningError(key, "must not be empty")
            result[key] = None
            continue
        result[key] = _client_field(key, value)
    return result


def _client_field(key: str, value: object) -> object:
    if key == "status":
        return _choice(value, key, _STATUSES, default=None)
    if key == "bill_events_by":
        return _choice(value, key, _BILL_EVENTS_BY, default=None)
    if key == "currency":
        return _currency(value, key)
    if key == "timezone":
        return _timezone(value, key)
    if key == "locale":
        return _locale(value, key)
    if key in {"postpaid", "hidden_numbers", "autoinvoicing"}:
        if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
            return _FLAG_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ProvisioningError(key, "must be yes or no")
        return value
    if key == "credit":
        return _amount(value, key, int_digits=_CREDIT_INT_DIGITS)
    if key == "low_balance_threshold" or key in NOTIFY_FIELDS:
        return _amount(value, key)
    if key in {"capacity", "low_balance_capacity"}:
        return _whole(value, key, minimum=0)
    if key == "last_invoiced":
        return parse_day(value, key)
    text = check_text(value, key)
    if key in _COMPANY_EMAIL_KEYS:
        _check_email(text, key)
    return text


def check_text(value: object, path: str) -> str:
    """A required, non-empty string (stripped), within the column's length when it has one."""
    text = _text(value, path)
    limit = _TEXT_LIMITS.get(path)
    if limit is not None and len(text) > limit:
        raise ProvisioningError(path, f"must be at most {limit} characters")
    return text


def check_tags(values: Iterable[object], path: str = "tag") -> tuple[str, ...]:
    """Tags as given (each a non-empty string of at most 64 characters), repeats dropped."""
    tags: list[str] = []
    for value in values:
        tag = _text(value, path)
        if len(tag) > _TEXT_LIMITS["tag"]:
            raise ProvisioningError(path, f"{_show(tag)}: must be at most 64 characters")
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


def check_low_balance(threshold: object, capacity: object) -> None:
    """The low-balance rule needs both its threshold and its capacity, or neither."""
    if threshold is not None and capacity is None:
        raise ProvisioningError("low_balance_capacity", "is required with low_balance_threshold")
    if capacity is not None and threshold is None:
        raise ProvisioningError("low_balance_threshold", "is required with low_balance_capacity")


def check_currency(value: object, path: str = "currency") -> str:
    if value is None:
        raise ProvisioningError(path, 'is required: a 3-letter currency code like "USD"')
    return _currency(value, path)


def check_code(value: object, path: str = "code") -> str:
    """A dialled code or number: digits only (spaces ignored)."""
    return _code(value, path)


def parse_day(value: object, path: str) -> date:
    """A calendar day: an ISO date ``2026-01-31`` (or a ``date``)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ProvisioningError(path, 'must be a date like "2026-01-31"')


def validate_account(
    *,
    name: object,
    ident: object,
    value: object,
    tech_prefix: object = None,
    password: object = None,
    auth_methods: object = None,
) -> AccountSpec:
    """One account with ``load``'s rules; an error names the field (``value: ...``)."""
    fields = {
        key: item
        for key, item in (
            ("name", name),
            ("ident", ident),
            ("value", value),
            ("tech_prefix", tech_prefix),
            ("password", password),
            ("auth_methods", auth_methods),
        )
        if item is not None
    }
    account = _account_fields(fields, lambda key: key)
    if len(account.name) > _TEXT_LIMITS["name"]:
        raise ProvisioningError("name", "must be at most 128 characters")
    return account
