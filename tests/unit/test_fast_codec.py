"""The struct codec against pyrad, the reference codec: same values decoded, same reply bytes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad import packet as rp

from radiusd.codec import ACCESS_ACCEPT, ACCESS_REJECT, Codec, load_dictionary

D = load_dictionary()
CODEC = Codec(D)
SECRET = b"s3cret-shared"

TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=["Cs"]),
    min_size=1,
    max_size=40,
)
STRING_ATTRS = (
    "User-Name",
    "Called-Station-Id",
    "Calling-Station-Id",
    "Acct-Session-Id",
    "NAS-Identifier",
)
CISCO_ATTRS = ("h323-conf-id", "h323-call-origin", "h323-remote-address", "h323-connect-time")


def pyrad_request(code: int, attrs: list[tuple[str, Any]], proxy: list[bytes], ma: bool) -> bytes:
    cls = rp.AcctPacket if code == rp.AccountingRequest else rp.AuthPacket
    pkt = cls(code=code, dict=D, secret=SECRET)
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    for state in proxy:
        pkt.AddAttribute("Proxy-State", state)
    if ma:
        pkt.add_message_authenticator()
    raw: bytes = pkt.RequestPacket()
    return raw


IPV4 = st.ip_addresses(v=4).map(str)
OTHER_ATTRS = st.one_of(
    st.tuples(st.sampled_from(["NAS-IP-Address", "Framed-IP-Address"]), IPV4),
    st.tuples(st.just("NAS-IPv6-Address"), st.ip_addresses(v=6).map(str)),
    # enumerated: named values decode to their names, others to the number
    st.tuples(st.just("Service-Type"), st.integers(0, 40)),
    st.tuples(st.just("Cisco-AVPair"), TEXT),
    st.tuples(st.just("Acct-Delay-Time"), st.integers(0, 2**32 - 1)),
)

requests = st.tuples(
    st.sampled_from([rp.AccessRequest, rp.AccountingRequest]),
    st.lists(st.tuples(st.sampled_from(STRING_ATTRS), TEXT), max_size=5),
    st.lists(st.tuples(st.sampled_from(CISCO_ATTRS), TEXT), max_size=4),
    st.lists(st.integers(0, 2**32 - 1), max_size=2),
    st.lists(st.binary(min_size=1, max_size=20), max_size=3),
    st.booleans(),
    st.lists(OTHER_ATTRS, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_decoded_values_equal_pyrads(case: tuple[Any, ...]) -> None:
    code, strings, ciscos, times, proxy, ma, others = case
    attrs: list[tuple[str, Any]] = list(strings) + list(others)
    attrs += [(name, f"{name}={value}") for name, value in ciscos]
    attrs += [("Acct-Session-Time", t) for t in times]
    if code == rp.AccountingRequest:
        attrs.append(("Acct-Status-Type", "Interim-Update"))
    raw = pyrad_request(code, attrs, proxy, ma)
    ours = CODEC.decode(raw, SECRET)
    cls = rp.AcctPacket if code == rp.AccountingRequest else rp.AuthPacket
    ref = cls(packet=raw, dict=D, secret=SECRET)
    # pyrad.Packet.keys() names the attributes; iterating the packet gives raw codes
    expected = {key: ref[key] for key in ref.keys() if isinstance(key, str)}  # noqa: SIM118
    expected.pop("Proxy-State", None)
    expected.pop("Message-Authenticator", None)
    got = {k: v for k, v in ours.attributes.items() if k not in ("Proxy-State",)}
    got.pop("Message-Authenticator", None)
    assert got == expected
    assert ours.proxy_states == proxy
    assert ours.has_message_authenticator is ma


replies = st.lists(
    st.one_of(
        st.tuples(st.just("h323-credit-time"), st.integers(1, 86400)),
        st.tuples(st.just("Session-Timeout"), st.integers(1, 86400)),
        st.tuples(st.just("h323-return-code"), st.integers(0, 12)),
        st.tuples(st.just("Reply-Message"), TEXT),
        st.tuples(st.just("h323-currency"), st.sampled_from(["USD", "EUR"])),
    ),
    max_size=6,
    unique_by=lambda pair: pair[0],
)


@settings(max_examples=300, deadline=None)
@given(replies, st.lists(st.binary(min_size=1, max_size=20), max_size=3), st.booleans())
def test_reply_bytes_equal_pyrads(
    attributes: list[tuple[str, Any]], proxy: list[bytes], accept: bool
) -> None:
    raw = pyrad_request(rp.AccessRequest, [("User-Name", "acme")], proxy, True)
    request = CODEC.decode(raw, SECRET)
    ours = CODEC.auth_reply(request, accept=accept, attributes=attributes)
    ref = rp.AuthPacket(packet=raw, dict=D, secret=SECRET)
    reply = ref.CreateReply()
    reply.code = ACCESS_ACCEPT if accept else ACCESS_REJECT
    for name, value in attributes:
        wire = f"{name}={value}" if name.startswith("h323-") else value
        reply.AddAttribute(name, wire)
    assert ours == reply.ReplyPacket()
    assert ref.VerifyReply(ref.CreateReply(packet=ours), ours, enforce_ma=True)


@given(st.lists(st.binary(min_size=1, max_size=20), max_size=3))
def test_accounting_response_bytes_equal_pyrads(proxy: list[bytes]) -> None:
    raw = pyrad_request(
        rp.AccountingRequest,
        [("Acct-Status-Type", "Start"), ("Acct-Session-Id", "x")],
        proxy,
        False,
    )
    request = CODEC.decode(raw, SECRET)
    ref = rp.AcctPacket(packet=raw, dict=D, secret=SECRET)
    assert CODEC.acct_reply(request) == ref.CreateReply().ReplyPacket()


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ),
    st.binary(min_size=16, max_size=16),
)
def test_user_password_decrypts_as_pyrads(password: str, authenticator: bytes) -> None:
    pkt = rp.AuthPacket(code=rp.AccessRequest, dict=D, secret=SECRET, authenticator=authenticator)
    pkt["User-Password"] = pkt.PwCrypt(password)
    request = CODEC.decode(pkt.RequestPacket(), SECRET)
    assert request.password == password.encode()
    assert request.password.decode() == pkt.PwDecrypt(pkt["User-Password"][0])
