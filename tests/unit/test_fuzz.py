"""Fuzzing the network edge with hypothesis.

(a) Codec.decode returns a Request or raises Malformed with a known reason, never anything
    else; what it returns can be read and answered.
(b) RadiusServer.receive never raises: every datagram is answered once or dropped and
    counted once, and afterwards a valid request is still answered.

Inputs: random bytes, header-shaped packets of random attributes, and mutations (flipped
bytes, truncation, length fields, attribute lengths, insertions) of valid Access-,
Accounting- and Status-Server requests. Mutated packets are optionally re-signed so that
the mutations reach attribute decoding instead of stopping at the authenticator check."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyrad import packet as rp

from billing_core.config import NasConfig, Secret
from radiusd.codec import (
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCESS_REQUEST,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    STATUS_SERVER,
    Codec,
    Malformed,
    Request,
    load_dictionary,
)
from radiusd.metrics import Metrics
from radiusd.transport import NasTable, RadiusServer

pytestmark = pytest.mark.slow

D: Any = load_dictionary()
CODEC = Codec(D)
SECRET = b"fuzz-secret"
REASONS = frozenset(
    {
        "truncated",
        "oversized",
        "bad_length",
        "bad_attribute",
        "unknown_code",
        "undecodable",
        "bad_message_authenticator",
        "bad_authenticator",
    }
)
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- valid bases


def _access(ma: bool) -> bytes:
    pkt = rp.AuthPacket(dict=D, secret=SECRET, id=11)
    if ma:
        pkt.add_message_authenticator()
    pkt.AddAttribute("User-Name", "acme")
    pkt["User-Password"] = pkt.PwCrypt("s3cret-password-over-16")
    pkt.AddAttribute("NAS-IP-Address", "192.0.2.10")
    pkt.AddAttribute("Called-Station-Id", "15551230000")
    pkt.AddAttribute("Calling-Station-Id", "15557654321")
    pkt.AddAttribute("h323-conf-id", "h323-conf-id=3A7C0F21 5E1B11EF")
    pkt.AddAttribute("Cisco-AVPair", "call-id=abc@gw")
    pkt.AddAttribute("Framed-IP-Address", "10.1.1.1")
    pkt.AddAttribute("CHAP-Challenge", b"0123456789abcdef")
    if ma:
        pkt.AddAttribute("Proxy-State", b"ps")
    return bytes(pkt.RequestPacket())


def _acct() -> bytes:
    pkt = rp.AcctPacket(dict=D, secret=SECRET, id=12)
    pkt.AddAttribute("Acct-Status-Type", "Stop")
    pkt.AddAttribute("Acct-Session-Id", "sess-1")
    pkt.AddAttribute("Acct-Session-Time", 125)
    pkt.AddAttribute("Acct-Delay-Time", 2)
    pkt.AddAttribute("Event-Timestamp", 1767225600)
    pkt.AddAttribute("NAS-IPv6-Address", "2001:db8::1")
    pkt.AddAttribute("h323-call-origin", "h323-call-origin=originate")
    pkt.AddAttribute("h323-connect-time", "h323-connect-time=*12:00:00.000 UTC Mon Jan 5 2026")
    pkt.AddAttribute("Proxy-State", b"ps")
    return bytes(pkt.RequestPacket())


def _status() -> bytes:
    pkt = rp.AuthPacket(code=rp.StatusServer, dict=D, secret=SECRET, id=13)
    pkt.add_message_authenticator()
    return bytes(pkt.RequestPacket())


BASES = {
    "access": _access(False),
    "access-ma": _access(True),
    "acct": _acct(),
    "status": _status(),
}


def test_the_bases_are_valid() -> None:
    access = CODEC.decode(BASES["access"], SECRET)
    assert access.password == b"s3cret-password-over-16"
    assert access.has_message_authenticator is False
    assert CODEC.decode(BASES["access-ma"], SECRET).has_message_authenticator is True
    assert CODEC.decode(BASES["acct"], SECRET).first("Acct-Session-Time") == 125
    assert CODEC.decode(BASES["status"], SECRET).code == STATUS_SERVER
    # re-signing a base changes nothing: resign() computes what pyrad computed
    for raw in BASES.values():
        assert resign(raw) == raw


# --------------------------------------------------------------------------- strategies


def _walk(data: bytes | bytearray) -> list[int]:
    """Offsets of the attributes that frame correctly, from 20 up to the first bad one."""
    offsets: list[int] = []
    end = min(len(data), struct.unpack_from("!H", data, 2)[0]) if len(data) >= 20 else 0
    pos = 20
    while pos + 2 <= end and data[pos + 1] >= 2 and pos + data[pos + 1] <= end:
        offsets.append(pos)
        pos += data[pos + 1]
    return offsets


def resign(raw: bytes) -> bytes:
    """Recompute the Accounting Request Authenticator or the Message-Authenticator."""
    if len(raw) < 20:
        return raw
    data = bytearray(raw)
    code = data[0]
    length = struct.unpack_from("!H", data, 2)[0]
    if not 20 <= length <= len(data):
        return raw
    if code == ACCOUNTING_REQUEST:
        digest = hashlib.md5(
            bytes(data[:4]) + bytes(16) + bytes(data[20:length]) + SECRET,
            usedforsecurity=False,
        ).digest()
        data[4:20] = digest
    elif code in (ACCESS_REQUEST, STATUS_SERVER):
        mas = [pos for pos in _walk(data) if data[pos] == 80 and data[pos + 1] == 18]
        if mas:
            data[mas[0] + 2 : mas[0] + 18] = bytes(16)
            digest = hmac.new(SECRET, bytes(data[:length]), "md5").digest()
            data[mas[0] + 2 : mas[0] + 18] = digest
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(sorted(BASES.values()))))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "truncate", "length", "attrlen", "insert", "code"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "length" and len(data) >= 4:
            length = draw(
                st.one_of(
                    st.integers(0, 0xFFFF),
                    st.integers(max(0, len(data) - 3), len(data) + 3),
                )
            )
            struct.pack_into("!H", data, 2, length)
        elif op == "attrlen":
            offsets = _walk(data)
            if offsets:
                pos = draw(st.sampled_from(offsets))
                data[pos + 1] = draw(st.integers(0, 255))
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
            if draw(st.booleans()) and len(data) >= 4:  # keep the length field consistent
                struct.pack_into("!H", data, 2, len(data) & 0xFFFF)
        elif op == "code" and data:
            data[0] = draw(st.sampled_from([1, 2, 3, 4, 5, 11, 12, 40, 43, 0, 255]))
    raw = bytes(data)
    return resign(raw) if draw(st.booleans()) else raw


@st.composite
def random_attributes(draw: st.DrawFn) -> bytes:
    """A well-framed packet of random attributes (plain, Cisco VSAs, other vendors)."""
    attrs = b""
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["plain", "known", "cisco", "vsa"]))
        if kind == "cisco":
            sub = draw(st.sampled_from([1, 2, 23, 24, 26, 28, 29, 30, 31, 101, 102, 103]))
            value = draw(st.binary(max_size=24))
            body = struct.pack("!L", 9) + bytes([sub, len(value) + 2]) + value
            attrs += bytes([26, len(body) + 2]) + body
            continue
        if kind == "vsa":
            value = draw(st.binary(min_size=6, max_size=30))
        else:
            value = draw(st.binary(max_size=24))
        code = {
            "plain": draw(st.integers(1, 255)),
            "known": draw(
                st.sampled_from(
                    [1, 2, 3, 4, 6, 8, 18, 27, 30, 31, 33, 40, 44, 46, 55, 60, 80, 95, 97]
                )
            ),
            "vsa": 26,
        }[kind]
        attrs += bytes([code, len(value) + 2]) + value
    code = draw(st.sampled_from([ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER]))
    header = struct.pack("!BBH", code, draw(st.integers(0, 255)), 20 + len(attrs))
    raw = header + draw(st.binary(min_size=16, max_size=16)) + attrs
    return resign(raw) if draw(st.booleans()) else raw


# --------------------------------------------------------------------------- (a) the codec


def pyrad_request(request: Request) -> Any:
    """The same datagram decoded by pyrad, the reference codec, to verify our replies."""
    from pyrad import packet as rp

    cls = rp.AcctPacket if request.code == ACCOUNTING_REQUEST else rp.AuthPacket
    return cls(packet=request.raw, dict=CODEC.dictionary, secret=request.secret)


def check_decoded(request: Request) -> None:
    """What a handler does with a request must not raise either."""
    assert request.code in (ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER)
    assert 0 <= request.identifier <= 255
    assert len(request.authenticator) == 16
    for name in request.attributes:
        request.first(name)
        request.text(name)
    request.avpairs()
    request.dump()
    pkt = pyrad_request(request)
    if request.code == ACCESS_REQUEST:
        for accept in (True, False):
            raw = CODEC.auth_reply(
                request, accept=accept, attributes=[("h323-return-code", 0), ("Session-Timeout", 1)]
            )
            assert raw[0] == (ACCESS_ACCEPT if accept else ACCESS_REJECT)
            assert raw[20] == 80
            assert pkt.VerifyReply(pkt.CreateReply(packet=raw), raw, enforce_ma=True)
    elif request.code == ACCOUNTING_REQUEST:
        raw = CODEC.acct_reply(request)
        assert raw[0] == ACCOUNTING_RESPONSE
        assert pkt.VerifyReply(pkt.CreateReply(packet=raw), raw)
    else:
        for accounting_port in (False, True):
            raw = CODEC.status_reply(request, accounting_port=accounting_port)
            assert raw[0] == (ACCOUNTING_RESPONSE if accounting_port else ACCESS_ACCEPT)
            assert raw[20] == 80


def decode_property(data: bytes) -> None:
    try:
        request = CODEC.decode(data, SECRET)
    except Malformed as exc:
        assert exc.reason in REASONS, exc.reason
        event(f"malformed: {exc.reason}")
        return
    assert isinstance(request, Request)
    event(f"decoded: code {request.code}")
    check_decoded(request)


RANDOM_BYTES = st.one_of(
    st.binary(max_size=300),
    # starts like a request we accept, then anything
    st.builds(
        lambda code, rest: bytes([code]) + rest,
        st.sampled_from([ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER]),
        st.binary(min_size=19, max_size=300),
    ),
    # and with a length field that matches the datagram
    st.builds(
        lambda code, ident, body: struct.pack("!BBH", code, ident, 20 + len(body) - 16) + body,
        st.sampled_from([ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER]),
        st.integers(0, 255),
        st.binary(min_size=16, max_size=300),
    ),
)


ANY_DATAGRAM = st.one_of(RANDOM_BYTES, mutated(), random_attributes())


@FUZZ
@given(RANDOM_BYTES)
def test_codec_random_bytes(data: bytes) -> None:
    decode_property(data)


@FUZZ
@given(mutated())
def test_codec_mutated_requests(data: bytes) -> None:
    decode_property(data)


@FUZZ
@given(random_attributes())
def test_codec_random_attributes(data: bytes) -> None:
    decode_property(data)


# --------------------------------------------------------------------------- (b) the transport


class FakeTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return False


class FakeHandler:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, request: Request, nas: NasConfig, source_ip: str, accounting_port: bool
    ) -> bytes | None:
        self.calls += 1
        await asyncio.sleep(0)
        return b"reply#%d" % self.calls


NAS = [
    NasConfig(address=ipaddress.ip_network("10.0.0.0/8"), secret=Secret(SECRET.decode())),
    NasConfig(
        address=ipaddress.ip_network("2001:db8::/32"),
        secret=Secret(SECRET.decode()),
        require_message_authenticator=True,
    ),
]
SOURCES = [
    ("10.0.0.1", 1645),
    ("::ffff:10.0.0.2", 1812, 0, 0),
    ("2001:db8::5", 1812, 0, 0),
    ("192.0.2.1", 1812),  # unknown NAS
]
HANDLER = FakeHandler()
METRICS = Metrics()
SERVER = RadiusServer(
    CODEC,
    NasTable(NAS),
    HANDLER,
    METRICS,
    max_in_flight=50,
    duplicate_ttl=30.0,
    duplicate_size=500,
)
_probe_ids = itertools.count()


def _counted(result: str) -> float:
    total = 0.0
    for kind in ("auth", "acct"):
        value = METRICS.registry.get_sample_value(
            "radiusd_requests_total", {"type": kind, "result": result}
        )
        total += value or 0.0
    return total


def _probe(accounting_port: bool) -> tuple[Any, bytes]:
    n = next(_probe_ids)
    if accounting_port:
        pkt = rp.AcctPacket(dict=D, secret=SECRET, id=n % 256)
        pkt.AddAttribute("Acct-Status-Type", "Start")
        pkt.AddAttribute("Acct-Session-Id", f"probe-{n}")
    else:
        pkt = rp.AuthPacket(dict=D, secret=SECRET, id=n % 256)
        pkt.add_message_authenticator()
        pkt.AddAttribute("User-Name", f"probe-{n}")
    return pkt, bytes(pkt.RequestPacket())


async def _settle() -> None:
    await asyncio.sleep(0)
    while SERVER.tasks:
        await asyncio.gather(*list(SERVER.tasks), return_exceptions=True)
        await asyncio.sleep(0)


async def _exchange(data: bytes, addr: tuple[Any, ...], accounting_port: bool) -> str:
    transport = FakeTransport()
    calls, dropped, duplicates = HANDLER.calls, _counted("dropped"), _counted("duplicate")
    SERVER.receive(data, addr, transport, accounting_port)  # must not raise
    await _settle()
    handled = HANDLER.calls - calls
    replayed = _counted("duplicate") - duplicates
    assert handled + (_counted("dropped") - dropped) + replayed == 1
    assert len(transport.sent) == handled + replayed
    assert all(sent_to == addr for _data, sent_to in transport.sent)
    assert _counted("error") == 0
    # and the server still answers a valid request, from a known NAS, on the same port
    _pkt, probe = _probe(accounting_port)
    transport.sent.clear()
    calls = HANDLER.calls
    SERVER.receive(probe, ("10.0.0.1", 1812), transport, accounting_port)
    await _settle()
    assert HANDLER.calls == calls + 1
    assert transport.sent == [(b"reply#%d" % HANDLER.calls, ("10.0.0.1", 1812))]
    assert not SERVER.tasks
    return "handled" if handled else "replayed" if replayed else "dropped"


@FUZZ
@given(ANY_DATAGRAM, st.sampled_from(SOURCES), st.booleans())
def test_receive_never_raises_and_keeps_answering(
    data: bytes, addr: tuple[Any, ...], accounting_port: bool
) -> None:
    event(asyncio.run(_exchange(data, addr, accounting_port)))


def test_the_transport_fuzz_reaches_every_outcome() -> None:
    """The invariant above is checked on answered, replayed and dropped datagrams alike."""
    addr = ("10.0.0.1", 1)
    assert asyncio.run(_exchange(BASES["access-ma"], addr, False)) == "handled"
    assert asyncio.run(_exchange(BASES["access-ma"], addr, False)) == "replayed"
    assert asyncio.run(_exchange(BASES["acct"], addr, True)) == "handled"
    assert asyncio.run(_exchange(BASES["acct"], addr, False)) == "dropped"  # wrong port
    # no Message-Authenticator from a NAS that requires one
    assert asyncio.run(_exchange(BASES["access"], ("2001:db8::5", 1, 0, 0), False)) == "dropped"
    assert asyncio.run(_exchange(b"junk", ("192.0.2.1", 1), False)) == "dropped"
    assert _counted("duplicate") >= 1
    unknown = METRICS.registry.get_sample_value("radiusd_dropped_total", {"reason": "unknown_nas"})
    assert unknown is not None
    assert unknown >= 1
