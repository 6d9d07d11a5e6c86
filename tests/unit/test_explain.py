"""The pure parts of explain and trace: the steps of billing_core.explain on an in-memory
catalog, the [[nas]] match of billing_core.domain.nas, and the notify datagrams' settings."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing_core.domain.identification import AccountIndex, CallerFacts
from billing_core.domain.model import Account, Client, RejectReason, hash_password
from billing_core.domain.nas import IPNetwork, longest_first, match_source, nas_key
from billing_core.domain.policy import Accept, Decision
from billing_core.domain.rating import Rate, RateTableIndex
from billing_core.domain.replies import REJECT_REPLIES
from billing_core.explain import Explanation, LivePeek, explain
from billing_core.ports import Catalog, HoldRequest, LiveView
from billing_core.services.authorization import AuthorizationService, AuthorizeCall
from radiusd.sdnotify import Notifier

D = Decimal
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CLIENT = Client(1, "Acme", "active", "USD", None, False, D("0"), 1, 2, None, None, "disconnect")
RATE = Rate("1", "USA", D("0.10"), D("0"), 60, 60, 0, datetime(2026, 1, 1, tzinfo=UTC))


def account(ident: Any, value: str, **changes: Any) -> Account:
    base = Account(7, 1, f"{ident}-acct", ident, value, None, None)
    return replace(base, **changes)


def service(*accounts: Account, client: Client = CLIENT) -> AuthorizationService:
    catalog = Catalog(
        version=1,
        clients={client.id: client},
        accounts=AccountIndex(accounts),
        rate_tables={1: RateTableIndex([RATE])},
        max_call_length=None,
    )

    class NoLive:  # explain never holds: any use of the live state is a failure
        def authorize(self, request: HoldRequest) -> Decision:
            raise AssertionError("explain must not hold")

        def view(self, client_ids: Any, now: datetime) -> dict[int, LiveView]:
            raise AssertionError("explain reads through its peek")

    return AuthorizationService(
        lambda: catalog,
        NoLive(),  # type: ignore[arg-type]
        max_call_length=3600,
        auth_hold_seconds=180,
    )


@dataclass
class Peeks:
    balance: str = "10"
    held: str = "0"
    calls: int = 0
    asked: int = 0

    def __call__(self, client: Client, now: datetime) -> LivePeek:
        self.asked += 1
        return LivePeek(D(self.balance), D(self.held), self.calls, self.calls, "test")


def run(
    svc: AuthorizationService,
    peek: Peeks,
    *,
    user: str | None = None,
    calling: str | None = None,
    called: str | None = "15550001111",
    password: bytes | None = None,
    verify: bool = True,
) -> Explanation:
    request = AuthorizeCall(
        nas_key="gw|10.0.0.1",
        caller=CallerFacts(user_name=user, calling=calling, called=called),
        password=password,
        chap=None,
        identifiers=(),
        arrived=NOW,
    )
    explanation, decision = explain(svc, request, peek, verify_password=verify)
    if isinstance(decision, Accept):
        assert explanation.result == "accept"
    else:
        assert explanation.code == REJECT_REPLIES[decision.reason][0]
    return explanation


def names(explanation: Explanation) -> list[str]:
    return [step["step"] for step in explanation.steps]


LIVE_STEPS = ["account", "status", "number", "rate", "balance", "holds", "capacity", "decision"]


@pytest.mark.parametrize(
    ("peek", "code", "reason"),
    [
        (Peeks(), 0, None),
        (Peeks(calls=2), 3, "capacity"),  # capacity 2
        (Peeks(balance="0"), 4, "zero_balance"),
        (Peeks(balance="0.05"), 12, "insufficient_funds"),
        (Peeks(balance="1", held="0.95"), 12, "insufficient_funds"),
    ],
)
def test_live_stage_decisions(peek: Peeks, code: int, reason: str | None) -> None:
    out = run(service(account("ani", "15557770000")), peek, calling="15557770000")
    assert (out.code, out.reason) == (code, reason)
    assert names(out) == LIVE_STEPS and peek.asked == 1
    account_step = out.steps[0]
    assert (account_step["matched_by"], account_step["client"]) == ("Calling-Station-Id", "Acme")


def test_accept_grant_and_what_it_would_hold() -> None:
    out = run(service(account("ani", "1")), Peeks(balance="2.00", held="0.50"), calling="1")
    assert (out.result, out.grant_seconds) == ("accept", 900)  # 1.50 at 0.10/min
    decision = out.steps[-1]
    assert (decision["hold"], decision["funds"]) == ("1.50", "1.50")
    assert "funds 1.50" in out.steps[5]["summary"]


def test_rejects_before_the_live_state_do_not_read_it() -> None:
    peek = Peeks()
    unknown = run(service(account("ani", "1")), peek, calling="2")
    assert (unknown.code, names(unknown)) == (1, ["account", "decision"])
    no_rate = run(service(account("ani", "1")), peek, calling="1", called="4420000")
    assert (no_rate.code, names(no_rate)) == (
        9,
        ["account", "status", "number", "rate", "decision"],
    )
    stopped = run(
        service(account("ani", "1"), client=replace(CLIENT, status="stop")), peek, calling="1"
    )
    assert (stopped.code, names(stopped)) == (7, ["account", "status", "decision"])
    assert peek.asked == 0


@pytest.mark.parametrize(
    ("password", "verify", "check", "code"),
    [
        (None, True, "missing", 2),
        (b"wrong", True, "wrong", 2),
        (b"s3cret", True, "right", 0),
        (None, False, "skipped", 0),
    ],
)
def test_password_step(password: bytes | None, verify: bool, check: str, code: int) -> None:
    login = account("login", "acme", password_hash=hash_password("s3cret"))
    out = run(service(login), Peeks(), user="acme", password=password, verify=verify)
    assert (out.steps[1]["check"], out.code) == (check, code)


def test_authentication_only_has_no_rate_and_no_capacity() -> None:
    out = run(service(account("ani", "1")), Peeks(), calling="1", called=None)
    assert names(out) == ["account", "status", "number", "balance", "holds", "decision"]
    assert out.grant_seconds is None and "authentication only" in out.steps[-1]["summary"]


def test_every_reject_reason_has_a_reply() -> None:
    assert set(REJECT_REPLIES) == set(RejectReason)


@dataclass(frozen=True)
class Entry:
    address: IPNetwork
    name: str


ENTRIES = longest_first(
    Entry(ipaddress.ip_network(a), n)
    for a, n in (("10.0.0.0/8", "wide"), ("10.1.0.0/16", "narrow"), ("2001:db8::/32", "v6"))
)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("10.1.2.3", "narrow"),
        ("10.2.0.1", "wide"),
        ("::ffff:10.1.2.3", "narrow"),
        ("2001:db8::1%eth0", "v6"),
        ("192.0.2.1", None),
        ("not an address", None),
    ],
)
def test_nas_match(source: str, name: str | None) -> None:
    found = match_source(ENTRIES, source)
    assert (found.name if found else None) == name


def test_nas_key_takes_the_first_identity_present() -> None:
    assert nas_key("gw", [None, "", "sw-7"], "10.0.0.1") == "gw|sw-7"
    assert nas_key("gw", ["192.0.2.9", "sw-7"], "10.0.0.1") == "gw|192.0.2.9"
    assert nas_key("gw", [], "10.0.0.1") == "gw|10.0.0.1"


def test_notifier_settings_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000"}
    notifier = Notifier.from_environ(env)
    assert (notifier.address, notifier.watchdog_seconds) == ("@sd", 30.0)
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}).watchdog_seconds is None
    taken = dict(env)
    assert Notifier.from_environ(taken, take=True).address == "@sd"
    assert taken == {}  # the workers inherit nothing to notify with
    assert not Notifier().send("READY=1")
