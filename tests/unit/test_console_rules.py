"""The console's rules (billingctl.services), decided on plain values: no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing_core.domain.credentials import DEFAULT_METHODS
from billing_core.errors import UserError
from billing_core.ports import BalanceMoved, LiveEffect, LiveView
from billingctl.adapters.admin_accounts import AccountChange
from billingctl.services.accounts import plan_edit
from billingctl.services.clients import (
    account_flags_after,
    accounts_in_service,
    refuse_full_delete,
    refuse_full_delete_live,
)
from billingctl.services.live import Drift, drifts
from billingctl.services.money import follow_payments, invoice_period
from billingctl.services.rates import creates_table, import_counts


@dataclass(frozen=True)
class Client:
    name: str = "Acme"
    timezone: str = "UTC"
    last_invoiced: date | None = None


NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)  # 19:00 on the 9th in Honolulu


@pytest.mark.parametrize(
    ("client", "until", "period"),
    [
        (Client(), date(2026, 3, 9), (None, date(2026, 3, 9))),
        (
            Client(last_invoiced=date(2026, 2, 28)),
            date(2026, 3, 9),
            (date(2026, 3, 1), date(2026, 3, 9)),
        ),
        # 14:00 on the 10th in Tokyo: the 9th has ended there too
        (Client(timezone="Asia/Tokyo"), date(2026, 3, 9), (None, date(2026, 3, 9))),
    ],
)
def test_an_invoice_covers_the_days_after_the_last_one(
    client: Client, until: date, period: tuple[date | None, date]
) -> None:
    assert invoice_period(client, until, NOW) == period


@pytest.mark.parametrize(
    ("client", "until", "message"),
    [
        (
            Client(),
            date(2026, 3, 10),
            "until: 2026-03-10 has not ended yet in the client's time zone (UTC, ",
        ),
        (
            Client(timezone="Pacific/Honolulu"),
            date(2026, 3, 9),
            "(Pacific/Honolulu, today is 2026-03-09)",
        ),
        (
            Client(last_invoiced=date(2026, 3, 5)),
            date(2026, 3, 5),
            "until: Acme is invoiced through 2026-03-05 already",
        ),
        (Client(last_invoiced=date(2026, 3, 5)), date(2026, 3, 1), "invoiced through 2026-03-05"),
    ],
)
def test_an_invoice_is_refused_for_a_day_not_ended_or_invoiced_already(
    client: Client, until: date, message: str
) -> None:
    with pytest.raises(UserError) as caught:
        invoice_period(client, until, NOW)
    assert message in str(caught.value)


class FakeLive:
    """A live state that records what it is given and can be unreachable."""

    def __init__(self, reachable: list[bool]) -> None:
        self.reachable = reachable
        self.applied: list[tuple[list[LiveEffect], dict[int, int]]] = []
        self.missed = False

    def apply(self, effects: list[LiveEffect], seqs: dict[int, int]) -> None:
        self.missed = not self.reachable.pop(0)
        if not self.missed:
            self.applied.append((list(effects), dict(seqs)))


def test_payments_reach_the_live_state_one_by_one_on_their_own_sequence() -> None:
    live = FakeLive([True, True])
    moved = [(1, Decimal("5.00"), 7), (1, Decimal("-2.00"), 8)]
    assert follow_payments(live, moved) is False  # type: ignore[arg-type]
    assert live.applied == [
        ([BalanceMoved(1, Decimal("5.00"))], {1: 7}),
        ([BalanceMoved(1, Decimal("-2.00"))], {1: 8}),
    ]


def test_a_live_state_that_missed_the_change_is_reported() -> None:
    assert follow_payments(FakeLive([False]), [(1, Decimal("1"), 1)]) is True  # type: ignore[arg-type]


def test_without_redis_the_database_is_the_live_state_and_nothing_follows() -> None:
    assert follow_payments(None, [(1, Decimal("1"), 1)]) is False


@pytest.mark.parametrize(
    ("old", "new", "flags"),
    [
        ("active", "deleted", False),
        ("stop", "deleted", False),
        ("deleted", "active", True),
        ("deleted", "stop", True),
        ("active", "stop", None),  # flags set account by account survive
        ("stop", "active", None),
        ("active", "active", None),
        ("deleted", "deleted", None),
    ],
)
def test_accounts_follow_a_client_into_and_out_of_deleted(
    old: str, new: str, flags: bool | None
) -> None:
    assert account_flags_after(old, new) is flags


@pytest.mark.parametrize(
    ("status", "serving"), [("active", True), ("stop", True), ("deleted", False)]
)
def test_a_new_account_serves_unless_its_client_is_deleted(status: str, serving: bool) -> None:
    assert accounts_in_service(status) is serving


def test_a_client_with_calls_in_progress_is_never_removed() -> None:
    refuse_full_delete("Acme", calls_in_progress=0)
    with pytest.raises(UserError, match=r"^client: Acme has 2 call\(s\) in progress; delete it"):
        refuse_full_delete("Acme", calls_in_progress=2)
    idle = LiveView(balance=Decimal("1"), held=Decimal("0"), active_calls=0)
    refuse_full_delete_live("Acme", idle)
    for busy in (
        LiveView(balance=Decimal("1"), held=Decimal("0.5"), active_calls=0),
        LiveView(balance=Decimal("1"), held=Decimal("0"), active_calls=1),
    ):
        with pytest.raises(UserError, match=r"in progress \(live state\)"):
            refuse_full_delete_live("Acme", busy)


@dataclass(frozen=True)
class Account:
    name: str = "acme-sip"
    ident: str = "login"
    value: str = "acme"
    tech_prefix: str | None = "99#"
    password_hash: str | None = None
    secret_enc: bytes | None = None
    auth_methods: str | None = "pap,chap"
    enabled: bool = True


def test_an_edit_keeps_what_it_does_not_name() -> None:
    edit = plan_edit(Account(), AccountChange(value="acme2"))
    assert (edit.spec.name, edit.spec.ident, edit.spec.value) == ("acme-sip", "login", "acme2")
    assert edit.spec.tech_prefix == "99#"
    assert edit.methods == {"pap", "chap"}
    assert not edit.clear_password and not edit.reset_methods and not edit.disables


def test_an_empty_tech_prefix_removes_it_and_disabling_an_enabled_account_is_told() -> None:
    edit = plan_edit(Account(), AccountChange(tech_prefix="", enabled=False))
    assert edit.spec.tech_prefix is None
    assert edit.disables
    assert not plan_edit(Account(enabled=False), AccountChange(enabled=False)).disables


def test_leaving_login_drops_the_methods_and_a_password_only_on_purpose() -> None:
    edit = plan_edit(Account(), AccountChange(ident="ip", value="10.0.0.1"))
    assert edit.clear_password and edit.methods == DEFAULT_METHODS and not edit.reset_methods
    with pytest.raises(UserError, match=r"^password: only allowed for ident login \(give"):
        plan_edit(Account(password_hash="x"), AccountChange(ident="ip", value="10.0.0.1"))
    dropped = plan_edit(
        Account(password_hash="x"), AccountChange(ident="ip", value="10.0.0.1", clear_password=True)
    )
    assert dropped.clear_password and dropped.methods == DEFAULT_METHODS


def test_no_password_on_a_login_account_keeps_its_methods_but_stores_the_default() -> None:
    edit = plan_edit(Account(password_hash="x"), AccountChange(clear_password=True))
    assert edit.clear_password and edit.reset_methods
    assert edit.methods == {"pap", "chap"}


@pytest.mark.parametrize(
    ("account", "methods", "message"),
    [
        (
            Account(ident="ip", value="10.0.0.1"),
            "chap",
            "auth_methods: only allowed for ident login",
        ),
        (Account(), "telepathy", "auth_methods: "),
    ],
)
def test_auth_methods_belong_to_login_accounts(
    account: Account, methods: str, message: str
) -> None:
    with pytest.raises(UserError) as caught:
        plan_edit(account, AccountChange(auth_methods=methods))
    assert str(caught.value).startswith(message)


def test_an_import_creates_a_table_only_when_given_its_currency() -> None:
    assert creates_table("retail", None, "EUR") is True
    assert creates_table("retail", "EUR", None) is False
    assert creates_table("retail", "EUR", "EUR") is False
    with pytest.raises(UserError, match=r"^no rate table named 'retail' \(give --currency"):
        creates_table("retail", None, None)
    with pytest.raises(UserError, match=r"^currency: rate table 'retail' is in EUR, not USD$"):
        creates_table("retail", "EUR", "USD")


@pytest.mark.parametrize(
    ("mode", "staged", "before", "after", "counts"),
    [
        ("replace", 3, 5, 3, {"added": 3, "updated": 0, "removed": 5}),
        ("merge", 3, 5, 6, {"added": 1, "updated": 2, "removed": 0}),
        ("merge", 3, 0, 3, {"added": 3, "updated": 0, "removed": 0}),
    ],
)
def test_an_import_counts_what_it_added_updated_and_removed(
    mode: str, staged: int, before: int, after: int, counts: dict[str, int]
) -> None:
    assert import_counts(mode, staged, before, after) == counts


def test_a_client_drifts_when_its_live_balance_is_not_its_ledger_sum() -> None:
    def view(balance: str) -> LiveView:
        return LiveView(balance=Decimal(balance), held=Decimal("0"), active_calls=0)

    ledger = {2: Decimal("5.00"), 1: Decimal("1.50")}
    found = drifts(ledger, {1: view("1.50"), 2: view("4.00")})
    assert found == [Drift(2, Decimal("4.00"), Decimal("5.00"))]
    assert found[0].difference == Decimal("-1.00")
    assert drifts(ledger, {1: view("1.50"), 2: view("5.00")}) == []
