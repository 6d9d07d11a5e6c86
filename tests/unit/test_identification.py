"""Who is calling: login, then ip, then ani, with tech prefixes (CONTRACT §3)."""

from __future__ import annotations

import pytest

from billing_core.domain.identification import AccountIndex, CallerFacts, canonical_ip
from billing_core.domain.model import Account, Ident

_next_id = iter(range(1, 10_000))


def account(
    name: str,
    ident: Ident,
    value: str,
    *,
    tech_prefix: str | None = None,
    enabled: bool = True,
    client_id: int = 1,
) -> Account:
    return Account(
        id=next(_next_id),
        client_id=client_id,
        name=name,
        ident=ident,
        value=value,
        tech_prefix=tech_prefix,
        password_hash=None,
        enabled=enabled,
    )


ACCOUNTS = [
    account("login-alice", "login", "alice"),
    account("login-10.9.9.9", "login", "10.9.9.9"),  # a username that looks like an IP
    account("login-carol-disabled", "login", "carol", enabled=False),
    account("ip-carol", "ip", "10.7.7.7"),
    account("ip-10.1.1.1", "ip", "10.1.1.1"),
    account("ip-10.2.2.2", "ip", "10.2.2.2"),
    account("ip-10.3.3.3", "ip", "10.3.3.3"),
    account("ip-mapped", "ip", "::ffff:10.4.4.4"),  # stored mapped, matched as IPv4
    account("ip-v6", "ip", "2001:DB8::1"),
    account("ani-1555", "ani", "+15551234567"),
    account("ani-uri", "ani", "sip:+4420771234@gw.example.com"),
    account("ani-disabled", "ani", "15550000000", enabled=False),
    # tech prefixes on one ident value
    account("tp-none", "ip", "10.5.5.5"),
    account("tp-99", "ip", "10.5.5.5", tech_prefix="99"),
    account("tp-991", "ip", "10.5.5.5", tech_prefix="991"),
    account("tp-hash", "ip", "10.5.5.5", tech_prefix="123#"),
    # prefixes only: no catch-all account
    account("only-77", "ip", "10.6.6.6", tech_prefix="77"),
    account("only-7788-disabled", "ip", "10.6.6.6", tech_prefix="7788", enabled=False),
    account("only-login-prefixed", "login", "dave", tech_prefix="55"),
]
INDEX = AccountIndex(ACCOUNTS)

CALLED = "15559876543"


@pytest.mark.parametrize(
    ("facts", "expected_account", "expected_number"),
    [
        # the order: login, then ip, then ani
        (
            CallerFacts("alice", "10.1.1.1", "10.2.2.2", "+15551234567", CALLED),
            "login-alice",
            CALLED,
        ),
        (
            CallerFacts("bob", "10.1.1.1", "10.2.2.2", "+15551234567", CALLED),
            "ip-10.1.1.1",
            CALLED,
        ),
        (CallerFacts("bob", None, None, "+15551234567", CALLED), "ani-1555", CALLED),
        (CallerFacts(None, "10.9.8.7", None, "+15551234567", CALLED), "ani-1555", CALLED),
        (CallerFacts(None, None, None, "15550001111", CALLED), None, None),
        (CallerFacts(), None, None),
        # a login that is also an IP literal: login first
        (CallerFacts("10.9.9.9", None, None, None, CALLED), "login-10.9.9.9", CALLED),
        # the ip from User-Name when it is an IP literal ...
        (CallerFacts("10.1.1.1", "10.2.2.2", "10.3.3.3", None, CALLED), "ip-10.1.1.1", CALLED),
        # ... and it is the caller's IP even when no account has it
        (CallerFacts("10.8.8.8", "10.2.2.2", None, None, CALLED), None, None),
        # else Framed-IP-Address
        (CallerFacts("bob", "10.2.2.2", "10.3.3.3", None, CALLED), "ip-10.2.2.2", CALLED),
        (CallerFacts(None, "10.2.2.2", "10.3.3.3", None, CALLED), "ip-10.2.2.2", CALLED),
        # else h323-remote-address
        (CallerFacts("bob", None, "10.3.3.3", None, CALLED), "ip-10.3.3.3", CALLED),
        (CallerFacts(None, "not-an-ip", "10.3.3.3", None, CALLED), "ip-10.3.3.3", CALLED),
        # IPv4-mapped IPv6 equals IPv4, both ways; IPv6 compared canonically
        (CallerFacts("::ffff:10.1.1.1", None, None, None, CALLED), "ip-10.1.1.1", CALLED),
        (CallerFacts(None, "::ffff:10.2.2.2", None, None, CALLED), "ip-10.2.2.2", CALLED),
        (CallerFacts(None, None, "::FFFF:10.3.3.3", None, CALLED), "ip-10.3.3.3", CALLED),
        (CallerFacts(None, "10.4.4.4", None, None, CALLED), "ip-mapped", CALLED),
        (CallerFacts(None, "2001:db8:0:0::1", None, None, CALLED), "ip-v6", CALLED),
        (CallerFacts(None, " 10.1.1.1 ", None, None, CALLED), "ip-10.1.1.1", CALLED),
        # the called number comes back normalized
        (
            CallerFacts("alice", called="sip:+15559876543@gw.example.com;user=phone"),
            "login-alice",
            CALLED,
        ),
        (CallerFacts("alice", called="tel:+15559876543"), "login-alice", CALLED),
        # authentication only: no called number
        (CallerFacts("alice"), "login-alice", None),
        (CallerFacts(None, "10.1.1.1"), "ip-10.1.1.1", None),
    ],
)
def test_identify_order_and_ip_sources(
    facts: CallerFacts, expected_account: str | None, expected_number: str | None
) -> None:
    found = INDEX.identify(facts)
    assert (found.account.name if found else None) == expected_account
    assert (found.number if found else None) == expected_number


def test_login_is_an_exact_match() -> None:
    assert INDEX.identify(CallerFacts("Alice", called=CALLED)) is None
    assert INDEX.identify(CallerFacts("alice ", called=CALLED)) is None


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (CallerFacts(None, None, "10.3.3.3", None, CALLED), None),
        (CallerFacts("bob", None, "10.3.3.3", "+15551234567", CALLED), "ani-1555"),
        (CallerFacts(None, "10.2.2.2", "10.3.3.3", None, CALLED), "ip-10.2.2.2"),
        (CallerFacts("10.1.1.1", None, "10.3.3.3", None, CALLED), "ip-10.1.1.1"),
    ],
)
def test_remote_address_ignored_when_not_allowed(facts: CallerFacts, expected: str | None) -> None:
    found = INDEX.identify(facts, allow_remote_address=False)
    assert (found.account.name if found else None) == expected


@pytest.mark.parametrize(
    ("called", "expected_account", "expected_number"),
    [
        ("99123456", "tp-991", "23456"),  # the longest matching prefix wins and is stripped
        ("9912345", "tp-991", "2345"),
        ("99555", "tp-99", "555"),
        ("9", "tp-none", "9"),  # a prefix longer than the number cannot match
        ("12345", "tp-none", "12345"),  # no prefix matches: the account without one
        ("123#15551234567", "tp-hash", "15551234567"),  # a non-digit prefix
        ("sip:+99155@gw.example.com", "tp-991", "55"),  # matched on the normalized number
        ("tel:+9955", "tp-99", "55"),
        ("991", "tp-991", ""),
        ("", "tp-none", ""),
        (None, "tp-none", None),  # authentication only: only the account without a prefix
    ],
)
def test_tech_prefixes(
    called: str | None, expected_account: str, expected_number: str | None
) -> None:
    found = INDEX.identify(CallerFacts(framed_ip="10.5.5.5", called=called))
    assert found is not None
    assert found.account.name == expected_account
    assert found.number == expected_number


@pytest.mark.parametrize(
    ("called", "expected_account", "expected_number"),
    [
        ("7712345", "only-77", "12345"),
        ("778812345", "only-77", "8812345"),  # the longer prefix's account is disabled
        ("12345", None, None),  # no prefix matches and no account without one
        (None, None, None),  # authentication only: a tech-prefixed account cannot match
        ("", None, None),
    ],
)
def test_tech_prefix_only_accounts(
    called: str | None, expected_account: str | None, expected_number: str | None
) -> None:
    found = INDEX.identify(CallerFacts(framed_ip="10.6.6.6", called=called))
    assert (found.account.name if found else None) == expected_account
    assert (found.number if found else None) == expected_number


def test_tech_prefixed_login_needs_a_matching_called_number() -> None:
    found = INDEX.identify(CallerFacts("dave", called="5512345"))
    assert found is not None
    assert (found.account.name, found.number) == ("only-login-prefixed", "12345")
    assert INDEX.identify(CallerFacts("dave", called="6612345")) is None
    assert INDEX.identify(CallerFacts("dave")) is None  # authentication only


def test_tech_prefix_order_does_not_depend_on_insertion_order() -> None:
    index = AccountIndex(
        [
            account("short", "ani", "15551112222", tech_prefix="1"),
            account("none", "ani", "15551112222"),
            account("long", "ani", "15551112222", tech_prefix="123"),
        ]
    )
    hit = index.identify(CallerFacts(calling="15551112222", called="12399"))
    assert hit is not None
    assert (hit.account.name, hit.number) == ("long", "99")
    hit = index.identify(CallerFacts(calling="15551112222", called="1999"))
    assert hit is not None
    assert (hit.account.name, hit.number) == ("short", "999")
    hit = index.identify(CallerFacts(calling="15551112222", called="999"))
    assert hit is not None
    assert (hit.account.name, hit.number) == ("none", "999")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # disabled accounts never match; identification goes on to the next ident
        (CallerFacts("carol", called=CALLED), None),
        (CallerFacts("carol", "10.7.7.7", called=CALLED), "ip-carol"),
        (CallerFacts(calling="15550000000", called=CALLED), None),
        (CallerFacts(calling="+15550000000", called=CALLED), None),
    ],
)
def test_disabled_accounts_never_match(facts: CallerFacts, expected: str | None) -> None:
    found = INDEX.identify(facts)
    assert (found.account.name if found else None) == expected


def test_an_index_of_only_disabled_accounts_matches_nothing() -> None:
    index = AccountIndex([account("off", "login", "eve", enabled=False)])
    assert index.identify(CallerFacts("eve", called=CALLED)) is None
    assert index.identify(CallerFacts("eve")) is None


@pytest.mark.parametrize(
    ("calling", "expected"),
    [
        ("15551234567", "ani-1555"),
        ("+15551234567", "ani-1555"),
        ("sip:+15551234567@gw.example.com", "ani-1555"),
        ("sip:15551234567@gw.example.com;user=phone", "ani-1555"),
        ("tel:+15551234567", "ani-1555"),
        ("4420771234", "ani-uri"),  # the account's own value is normalized too
        ("+4420771234", "ani-uri"),
        ("sips:+4420771234@other.example.com", "ani-uri"),
        ("1555123456", None),  # no partial match
        ("115551234567", None),
        ("", None),
    ],
)
def test_ani_normalization(calling: str, expected: str | None) -> None:
    found = INDEX.identify(CallerFacts(calling=calling, called=CALLED))
    assert (found.account.name if found else None) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.1.1", "10.1.1.1"),
        (" 10.1.1.1", "10.1.1.1"),
        ("::ffff:10.1.1.1", "10.1.1.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::1", "::1"),
        ("10.1.1", None),
        ("10.1.1.256", None),
        ("alice", None),
        ("", None),
    ],
)
def test_canonical_ip(text: str, expected: str | None) -> None:
    assert canonical_ip(text) == expected
