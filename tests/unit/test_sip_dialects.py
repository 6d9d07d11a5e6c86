"""The SIP dialects at the edge: per-NAS keys and their defaults, the dialect dictionaries,
the reading of Kamailio's attributes, the grant in SIP-AVP, and dropped packets logged."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from pyrad import packet as rp

from billing_core.config import ConfigError, NasConfig, Secret, parse_config, render_effective
from radiusd import attributes
from radiusd.codec import DIALECT_DICTIONARIES, Codec, load_dictionary
from radiusd.metrics import Metrics
from radiusd.transport import NasTable, RadiusServer

SECRET = b"kamailio-secret"
KAMAILIO = load_dictionary(dialect="kamailio")
KAMAILIO_CODEC = Codec(KAMAILIO)


def nas_config(extra: str) -> NasConfig:
    text = f'[[nas]]\naddress = "127.0.0.1"\nsecret = "s"\n{extra}\n'
    return parse_config(text, "<test>", {}).nas[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", ("cisco", "retry", False)),
        ('dialect = "sippy"', ("sippy", "retry", False)),
        ('dialect = "kamailio"', ("kamailio", "final", True)),
        ('dialect = "opensips"', ("opensips", "final", True)),
        ('dialect = "kamailio"\nzero_duration_stop = "retry"', ("kamailio", "retry", True)),
        ('dialect = "kamailio"\nstrip_realm = false', ("kamailio", "final", False)),
        ('zero_duration_stop = "final"\nstrip_realm = true', ("cisco", "final", True)),
    ],
)
def test_a_dialect_gives_the_defaults_of_the_keys_and_each_can_be_set(
    extra: str, expected: tuple[str, str, bool]
) -> None:
    nas = nas_config(extra)
    assert (nas.dialect, nas.zero_duration_stop, nas.strip_realm) == expected


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('dialect = "asterisk"', "nas[0].dialect: expected one of cisco | kamailio"),
        ('zero_duration_stop = "never"', "nas[0].zero_duration_stop: expected one of retry"),
        ('strip_realm = "yes"', "nas[0].strip_realm:"),
    ],
)
def test_bad_dialect_keys_are_refused_naming_the_key(extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        nas_config(extra)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_effective_config_shows_the_keys_and_parses_back() -> None:
    text = '[[nas]]\naddress = "127.0.0.1"\nsecret = "s"\ndialect = "kamailio"\n'
    config = parse_config(text, "<test>", {})
    rendered = render_effective(config)
    assert 'dialect = "kamailio"' in rendered and 'zero_duration_stop = "final"' in rendered
    again = parse_config(rendered.replace('secret = "***"', 'secret = "s"'), "<again>", {})
    assert again.nas == config.nas


@pytest.mark.parametrize("dialect", sorted(DIALECT_DICTIONARIES))
def test_every_dialect_dictionary_loads_and_knows_the_call_identifiers(dialect: str) -> None:
    dictionary = load_dictionary(dialect=dialect)
    for name in ("User-Name", "Acct-Session-Id", "Cisco-AVPair", "h323-conf-id"):
        assert name in dictionary.attributes


def test_the_sip_attributes_are_read_by_name_where_the_rfc_dictionaries_have_others() -> None:
    """101 is Error-Cause in RFC 5176 (the cisco dictionary); for kamailio it is Sip-Method."""
    cisco = load_dictionary()
    assert cisco.attributes["Error-Cause"].code == 101
    assert "Error-Cause" not in KAMAILIO.attributes
    for name, code in (
        ("Sip-Method", 101),
        ("Sip-Response-Code", 102),
        ("Sip-To-Tag", 104),
        ("Sip-From-Tag", 105),
        ("Sip-Translated-Request-URI", 107),
        ("Sip-URI-User", 208),
        ("SIP-AVP", 225),
    ):
        assert KAMAILIO.attributes[name].code == code


def kamailio_stop(**extra: Any) -> bytes:
    """An accounting Stop as Kamailio's acc_radius sends it (dialects.json, kamailio)."""
    pkt = rp.AcctPacket(dict=KAMAILIO, secret=SECRET, id=9)
    for name, value in (
        ("Acct-Status-Type", "Stop"),
        ("Service-Type", "Sip-Session"),
        ("Sip-Response-Code", 200),
        ("Sip-Method", "Bye"),
        ("Event-Timestamp", 1795615586),
        # the callee hung up: From and To (and their tags) swapped against the INVITE's
        ("Sip-From-Tag", "314159"),
        ("Sip-To-Tag", "1928301774"),
        ("Acct-Session-Id", "a84b4c76e66710@192.0.2.4"),
        ("User-Name", "4420771234@sip.example.net"),
        ("Calling-Station-Id", "sip:4420771234@sip.example.net"),
        ("Called-Station-Id", "sip:4420794600123@sip.example.net"),
        ("NAS-IP-Address", "198.51.100.60"),
        *extra.items(),
    ):
        pkt.AddAttribute(name, value)
    return bytes(pkt.RequestPacket())


def test_a_kamailio_stop_becomes_an_event_with_its_dialog_and_the_caller_without_realm() -> None:
    request = KAMAILIO_CODEC.decode(kamailio_stop(), SECRET)
    arrived = datetime(2026, 12, 4, tzinfo=UTC)
    event = attributes.accounting_event(
        request, "kam|198.51.100.60", "originate", arrived, realm=True, zero_final=True
    )
    assert event is not None
    assert event.status == 2 and event.session_time is None and event.zero_final
    assert event.tags == "1928301774;314159"  # the pair, whichever side sent the BYE
    assert event.caller.user_name == "4420771234"
    stored = event.attributes
    assert stored["Sip-Method"] == ["Bye"] and stored["Sip-Response-Code"] == ["200"]
    assert stored["User-Name"] == ["4420771234@sip.example.net"]  # stored as received
    plain = attributes.accounting_event(request, "k", "originate", arrived)
    assert plain is not None and plain.caller.user_name == "4420771234@sip.example.net"


def test_the_dialog_tags_are_an_unordered_pair_and_absent_without_tags() -> None:
    one = KAMAILIO_CODEC.decode(kamailio_stop(), SECRET)
    cisco = Codec(load_dictionary())
    pkt = rp.AcctPacket(dict=cisco.dictionary, secret=SECRET, id=3)
    pkt.AddAttribute("Acct-Status-Type", "Stop")
    pkt.AddAttribute("Acct-Session-Id", "s")
    assert attributes.dialog_tags(one) == "1928301774;314159"
    assert attributes.dialog_tags(cisco.decode(bytes(pkt.RequestPacket()), SECRET)) == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice@example.net", "alice"),
        ("alice", "alice"),
        ("a@b@example.net", "a@b"),
        ("@example.net", "@example.net"),
        (None, None),
    ],
)
def test_strip_realm(name: str | None, expected: str | None) -> None:
    assert attributes.strip_realm(name) == expected


def test_the_digest_user_name_identifies_when_there_is_no_user_name() -> None:
    pkt = rp.AuthPacket(dict=KAMAILIO, secret=SECRET, id=4)
    # draft-sterman: Digest-Attributes sub-attribute 10 (Digest-User-Name), 1 (Digest-Realm)
    pkt.AddAttribute("Digest-Attributes", b"\x01\x11sip.example.net")
    pkt.AddAttribute("Digest-Attributes", b"\x0a\x13alice@example.net")
    pkt.AddAttribute("Called-Station-Id", "4420794600123")
    request = KAMAILIO_CODEC.decode(bytes(pkt.RequestPacket()), SECRET)
    assert attributes.caller_facts(request, realm=True).user_name == "alice"
    assert attributes.caller_facts(request).user_name == "alice@example.net"


class _Sent:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False


def test_a_value_that_does_not_fit_is_counted_and_the_packet_still_handled() -> None:
    """rad_time_mode = 1: Event-Timestamp as "1445590624.377372" (its dictionary says date)."""
    kamailio = NasConfig(
        address=ipaddress.ip_network("127.0.0.1"),
        secret=Secret(SECRET.decode()),
        name="kam",
        dialect="kamailio",
    )
    handled: list[Any] = []

    async def handle(request: Any, nas: NasConfig, source: str, acct: bool) -> bytes | None:
        handled.append(request)
        return b"reply"

    metrics = Metrics()
    cisco = Codec(load_dictionary())
    server = RadiusServer(
        cisco,
        NasTable([kamailio]),
        handle,
        metrics,
        max_in_flight=10,
        duplicate_ttl=0,
        duplicate_size=10,
        codecs={"kamailio": KAMAILIO_CODEC},
    )
    raw = kamailio_stop()
    stamp = raw.index(bytes((55, 6)) + (1795615586).to_bytes(4, "big"))
    text = b"1445590624.377372"
    body = raw[20:stamp] + bytes((55, len(text) + 2)) + text + raw[stamp + 6 :]
    resigned = _resign(raw[:20], body)

    async def scenario() -> None:
        server.receive(resigned, ("127.0.0.1", 5060), _Sent(), True)  # type: ignore[arg-type]
        await asyncio.gather(*server.tasks)

    asyncio.run(scenario())
    assert len(handled) == 1
    assert handled[0].attributes["Event-Timestamp"] == [text]
    assert handled[0].attributes["Sip-Method"] == ["Bye"]  # by the kamailio dictionary
    count = metrics.registry.get_sample_value(
        "radiusd_attribute_errors_total", {"nas": "kam", "attribute": "Event-Timestamp"}
    )
    assert count == 1.0


def _resign(header: bytes, body: bytes) -> bytes:
    """The Accounting-Request with a new body, its Request Authenticator computed again."""
    head = header[:2] + (20 + len(body)).to_bytes(2, "big")
    digest = hashlib.md5(head + bytes(16) + body + SECRET).digest()  # noqa: S324 - RFC 2866
    return head + digest + body


def test_every_dropped_packet_is_logged_once_a_second_per_nas_and_reason() -> None:
    metrics = Metrics()
    server = RadiusServer(
        Codec(load_dictionary()),
        NasTable([]),
        lambda *a: None,  # type: ignore[arg-type]
        metrics,
        max_in_flight=10,
        duplicate_ttl=0,
        duplicate_size=10,
    )
    with structlog.testing.capture_logs() as logs:
        server.log = structlog.get_logger("radiusd.transport")
        for _ in range(5):
            server.drop("unknown_nas", "acct", source="192.0.2.9")
        server.drop("bad_authenticator", "acct", "gw-1", "192.0.2.1")
        server.drop("bad_authenticator", "acct", "gw-2", "192.0.2.2")
    lines = [(e["nas"], e["reason"], e.get("source")) for e in logs if e["event"] == "dropped"]
    assert lines == [
        ("unknown", "unknown_nas", "192.0.2.9"),
        ("gw-1", "bad_authenticator", "192.0.2.1"),
        ("gw-2", "bad_authenticator", "192.0.2.2"),
    ]
    assert json.dumps(logs)  # plain values only
    dropped = metrics.registry.get_sample_value("radiusd_dropped_total", {"reason": "unknown_nas"})
    assert dropped == 5.0
