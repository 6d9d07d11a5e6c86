"""The Access-Request checks of CONTRACT §3 on the pure decide() and check_client(), and the
password hashing of billing_core.domain."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing_core.domain.model import Client, RejectReason, Status, check_password, hash_password
from billing_core.domain.policy import (
    Accept,
    Decision,
    GrantTerms,
    LiveSnapshot,
    Reject,
    check_client,
    decide,
)
from billing_core.domain.rating import Rate

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MCL = 3600

BASE_CLIENT = Client(
    id=1,
    name="acme",
    status="active",
    currency="USD",
    locale=None,
    postpaid=False,
    credit=D("0"),
    rate_table_id=1,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="setup",
)


def rate(per_minute: str = "0.10", setup_fee: str = "0", min_volume: int = 60) -> Rate:
    return Rate(
        code="1",
        name="usa",
        rate=D(per_minute),
        setup_fee=D(setup_fee),
        min_volume=min_volume,
        interval=60,
        grace_volume=0,
        effective_date=T0,
    )


R10 = rate("0.10")  # 0.10/min, 60/60: cost(g1) = 0.10
R20 = rate("0.20")
FREE = rate("0")


def client(**changes: Any) -> Client:
    return replace(BASE_CLIENT, **changes)


def live(balance: str, held_by_others: str = "0", calls_in_use: int = 0) -> LiveSnapshot:
    return LiveSnapshot(D(balance), D(held_by_others), calls_in_use)


# --- check_client ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("deleted", Reject(RejectReason.CLIENT_DELETED)),
        ("stop", Reject(RejectReason.CLIENT_STOPPED)),
        ("active", None),
    ],
)
def test_check_client_status(status: Status, expected: Reject | None) -> None:
    assert check_client(client(status=status)) == expected


@pytest.mark.parametrize("postpaid", [False, True])
def test_check_client_status_does_not_depend_on_money(postpaid: bool) -> None:
    rich = client(status="stop", postpaid=postpaid, credit=D("1000"))
    assert check_client(rich) == Reject(RejectReason.CLIENT_STOPPED)
    assert check_client(replace(rich, status="deleted")) == Reject(RejectReason.CLIENT_DELETED)


# --- decide: the checks on live state, in the contract's order -------------------------------

CAPACITY = Reject(RejectReason.CAPACITY)
ZERO_BALANCE = Reject(RejectReason.ZERO_BALANCE)
CREDIT_LIMIT = Reject(RejectReason.CREDIT_LIMIT)
INSUFFICIENT = Reject(RejectReason.INSUFFICIENT_FUNDS)

LOW = {"capacity": 10, "low_balance_threshold": D("5.00"), "low_balance_capacity": 1}

# (id, client, rate, max_call_length, live, expected)
DECIDE: list[tuple[str, Client, Rate | None, int, LiveSnapshot, Decision]] = [
    # capacity: calls in use (others only) >= capacity
    ("below capacity", client(capacity=2), R10, MCL, live("1.00", calls_in_use=1),
     Accept(600, D("1.00"), D("1.00"))),
    ("at capacity", client(capacity=2), R10, MCL, live("1.00", calls_in_use=2), CAPACITY),
    ("over capacity", client(capacity=2), R10, MCL, live("1.00", calls_in_use=5), CAPACITY),
    ("capacity zero", client(capacity=0), R10, MCL, live("1.00"), CAPACITY),
    ("capacity none is unlimited", client(capacity=None), R10, MCL,
     live("1.00", calls_in_use=10_000), Accept(600, D("1.00"), D("1.00"))),
    # the low-balance capacity applies while available < threshold
    ("low balance capacity reached", client(**LOW), R10, MCL, live("4.99", calls_in_use=1),
     CAPACITY),
    ("low balance capacity free", client(**LOW), R10, MCL, live("4.99"),
     Accept(2940, D("4.90"), D("4.99"))),
    ("at the threshold: normal capacity", client(**LOW), R10, MCL, live("5.00", calls_in_use=9),
     Accept(3000, D("5.00"), D("5.00"))),
    ("normal capacity reached", client(**LOW), R10, MCL, live("50", calls_in_use=10), CAPACITY),
    ("credit counts toward the threshold", client(credit=D("2"), **LOW), R10, MCL,
     live("4.00", calls_in_use=1), Accept(3600, D("6.00"), D("6.00"))),
    ("holds of others do not count toward the threshold", client(**LOW), R10, MCL,
     live("6.00", "3.00", calls_in_use=1), Accept(1800, D("3.00"), D("3.00"))),
    ("low balance, capacity none", client(low_balance_threshold=D("5"), low_balance_capacity=0),
     R10, MCL, live("4.00"), CAPACITY),
    ("postpaid at capacity", client(postpaid=True, capacity=1), R10, MCL,
     live("0", calls_in_use=1), CAPACITY),
    # prepaid, available <= 0
    ("zero balance", client(), R10, MCL, live("0"), ZERO_BALANCE),
    ("negative balance, no credit", client(), R10, MCL, live("-3.50"), ZERO_BALANCE),
    ("credit used up exactly", client(credit=D("10")), R10, MCL, live("-10"), CREDIT_LIMIT),
    ("beyond the credit", client(credit=D("10")), R10, MCL, live("-12.5"), CREDIT_LIMIT),
    ("negative credit", client(credit=D("-5")), R10, MCL, live("5"), CREDIT_LIMIT),
    ("negative credit, balance above it", client(credit=D("-5")), R10, MCL, live("6.00"),
     Accept(600, D("1.00"), D("1.00"))),
    ("credit available", client(credit=D("10")), R10, MCL, live("-9.00"),
     Accept(600, D("1.00"), D("1.00"))),
    ("zero balance with a free rate", client(), FREE, MCL, live("0"), ZERO_BALANCE),
    # prepaid, funds < cost(g1)
    ("funds below cost(g1)", client(), R10, MCL, live("0.09"), INSUFFICIENT),
    ("funds just below cost(g1)", client(), R10, MCL, live("0.099999"), INSUFFICIENT),
    ("funds equal to cost(g1)", client(), R10, MCL, live("0.10"), Accept(60, D("0.10"), D("0.10"))),
    ("others hold everything", client(), R10, MCL, live("1.00", "1.00"), INSUFFICIENT),
    ("others hold more than everything", client(), R10, MCL, live("1.00", "1.50"), INSUFFICIENT),
    ("others leave too little", client(), R10, MCL, live("1.00", "0.95"), INSUFFICIENT),
    ("others leave one minute", client(), R10, MCL, live("1.00", "0.90"),
     Accept(60, D("0.10"), D("0.10"))),
    ("setup fee raises cost(g1)", client(), rate("0.10", "0.50"), MCL, live("0.59"), INSUFFICIENT),
    ("credit holds everything", client(credit=D("1")), R10, MCL, live("0", "1"), INSUFFICIENT),
    ("funds below cost(g1), max_call_length within grace", client(),
     replace(R10, grace_volume=30), 20, live("0.05"), INSUFFICIENT),
    ("no accept carries a grant below 1 second", client(), R10, 0, live("1.00"), INSUFFICIENT),
    # accept: the grant, hold = cost(grant), funds
    ("contract: 1.00 at 0.10/min", client(), R10, MCL, live("1.00"),
     Accept(600, D("1.00"), D("1.00"))),
    ("grant below a full minute of funds", client(), R10, MCL, live("1.05"),
     Accept(600, D("1.00"), D("1.05"))),
    ("contract: 8.00 at 0.20/min capped", client(), R20, 1800, live("8.00"),
     Accept(1800, D("6.00"), D("8.00"))),
    ("contract: 2.00 at 0.20/min", client(), R20, 1800, live("2.00"),
     Accept(600, D("2.00"), D("2.00"))),
    ("contract: 3.60 at 0.20/min", client(), R20, 1800, live("3.60"),
     Accept(1080, D("3.60"), D("3.60"))),
    ("funds = balance + credit - others", client(credit=D("0.50")), R10, MCL,
     live("1.80", "0.30"), Accept(1200, D("2.00"), D("2.00"))),
    ("a free rate grants max_call_length", client(), FREE, 5400, live("0.01"),
     Accept(5400, D("0"), D("0.01"))),
    ("max_call_length below min_volume", client(), rate("0.10", min_volume=120), 90,
     live("0.20"), Accept(90, D("0.20"), D("0.20"))),
    # postpaid: max_call_length, no hold, no funds checked
    ("postpaid", client(postpaid=True), R10, MCL, live("0"), Accept(MCL, D("0"), None)),
    ("postpaid, negative balance", client(postpaid=True), R10, 1800, live("-100"),
     Accept(1800, D("0"), None)),
    ("postpaid, others hold more", client(postpaid=True), R10, MCL, live("0.01", "50"),
     Accept(MCL, D("0"), None)),
    ("postpaid, negative credit", client(postpaid=True, credit=D("-5")), R10, MCL, live("0"),
     Accept(MCL, D("0"), None)),
    # order: capacity before the balance checks
    ("capacity before zero balance", client(capacity=1), R10, MCL, live("0", calls_in_use=1),
     CAPACITY),
    ("capacity before credit limit", client(capacity=1, credit=D("5")), R10, MCL,
     live("-5", calls_in_use=1), CAPACITY),
    ("capacity before insufficient funds", client(capacity=1), R10, MCL,
     live("0.05", calls_in_use=1), CAPACITY),
    # order: zero balance before insufficient funds
    ("zero balance before insufficient funds", client(), R10, MCL, live("0", "0.50"),
     ZERO_BALANCE),
    # authentication only (rate None): only the available <= 0 checks
    ("auth only, zero balance", client(), None, MCL, live("0"), ZERO_BALANCE),
    ("auth only, negative balance", client(), None, MCL, live("-1"), ZERO_BALANCE),
    ("auth only, credit used up", client(credit=D("5")), None, MCL, live("-5"), CREDIT_LIMIT),
    ("auth only, negative credit", client(credit=D("-1")), None, MCL, live("1"), CREDIT_LIMIT),
    ("auth only, accept", client(), None, MCL, live("1.00", "0.40"),
     Accept(None, D("0"), D("0.60"))),
    ("auth only, no funds check", client(), None, MCL, live("1.00", "5.00"),
     Accept(None, D("0"), D("-4.00"))),
    ("auth only, no capacity check", client(capacity=0), None, MCL, live("1.00", calls_in_use=3),
     Accept(None, D("0"), D("1.00"))),
    ("auth only, postpaid", client(postpaid=True), None, MCL, live("-100"),
     Accept(None, D("0"), None)),
    ("auth only, postpaid at capacity", client(postpaid=True, capacity=1), None, MCL,
     live("0", calls_in_use=1), Accept(None, D("0"), None)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("client_", "rate_", "mcl", "snapshot", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in DECIDE],
)
def test_decide(
    client_: Client, rate_: Rate | None, mcl: int, snapshot: LiveSnapshot, expected: Decision
) -> None:
    decision = decide(GrantTerms(client_, rate_, mcl), snapshot)
    assert decision == expected
    if isinstance(decision, Accept):
        if rate_ is not None and not client_.postpaid:
            assert decision.grant_seconds is not None
            assert decision.grant_seconds >= 1
            assert decision.funds is not None
            assert decision.hold <= decision.funds
        if rate_ is None or client_.postpaid:
            assert decision.hold == 0


@pytest.mark.parametrize(
    ("balance", "held", "expected"),
    [("0.10", "0", 60), ("0.60", "0", 360), ("0.60", "0.10", 300), ("100", "0", MCL)],
)
def test_accept_hold_is_the_cost_of_the_grant(balance: str, held: str, expected: int) -> None:
    decision = decide(GrantTerms(client(), R10, MCL), live(balance, held))
    assert isinstance(decision, Accept)
    assert decision.grant_seconds == expected
    assert decision.hold == D("0.10") * expected / 60
    assert decision.funds == D(balance) - D(held)


# --- passwords ------------------------------------------------------------------------------

SALT = bytes(range(16))


def test_hash_password_format() -> None:
    stored = hash_password("s3cret", SALT)
    digest = hashlib.sha256(SALT + b"s3cret").hexdigest()
    assert stored == f"sha256${SALT.hex()}${digest}"


def test_hash_password_salts_randomly() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    for stored in (first, second):
        scheme, salt_hex, digest = stored.split("$")
        assert (scheme, len(salt_hex), len(digest)) == ("sha256", 32, 64)
        assert check_password(stored, b"s3cret")


@pytest.mark.parametrize(
    ("stored", "candidate", "expected"),
    [
        (hash_password("s3cret", SALT), b"s3cret", True),
        (hash_password("s3cret", SALT), b"S3cret", False),
        (hash_password("s3cret", SALT), b"s3cret ", False),
        (hash_password("s3cret", SALT), b"", False),
        (hash_password("", SALT), b"", True),
        (hash_password("pässwörd", SALT), "pässwörd".encode(), True),
        (hash_password("pässwörd", SALT), "pässwörd".encode("latin-1"), False),
        ("s3cret", b"s3cret", False),  # not a stored hash
        ("", b"", False),
        ("sha256$zz$00", b"s3cret", False),  # salt is not hex
        ("md5$" + SALT.hex() + "$" + hashlib.sha256(SALT + b"x").hexdigest(), b"x", False),
        ("sha256$" + SALT.hex() + "$" + hashlib.sha256(b"x").hexdigest(), b"x", False),  # no salt
    ],
)
def test_check_password(stored: str, candidate: bytes, expected: bool) -> None:
    assert check_password(stored, candidate) is expected
