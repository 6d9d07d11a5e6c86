"""radiusd.codec: requests built by pyrad as a switch would, decoded by Codec; replies
checked byte by byte and by pyrad's client-side VerifyReply; malformed datagrams refused
with the right reason label."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from pyrad import packet as rp

from radiusd.codec import (
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCESS_REQUEST,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    CISCO_PREFIXED,
    MAX_PACKET,
    REPLY_ATTRIBUTES,
    REQUEST_ATTRIBUTES,
    STATUS_SERVER,
    Codec,
    Malformed,
    Request,
    check_framing,
    load_dictionary,
)

D: Any = load_dictionary()
CODEC = Codec(D)
SECRET = b"testing123"
OTHER_SECRET = b"not-the-secret"
CISCO = 9

# --------------------------------------------------------------------------- helpers


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def build_access(
    pairs: Sequence[tuple[str, Any]] = (),
    *,
    ma: bool = False,
    secret: bytes = SECRET,
    ident: int = 17,
    password: str | bytes | None = None,
    proxy_state: Sequence[bytes] = (),
) -> tuple[Any, bytes]:
    """An Access-Request as a switch sends it: (the client's packet, the datagram)."""
    pkt = rp.AuthPacket(dict=D, secret=secret, id=ident)
    if ma:
        pkt.add_message_authenticator()
    for name, value in pairs:
        pkt.AddAttribute(name, value)
    if password is not None:
        pkt["User-Password"] = pkt.PwCrypt(password)
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, pkt.RequestPacket()


def build_acct(
    pairs: Sequence[tuple[str, Any]],
    *,
    secret: bytes = SECRET,
    ident: int = 42,
    ma: bool = False,
    proxy_state: Sequence[bytes] = (),
) -> tuple[Any, bytes]:
    """An Accounting-Request; RequestPacket() computes the Request Authenticator."""
    pkt = rp.AcctPacket(dict=D, secret=secret, id=ident, message_authenticator=ma or None)
    for name, value in pairs:
        pkt.AddAttribute(name, value)
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, pkt.RequestPacket()


def build_status(
    *, accounting: bool, ident: int = 99, secret: bytes = SECRET, proxy_state: Sequence[bytes] = ()
) -> tuple[Any, bytes]:
    """A Status-Server (RFC 5997) as a client builds it for the auth or the acct port."""
    cls = rp.AcctPacket if accounting else rp.AuthPacket
    pkt = cls(code=rp.StatusServer, dict=D, secret=secret, id=ident)
    if not accounting:
        pkt.add_message_authenticator()
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, pkt.RequestPacket()


def attr(code: int, value: bytes) -> bytes:
    return bytes([code, len(value) + 2]) + value


def cisco_attr(name: str, value: str) -> bytes:
    sub = attr(D.attributes[name].code, value.encode())
    return attr(26, struct.pack("!L", CISCO) + sub)


def raw_packet(
    code: int,
    attrs: bytes = b"",
    *,
    ident: int = 1,
    length: int | None = None,
    authenticator: bytes = bytes(range(16)),
) -> bytes:
    size = 20 + len(attrs) if length is None else length
    return struct.pack("!BBH", code, ident, size) + authenticator + attrs


def signed_acct(attrs: bytes, *, ident: int = 3, secret: bytes = SECRET) -> bytes:
    """An Accounting-Request with a correct Request Authenticator over ``attrs``."""
    header = struct.pack("!BBH", ACCOUNTING_REQUEST, ident, 20 + len(attrs))
    return header + md5(header + bytes(16) + attrs + secret) + attrs


def raw_attributes(raw: bytes) -> list[tuple[int, bytes]]:
    """The (type, value) list of a datagram, checking the framing strictly."""
    (length,) = struct.unpack_from("!H", raw, 2)
    assert length == len(raw)
    out: list[tuple[int, bytes]] = []
    pos = 20
    while pos < length:
        code, size = raw[pos], raw[pos + 1]
        assert size >= 2
        out.append((code, raw[pos + 2 : pos + size]))
        pos += size
    assert pos == length
    return out


def cisco_values(raw: bytes) -> list[tuple[str, bytes]]:
    """Cisco VSAs of a datagram as (attribute name, raw value), in order."""
    out: list[tuple[str, bytes]] = []
    for code, value in raw_attributes(raw):
        if code != 26:
            continue
        (vendor,) = struct.unpack_from("!L", value)
        assert vendor == CISCO
        sub_code, sub_len = value[4], value[5]
        assert sub_len == len(value) - 4
        out.append((D.attrindex.GetBackward((CISCO, sub_code)), value[6:]))
    return out


def decode(raw: bytes, secret: bytes = SECRET) -> Request:
    return CODEC.decode(raw, secret)


def reason_of(raw: bytes, secret: bytes = SECRET) -> str:
    with pytest.raises(Malformed) as info:
        CODEC.decode(raw, secret)
    return info.value.reason


def client_accepts(request_pkt: Any, raw_reply: bytes) -> bool:
    """What a NAS does with a reply: pyrad's VerifyReply with the MA enforced."""
    reply = request_pkt.CreateReply(packet=raw_reply)
    return bool(request_pkt.VerifyReply(reply, raw_reply, enforce_ma=True))


# --------------------------------------------------------------------------- dictionary


@pytest.mark.parametrize("name", REQUEST_ATTRIBUTES + REPLY_ATTRIBUTES)
def test_every_attribute_the_code_uses_is_in_the_dictionary(name: str) -> None:
    assert name in D.attributes
    attribute = D.attributes[name]
    if name.startswith("h323-") or name == "Cisco-AVPair":
        assert attribute.vendor == "Cisco"
        assert D.vendors.GetForward("Cisco") == CISCO
    else:
        assert not attribute.vendor


def test_cisco_prefixed_is_exactly_the_h323_attributes() -> None:
    assert (
        frozenset(
            {
                "h323-conf-id",
                "h323-call-origin",
                "h323-remote-address",
                "h323-connect-time",
                "h323-disconnect-time",
                "h323-setup-time",
                "h323-return-code",
                "h323-credit-time",
                "h323-billing-model",
                "h323-credit-amount",
                "h323-currency",
                "h323-preferred-lang",
            }
        )
        == CISCO_PREFIXED
    )


# --------------------------------------------------------------------------- Access-Request


def test_decode_access_request_as_a_cisco_gateway_sends_it() -> None:
    pkt, raw = build_access(
        [
            ("User-Name", "acme"),
            ("NAS-IP-Address", "192.0.2.10"),
            ("NAS-Identifier", "gw-1"),
            ("Framed-IP-Address", "10.1.1.1"),
            ("Called-Station-Id", "sip:+15551230000@carrier.example"),
            ("Calling-Station-Id", "15557654321"),
            ("Acct-Session-Id", "sess-0001"),
            ("Service-Type", 1),
            ("h323-conf-id", "h323-conf-id=3A7C0F21 5E1B11EF 8F3DC0A8 7B2E91D4"),
            ("h323-remote-address", "10.9.9.9"),  # no "name=" prefix: accepted too
            ("h323-call-origin", "h323-call-origin=originate"),
            ("Cisco-AVPair", "call-id=abc123@192.0.2.10"),
            ("Cisco-AVPair", "h323-incoming-conf-id=FEED"),
        ],
        password="s3cret",
        ident=201,
    )
    request = decode(raw)
    assert request.code == ACCESS_REQUEST
    assert request.identifier == 201
    assert request.authenticator == pkt.authenticator
    assert len(request.authenticator) == 16
    assert request.has_message_authenticator is False
    assert request.has_proxy_state is False
    assert request.password == b"s3cret"
    assert request.chap is None
    assert request.text("User-Name") == "acme"
    assert request.text("NAS-IP-Address") == "192.0.2.10"
    assert request.text("NAS-Identifier") == "gw-1"
    assert request.text("Framed-IP-Address") == "10.1.1.1"
    assert request.text("Called-Station-Id") == "sip:+15551230000@carrier.example"
    assert request.text("Calling-Station-Id") == "15557654321"
    assert request.text("Acct-Session-Id") == "sess-0001"
    assert request.first("Service-Type") == "Login-User"
    assert request.text("h323-conf-id") == "3A7C0F21 5E1B11EF 8F3DC0A8 7B2E91D4"
    assert request.text("h323-remote-address") == "10.9.9.9"
    assert request.text("h323-call-origin") == "originate"
    assert request.first("h323-conf-id") == "h323-conf-id=3A7C0F21 5E1B11EF 8F3DC0A8 7B2E91D4"
    assert request.attributes["Cisco-AVPair"] == [
        "call-id=abc123@192.0.2.10",
        "h323-incoming-conf-id=FEED",
    ]
    assert request.avpairs() == {
        "call-id": "abc123@192.0.2.10",
        "h323-incoming-conf-id": "FEED",
    }
    assert request.text("NAS-IPv6-Address") is None
    assert request.first("Acct-Status-Type") is None
    assert request.raw == raw


def test_decode_keeps_the_values_of_repeated_attributes_in_order() -> None:
    _pkt, raw = build_access(
        [("User-Name", "a"), ("Cisco-AVPair", "x=1"), ("Cisco-AVPair", "y=2")],
        proxy_state=[b"p1", b"p2", b"p3"],
        ma=True,
    )
    request = decode(raw)
    assert request.attributes["Proxy-State"] == [b"p1", b"p2", b"p3"]
    assert request.attributes["Cisco-AVPair"] == ["x=1", "y=2"]
    assert request.has_proxy_state is True
    assert request.has_message_authenticator is True


@pytest.mark.parametrize(
    "password",
    ["", "a", "exactly16chars!!", "seventeen chars!!", "p" * 128, "pässwörd-ünïcode"],
    ids=["empty", "one", "16", "17", "128", "utf8"],
)
def test_user_password_is_decrypted(password: str) -> None:
    _pkt, raw = build_access([("User-Name", "acme")], password=password)
    assert decode(raw).password == password.encode("utf-8")


@pytest.mark.parametrize("password", [b"s3cret\xff", b"p\xe4ss"], ids=["trailing-ff", "latin-1"])
def test_user_password_octets_are_kept_exactly(password: bytes) -> None:
    _pkt, raw = build_access([("User-Name", "acme")], password=password)
    assert decode(raw).password == password


def test_user_password_with_the_wrong_secret_does_not_decrypt_to_the_password() -> None:
    _pkt, raw = build_access([("User-Name", "acme")], password="s3cret", secret=OTHER_SECRET)
    request = decode(raw)  # no MA: nothing proves the secret wrong, but the password differs
    assert request.password != b"s3cret"


def test_user_password_with_message_authenticator() -> None:
    _pkt, raw = build_access([("User-Name", "acme")], password="s3cret", ma=True)
    request = decode(raw)
    assert request.has_message_authenticator is True
    assert request.password == b"s3cret"
    assert "User-Password" not in request.dump()
    assert "Message-Authenticator" not in request.dump()
    assert request.dump()["User-Name"] == ["acme"]


def test_chap_password_without_challenge_uses_the_request_authenticator() -> None:
    pkt = rp.AuthPacket(dict=D, secret=SECRET, id=5)
    pkt.authenticator = bytes(range(100, 116))
    response = md5(bytes([7]) + b"s3cret" + pkt.authenticator)
    pkt.AddAttribute("User-Name", "acme")
    pkt.AddAttribute("CHAP-Password", bytes([7]) + response)
    request = decode(pkt.RequestPacket())
    assert request.chap == (7, response, pkt.authenticator)
    assert request.password is None
    assert "CHAP-Password" not in request.dump()


def test_chap_password_with_chap_challenge() -> None:
    challenge = b"challenge-0123456789"
    pkt = rp.AuthPacket(dict=D, secret=SECRET, id=6)
    response = md5(bytes([200]) + b"s3cret" + challenge)
    pkt.AddAttribute("User-Name", "acme")
    pkt.AddAttribute("CHAP-Password", bytes([200]) + response)
    pkt.AddAttribute("CHAP-Challenge", challenge)
    request = decode(pkt.RequestPacket())
    assert request.chap == (200, response, challenge)
    assert pkt.VerifyChapPasswd("s3cret") is True  # the same triple pyrad would check


def test_chap_password_of_the_wrong_length_is_ignored() -> None:
    pkt = rp.AuthPacket(dict=D, secret=SECRET, id=6)
    pkt.AddAttribute("User-Name", "acme")
    pkt.AddAttribute("CHAP-Password", bytes(16))
    assert decode(pkt.RequestPacket()).chap is None


# --------------------------------------------------------------------------- Request helpers


def make_request(attributes: dict[str, list[Any]]) -> Request:
    return Request(
        code=ACCESS_REQUEST,
        identifier=1,
        authenticator=bytes(16),
        attributes=attributes,
        has_message_authenticator=False,
        has_proxy_state=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("h323-conf-id", "h323-conf-id=ABC DEF", "ABC DEF"),
        ("h323-conf-id", "ABC DEF", "ABC DEF"),
        ("h323-conf-id", "h323-conf-id=", ""),
        ("h323-conf-id", "h323-conf-id=h323-conf-id=X", "h323-conf-id=X"),  # stripped once
        ("h323-conf-id", "h323-call-origin=answer", "h323-call-origin=answer"),  # other name
        ("h323-call-origin", "h323-call-origin=answer", "answer"),
        (
            "h323-setup-time",
            "h323-setup-time=*12:00:00.000 UTC Mon Jan 5 2026",
            "*12:00:00.000 UTC Mon Jan 5 2026",
        ),
        ("User-Name", "User-Name=acme", "User-Name=acme"),  # only Cisco VSAs are stripped
        ("User-Name", b"ac\xffme", "ac\ufffdme"),  # not UTF-8: replaced, not raised
        ("Acct-Session-Time", 61, "61"),
    ],
)
def test_text(name: str, value: Any, expected: str) -> None:
    assert make_request({name: [value]}).text(name) == expected


def test_text_and_first_of_a_missing_or_empty_attribute() -> None:
    request = make_request({"User-Name": []})
    assert request.text("User-Name") is None
    assert request.first("User-Name") is None
    assert request.text("Called-Station-Id") is None


def test_avpairs() -> None:
    request = make_request(
        {
            "Cisco-AVPair": [
                "call-id=first@host",
                " Call-ID = second@host ",  # same key, later: the first wins
                "no-equals-sign",
                "h323-ivr-out=a=b",  # value keeps its own '='
                b"conf-id=\xff",  # not UTF-8
            ]
        }
    )
    assert request.avpairs() == {
        "call-id": "first@host",
        "h323-ivr-out": "a=b",
        "conf-id": "\ufffd",
    }
    assert make_request({}).avpairs() == {}


# --------------------------------------------------------------------------- Accounting-Request


def test_decode_accounting_stop() -> None:
    pkt, raw = build_acct(
        [
            ("Acct-Status-Type", "Stop"),
            ("Acct-Session-Id", "sess-0001"),
            ("Acct-Session-Time", 125),
            ("Acct-Delay-Time", 3),
            ("Event-Timestamp", 1767225600),
            ("NAS-IPv6-Address", "2001:db8::10"),
            ("User-Name", "acme"),
            ("h323-conf-id", "h323-conf-id=3A7C0F21 5E1B11EF"),
            ("h323-call-origin", "h323-call-origin=originate"),
            ("h323-connect-time", "h323-connect-time=*12:00:00.000 UTC Mon Jan 5 2026"),
            ("h323-disconnect-time", "h323-disconnect-time=12:02:05.000 UTC Mon Jan 5 2026"),
        ],
        ident=250,
    )
    request = decode(raw)
    assert request.code == ACCOUNTING_REQUEST
    assert request.identifier == 250
    assert request.authenticator == pkt.authenticator
    assert request.authenticator == md5(raw[:4] + bytes(16) + raw[20:] + SECRET)
    assert request.has_message_authenticator is False
    assert request.password is None
    assert request.first("Acct-Status-Type") == "Stop"
    assert request.text("Acct-Session-Id") == "sess-0001"
    assert request.first("Acct-Session-Time") == 125
    assert request.first("Acct-Delay-Time") == 3
    assert request.first("Event-Timestamp") == 1767225600
    assert request.text("NAS-IPv6-Address") == "2001:db8::10"
    assert request.text("h323-conf-id") == "3A7C0F21 5E1B11EF"
    assert request.text("h323-call-origin") == "originate"
    assert request.text("h323-connect-time") == "*12:00:00.000 UTC Mon Jan 5 2026"
    assert request.text("h323-disconnect-time") == "12:02:05.000 UTC Mon Jan 5 2026"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, "Start"), (2, "Stop"), (3, "Interim-Update"), (7, "Accounting-On"),
     (8, "Accounting-Off"), (15, "Failed"), (99, 99)],
)  # fmt: skip
def test_acct_status_type_values(value: int, expected: Any) -> None:
    _pkt, raw = build_acct([("Acct-Status-Type", value), ("Acct-Session-Id", "s")])
    assert decode(raw).first("Acct-Status-Type") == expected


def test_accounting_request_with_message_authenticator() -> None:
    _pkt, raw = build_acct(
        [("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s")], ma=True, proxy_state=[b"x"]
    )
    assert raw_attributes(raw)[0][0] == 80
    request = decode(raw)
    assert request.has_message_authenticator is True
    assert request.has_proxy_state is True
    assert request.first("Acct-Status-Type") == "Start"


def test_padding_after_the_length_field_is_ignored() -> None:
    """RFC 2865 §3: octets beyond Length are padding; the authenticators cover Length only."""
    _pkt, acct = build_acct([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s")])
    assert decode(acct + b"\xff" * 7).text("Acct-Session-Id") == "s"
    _pkt, access = build_access([("User-Name", "acme")], ma=True, password="pw")
    request = decode(access + b"\x00\x01\x02")
    assert request.text("User-Name") == "acme"
    assert request.password == b"pw"


def test_a_packet_of_exactly_max_size_is_accepted() -> None:
    attrs = attr(40, struct.pack("!I", 1)) + attr(44, b"s")
    remaining = MAX_PACKET - 20 - len(attrs)
    while remaining:
        size = min(255, remaining)
        if remaining - size == 1:
            size -= 1
        attrs += attr(33, bytes(size - 2))
        remaining -= size
    raw = signed_acct(attrs)
    assert len(raw) == MAX_PACKET
    request = decode(raw)
    assert request.first("Acct-Status-Type") == "Start"
    assert sum(len(v) + 2 for v in request.attributes["Proxy-State"]) == MAX_PACKET - 29


def test_status_server_decodes_on_either_client_class() -> None:
    for accounting in (False, True):
        pkt, raw = build_status(accounting=accounting, proxy_state=[b"ps"])
        request = decode(raw)
        assert request.code == STATUS_SERVER
        assert request.identifier == 99
        assert request.authenticator == pkt.authenticator
        assert request.has_message_authenticator is True
        assert request.has_proxy_state is True


def test_status_server_without_message_authenticator_decodes_flagged() -> None:
    pkt = rp.AuthPacket(code=rp.StatusServer, dict=D, secret=SECRET, id=1)
    request = decode(pkt.RequestPacket())
    assert request.code == STATUS_SERVER
    assert request.has_message_authenticator is False  # the transport drops it


# --------------------------------------------------------------------------- replies

ACCEPT_ATTRIBUTES: list[tuple[str, Any]] = [
    ("h323-return-code", 0),
    ("h323-credit-time", 600),
    ("Session-Timeout", 600),
    ("h323-billing-model", 1),
    ("h323-credit-amount", "12.34"),
    ("h323-currency", "USD"),
    ("h323-preferred-lang", "es"),
]


@pytest.mark.parametrize("with_ma", [True, False], ids=["request-with-ma", "legacy-request"])
def test_access_accept(with_ma: bool) -> None:
    states = [b"\x00state-one", b"state-two", b"\xffthree"]
    pkt, raw = build_access(
        [("User-Name", "acme"), ("Called-Station-Id", "15551230000")],
        ma=with_ma,
        proxy_state=states,
        ident=77,
    )
    request = decode(raw)
    reply = CODEC.auth_reply(request, accept=True, attributes=ACCEPT_ATTRIBUTES)
    assert reply[0] == ACCESS_ACCEPT
    assert reply[1] == 77
    attrs = raw_attributes(reply)
    assert attrs[0][0] == 80  # Message-Authenticator first (BlastRADIUS)
    assert len(attrs[0][1]) == 16
    assert [value for code, value in attrs if code == 33] == states
    assert [code for code, _ in attrs].count(80) == 1
    assert (27, struct.pack("!I", 600)) in attrs  # Session-Timeout, plain integer
    assert cisco_values(reply) == [
        ("h323-return-code", b"h323-return-code=0"),
        ("h323-credit-time", b"h323-credit-time=600"),
        ("h323-billing-model", b"h323-billing-model=1"),
        ("h323-credit-amount", b"h323-credit-amount=12.34"),
        ("h323-currency", b"h323-currency=USD"),
        ("h323-preferred-lang", b"h323-preferred-lang=es"),
    ]
    assert client_accepts(pkt, reply)


def test_access_accept_response_authenticator_and_ma_are_checked() -> None:
    pkt, raw = build_access([("User-Name", "acme")], ma=True)
    reply = CODEC.auth_reply(decode(raw), accept=True, attributes=[("h323-return-code", 0)])
    assert client_accepts(pkt, reply)
    # any changed byte after the header breaks the Response Authenticator
    tampered = bytearray(reply)
    tampered[-1] ^= 0x01
    assert not client_accepts(pkt, bytes(tampered))
    # a client with another secret refuses it
    other, _ = build_access([("User-Name", "acme")], ma=True, secret=OTHER_SECRET)
    other.authenticator = pkt.authenticator
    other.id = pkt.id
    assert not client_accepts(other, reply)


def test_access_reject() -> None:
    pkt, raw = build_access([("User-Name", "nobody")], proxy_state=[b"ps"], ident=3)
    reply = CODEC.auth_reply(
        decode(raw),
        accept=False,
        attributes=[("h323-return-code", 1), ("Reply-Message", "no such account")],
    )
    assert reply[0] == ACCESS_REJECT
    assert reply[1] == 3
    attrs = raw_attributes(reply)
    assert attrs[0][0] == 80
    assert (33, b"ps") in attrs
    assert (18, b"no such account") in attrs
    assert cisco_values(reply) == [("h323-return-code", b"h323-return-code=1")]
    assert client_accepts(pkt, reply)


@pytest.mark.parametrize("name", REPLY_ATTRIBUTES)
def test_each_reply_attribute_is_encoded_as_switches_expect(name: str) -> None:
    value: Any = 42 if name == "Session-Timeout" else "v1"
    pkt, raw = build_access([("User-Name", "acme")])
    reply = CODEC.auth_reply(decode(raw), accept=True, attributes=[(name, value)])
    assert client_accepts(pkt, reply)
    decoded = pkt.CreateReply(packet=reply)
    if name in CISCO_PREFIXED:
        assert cisco_values(reply) == [(name, f"{name}=v1".encode())]
        assert decoded[name] == [f"{name}=v1"]
    else:
        assert cisco_values(reply) == []
        assert decoded[name] == [value]


def test_accounting_response() -> None:
    states = [b"first", b"second"]
    pkt, raw = build_acct(
        [("Acct-Status-Type", "Stop"), ("Acct-Session-Id", "s1")], proxy_state=states, ident=9
    )
    reply = CODEC.acct_reply(decode(raw))
    assert reply[0] == ACCOUNTING_RESPONSE
    assert reply[1] == 9
    assert raw_attributes(reply) == [(33, b"first"), (33, b"second")]
    assert reply[4:20] == md5(reply[:4] + pkt.authenticator + reply[20:] + SECRET)
    assert pkt.VerifyReply(pkt.CreateReply(packet=reply), reply) is True
    tampered = reply[:-1] + bytes([reply[-1] ^ 1])
    assert pkt.VerifyReply(pkt.CreateReply(packet=tampered), tampered) is False


def test_accounting_response_without_proxy_state_is_bare() -> None:
    pkt, raw = build_acct([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s1")])
    reply = CODEC.acct_reply(decode(raw))
    assert len(reply) == 20
    assert pkt.VerifyReply(pkt.CreateReply(packet=reply), reply) is True


@pytest.mark.parametrize("accounting_port", [False, True], ids=["auth-port", "acct-port"])
def test_status_server_reply(accounting_port: bool) -> None:
    states = [b"ps-1", b"ps-2"]
    pkt, raw = build_status(accounting=accounting_port, proxy_state=states, ident=123)
    reply = CODEC.status_reply(decode(raw), accounting_port=accounting_port)
    assert reply[0] == (ACCOUNTING_RESPONSE if accounting_port else ACCESS_ACCEPT)
    assert reply[1] == 123
    attrs = raw_attributes(reply)
    assert attrs[0][0] == 80
    assert [value for code, value in attrs if code == 33] == states
    assert client_accepts(pkt, reply)
    tampered = bytearray(reply)
    tampered[-1] ^= 0x80
    assert not client_accepts(pkt, bytes(tampered))


# --------------------------------------------------------------------------- malformed

GOOD_ACCESS = build_access([("User-Name", "acme")], ident=1)[1]
GOOD_ACCT = build_acct([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s")])[1]


def _wrong_ma_value() -> bytes:
    raw = bytearray(build_access([("User-Name", "acme")], ma=True)[1])
    assert raw[20] == 80
    raw[22] ^= 0x01  # first octet of the Message-Authenticator value
    return bytes(raw)


def _ma_then_changed_attribute() -> bytes:
    raw = bytearray(build_access([("User-Name", "acme")], ma=True)[1])
    raw[-1] ^= 0x20  # 'e' -> 'E' in the User-Name, MA no longer matches
    return bytes(raw)


def _short_ma() -> bytes:
    return raw_packet(ACCESS_REQUEST, attr(1, b"acme") + attr(80, bytes(15)))


def _acct_changed_after_signing() -> bytes:
    raw = bytearray(GOOD_ACCT)
    raw[-1] ^= 0x01
    return bytes(raw)


MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "truncated"),
    ("one-byte", b"\x01", "truncated"),
    ("19-bytes", GOOD_ACCESS[:19], "truncated"),
    ("4097-bytes", raw_packet(1, attr(1, b"x") * 1359), "oversized"),
    ("huge", b"\x01\x01\xff\xff" + bytes(65531), "oversized"),
    ("length-over-datagram", GOOD_ACCESS[:-1], "bad_length"),
    ("length-21-datagram-20", raw_packet(1, length=21), "bad_length"),
    ("length-19", raw_packet(1, attr(1, b"x"), length=19), "bad_length"),
    ("length-0", raw_packet(1, attr(1, b"x"), length=0), "bad_length"),
    ("attribute-length-0", raw_packet(1, b"\x01\x00acme"), "bad_attribute"),
    ("attribute-length-1", raw_packet(1, b"\x01\x01acme"), "bad_attribute"),
    ("attribute-overruns", raw_packet(1, attr(1, b"ok") + b"\x01\x09abc"), "bad_attribute"),
    ("lone-attribute-type-octet", raw_packet(1, attr(1, b"ok") + b"\x01"), "bad_attribute"),
    (
        "attribute-overruns-length-into-padding",  # pyrad alone would truncate it silently
        raw_packet(1, attr(1, b"acme") + b"\x1f\x10abcdefghijklmn", length=20 + 6 + 6),
        "bad_attribute",
    ),
    ("vsa-length-2", raw_packet(1, b"\x1a\x02"), "bad_attribute"),
    ("vsa-vendor-only", raw_packet(1, attr(26, struct.pack("!L", 9))), "bad_attribute"),
    ("vsa-7", raw_packet(1, attr(26, struct.pack("!L", 9) + b"\x01")), "bad_attribute"),
    ("code-99", raw_packet(99, attr(1, b"x")), "unknown_code"),
    ("code-0", raw_packet(0), "unknown_code"),
    ("access-accept-sent-to-us", raw_packet(ACCESS_ACCEPT, attr(18, b"hi")), "unknown_code"),
    ("access-reject-sent-to-us", raw_packet(ACCESS_REJECT), "unknown_code"),
    ("accounting-response-sent-to-us", raw_packet(ACCOUNTING_RESPONSE), "unknown_code"),
    ("access-challenge", raw_packet(11), "unknown_code"),
    ("disconnect-request", raw_packet(40), "unknown_code"),
    ("coa-request", raw_packet(43), "unknown_code"),
    (
        "ma-wrong-secret",
        build_access([("User-Name", "acme")], ma=True, secret=OTHER_SECRET)[1],
        "bad_message_authenticator",
    ),
    ("ma-flipped", _wrong_ma_value(), "bad_message_authenticator"),
    ("ma-attribute-changed", _ma_then_changed_attribute(), "bad_message_authenticator"),
    ("ma-15-octets", _short_ma(), "bad_message_authenticator"),
    ("ma-empty", raw_packet(ACCESS_REQUEST, attr(80, b"")), "bad_message_authenticator"),
    (
        "status-server-wrong-secret",
        build_status(accounting=False, secret=OTHER_SECRET)[1],
        "bad_message_authenticator",
    ),
    (
        "acct-wrong-secret",
        build_acct([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s")], secret=OTHER_SECRET)[
            1
        ],
        "bad_authenticator",
    ),
    ("acct-changed-after-signing", _acct_changed_after_signing(), "bad_authenticator"),
    (
        "acct-random-authenticator",
        raw_packet(ACCOUNTING_REQUEST, attr(44, b"s")),
        "bad_authenticator",
    ),
    ("password-not-16n", raw_packet(ACCESS_REQUEST, attr(2, bytes(15))), "undecodable"),
]


@pytest.mark.parametrize(
    ("data", "name", "raw"),
    [
        (raw_packet(ACCESS_REQUEST, attr(4, b"\x0a\x00\x00")), "NAS-IP-Address", b"\n\x00\x00"),
        (signed_acct(attr(46, b"\x00\x01")), "Acct-Session-Time", b"\x00\x01"),
        # Kamailio's rad_time_mode: Event-Timestamp as a string with microseconds
        (signed_acct(attr(55, b"1445590624.377372")), "Event-Timestamp", b"1445590624.377372"),
    ],
    ids=["nas-ip-3-octets", "acct-session-time-2-octets", "event-timestamp-string"],
)
def test_a_value_that_does_not_fit_its_type_is_kept_raw_and_named(
    data: bytes, name: str, raw: bytes
) -> None:
    """Only a broken structure is malformed: the attribute is kept as received octets, named
    in attribute_errors (counted by the transport), and the packet decodes."""
    request = decode(data)
    assert request.attributes[name] == [raw]
    assert request.attribute_errors == [name]
    assert decode(GOOD_ACCT).attribute_errors == []


@pytest.mark.parametrize(
    ("data", "reason"), [(d, r) for _, d, r in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


def test_the_table_really_is_at_the_boundaries() -> None:
    assert len(MALFORMED[3][1]) == MAX_PACKET + 1
    assert len(MALFORMED[2][1]) == 19
    # the datagrams the wrong-authenticator cases were derived from are fine
    assert decode(GOOD_ACCESS).text("User-Name") == "acme"
    assert decode(GOOD_ACCT).first("Acct-Status-Type") == "Start"
    assert decode(build_access([("User-Name", "acme")], ma=True)[1]).text("User-Name") == "acme"
    assert decode(signed_acct(attr(46, struct.pack("!I", 1)))).first("Acct-Session-Time") == 1


def test_a_wrong_secret_is_the_only_difference() -> None:
    _pkt, raw = build_access([("User-Name", "acme")], ma=True)
    assert decode(raw, SECRET).has_message_authenticator is True
    assert reason_of(raw, OTHER_SECRET) == "bad_message_authenticator"
    assert decode(GOOD_ACCT, SECRET).text("Acct-Session-Id") == "s"
    assert reason_of(GOOD_ACCT, OTHER_SECRET) == "bad_authenticator"


def test_check_framing_returns_the_code() -> None:
    assert check_framing(GOOD_ACCESS) == ACCESS_REQUEST
    assert check_framing(GOOD_ACCT) == ACCOUNTING_REQUEST
    assert check_framing(raw_packet(ACCESS_ACCEPT)) == ACCESS_ACCEPT  # framing only
    assert check_framing(raw_packet(1, attr(26, struct.pack("!L", 9) + attr(1, b"")))) == 1


def test_malformed_carries_reason_and_detail() -> None:
    with pytest.raises(Malformed) as info:
        check_framing(b"\x01" * 5)
    assert info.value.reason == "truncated"
    assert str(info.value) == "5 bytes"
    assert str(Malformed("bad_authenticator")) == "bad_authenticator"
