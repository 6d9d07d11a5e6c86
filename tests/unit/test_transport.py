"""radiusd.transport without sockets: NAS lookup, the Message-Authenticator rules, the
duplicate cache, the in-flight bound and the handler boundary.

RadiusServer.receive is driven directly with a fake DatagramTransport and a fake async
handler, inside ``asyncio.run`` (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from pyrad import packet as rp

import radiusd.transport as transport_module
from billing_core.config import NasConfig, Secret
from radiusd.codec import (
    ACCESS_ACCEPT,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    STATUS_SERVER,
    Codec,
    Request,
    load_dictionary,
)
from radiusd.metrics import Metrics
from radiusd.transport import DuplicateCache, NasTable, RadiusServer

D: Any = load_dictionary()
CODEC = Codec(D)


def nas(
    address: str,
    secret: str,
    name: str,
    *,
    require_ma: bool = False,
    limit_proxy_state: bool = True,
) -> NasConfig:
    return NasConfig(
        address=ipaddress.ip_network(address),
        secret=Secret(secret),
        require_message_authenticator=require_ma,
        limit_proxy_state=limit_proxy_state,
        name=name,
    )


WIDE = nas("10.0.0.0/8", "secret-wide", "wide")
NARROW = nas("10.1.0.0/16", "secret-narrow", "narrow")
HOST = nas("10.1.2.3/32", "secret-host", "host")
V6_WIDE = nas("2001:db8::/32", "secret-v6-wide", "v6-wide")
V6_NARROW = nas("2001:db8:1::/48", "secret-v6-narrow", "v6-narrow")
LINK_LOCAL = nas("fe80::/10", "secret-ll", "link-local")
STRICT = nas("192.0.2.0/24", "secret-strict", "strict", require_ma=True)
LEGACY = nas("198.51.100.0/24", "secret-legacy", "legacy", require_ma=True, limit_proxy_state=False)
ALL = [WIDE, NARROW, HOST, V6_WIDE, V6_NARROW, LINK_LOCAL, STRICT, LEGACY]

GW = ("10.5.5.5", 40000)  # matched by WIDE
GW_SECRET = b"secret-wide"


# --------------------------------------------------------------------------- fakes


class FakeTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []
        self.closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return self.closing


ReplyFn = Callable[[Request, bool, int], bytes | None]


def numbered_reply(request: Request, accounting_port: bool, call: int) -> bytes:
    """Distinct bytes per handler call, so a replayed reply is recognisable."""
    return b"reply#%d" % call


def real_reply(request: Request, accounting_port: bool, call: int) -> bytes:
    """What the real handler answers, so a pyrad client can verify it."""
    if request.code == STATUS_SERVER:
        return CODEC.status_reply(request, accounting_port=accounting_port)
    if request.code == ACCOUNTING_REQUEST:
        return CODEC.acct_reply(request)
    return CODEC.auth_reply(request, accept=True, attributes=[("h323-credit-time", call)])


class FakeHandler:
    def __init__(self, reply: ReplyFn = numbered_reply) -> None:
        self.reply = reply
        self.calls: list[tuple[Request, NasConfig, str, bool]] = []
        self.gate: asyncio.Event | None = None  # calls wait on it when gated(request)
        self.gated: Callable[[Request], bool] = lambda request: True
        self.errors: list[Exception] = []  # raised by the next calls, in order

    async def __call__(
        self, request: Request, nas: NasConfig, source_ip: str, accounting_port: bool
    ) -> bytes | None:
        self.calls.append((request, nas, source_ip, accounting_port))
        call = len(self.calls)
        if self.gate is not None and self.gated(request):
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return self.reply(request, accounting_port, call)


class Rig:
    def __init__(
        self,
        handler: FakeHandler | None = None,
        entries: Sequence[NasConfig] = ALL,
        *,
        max_in_flight: int = 100,
        ttl: float = 30.0,
        size: int = 1000,
    ) -> None:
        self.handler = handler or FakeHandler()
        self.metrics = Metrics()
        self.server = RadiusServer(
            CODEC,
            NasTable(entries),
            self.handler,
            self.metrics,
            max_in_flight=max_in_flight,
            duplicate_ttl=ttl,
            duplicate_size=size,
        )
        self.transport = FakeTransport()

    def send(self, data: bytes, addr: tuple[Any, ...] = GW, *, acct: bool = False) -> None:
        self.server.receive(data, addr, self.transport, acct)

    async def settle(self) -> None:
        """Let every started task run to completion (and its done callback)."""
        for _ in range(5):
            await asyncio.sleep(0)
        while self.server.tasks:
            await asyncio.gather(*list(self.server.tasks), return_exceptions=True)
            await asyncio.sleep(0)

    @property
    def replies(self) -> list[bytes]:
        return [data for data, _addr in self.transport.sent]

    def dropped(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value("radiusd_dropped_total", {"reason": reason})
        return value or 0.0

    def requests(self, kind: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "radiusd_requests_total", {"type": kind, "result": result}
        )
        return value or 0.0

    def in_flight(self) -> float:
        value = self.metrics.registry.get_sample_value("radiusd_in_flight")
        return -1.0 if value is None else value


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


_ids = itertools.count(1)


def access(
    secret: bytes = GW_SECRET,
    *,
    ma: bool = False,
    proxy_state: Sequence[bytes] = (),
    ident: int | None = None,
    authenticator: bytes | None = None,
    user: str = "acme",
) -> tuple[Any, bytes]:
    pkt = rp.AuthPacket(dict=D, secret=secret, id=next(_ids) % 256 if ident is None else ident)
    if authenticator is not None:
        pkt.authenticator = authenticator
    if ma:
        pkt.add_message_authenticator()
    pkt.AddAttribute("User-Name", user)
    pkt.AddAttribute("Called-Station-Id", "15551230000")
    for state in proxy_state:
        pkt.AddAttribute("Proxy-State", state)
    return pkt, pkt.RequestPacket()


def accounting(
    secret: bytes = GW_SECRET, *, session: str = "s-1", ident: int = 7
) -> tuple[Any, bytes]:
    pkt = rp.AcctPacket(dict=D, secret=secret, id=ident)
    pkt.AddAttribute("Acct-Status-Type", "Start")
    pkt.AddAttribute("Acct-Session-Id", session)
    return pkt, pkt.RequestPacket()


def status(
    secret: bytes = GW_SECRET, *, ma: bool = True, accounting: bool = False
) -> tuple[Any, bytes]:
    cls = rp.AcctPacket if accounting else rp.AuthPacket
    pkt = cls(code=rp.StatusServer, dict=D, secret=secret, id=next(_ids) % 256)
    pkt.message_authenticator = ma
    return pkt, pkt.RequestPacket()


def verified(pkt: Any, raw_reply: bytes) -> bool:
    return bool(pkt.VerifyReply(pkt.CreateReply(packet=raw_reply), raw_reply, enforce_ma=True))


# --------------------------------------------------------------------------- NasTable


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("10.1.2.3", "host"),
        ("10.1.2.4", "narrow"),
        ("10.1.255.255", "narrow"),
        ("10.2.0.1", "wide"),
        ("10.0.0.0", "wide"),
        ("11.0.0.1", None),
        ("9.255.255.255", None),
        ("::ffff:10.1.2.3", "host"),
        ("::ffff:10.1.9.9", "narrow"),
        ("::ffff:10.200.0.1", "wide"),
        ("::ffff:11.0.0.1", None),
        ("2001:db8:1::5", "v6-narrow"),
        ("2001:db8:1:ffff::1", "v6-narrow"),
        ("2001:db8:2::5", "v6-wide"),
        ("2001:db9::1", None),
        ("::1", None),
        ("fe80::1%eth0", "link-local"),
        ("192.0.2.77", "strict"),
        ("not-an-address", None),
        ("", None),
    ],
)
def test_nas_lookup(source: str, expected: str | None) -> None:
    found = NasTable(ALL).lookup(source)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize("order", list(itertools.permutations([WIDE, NARROW, HOST])))
def test_nas_lookup_longest_prefix_whatever_the_order(order: tuple[NasConfig, ...]) -> None:
    table = NasTable(order)
    assert table.lookup("10.1.2.3") is HOST
    assert table.lookup("10.1.2.4") is NARROW
    assert table.lookup("10.9.9.9") is WIDE


def test_ipv4_and_ipv6_entries_never_match_across_families() -> None:
    table = NasTable([nas("0.0.0.0/0", "a", "any-v4"), nas("2001:db8::/32", "b", "v6")])
    assert table.lookup("2001:db9::1") is None
    assert table.lookup("203.0.113.9") is not None
    assert NasTable([nas("::/0", "c", "any-v6")]).lookup("203.0.113.9") is None
    assert NasTable([]).lookup("10.1.2.3") is None


def test_longest_prefix_decides_the_secret() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, signed_for_host = access(b"secret-host", ma=True)
        rig.send(signed_for_host, ("10.1.2.3", 1812))
        rig.send(signed_for_host, ("10.1.2.4", 1812))  # NARROW: another secret
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.handler.calls[0][1] is HOST
        assert rig.handler.calls[0][2] == "10.1.2.3"
        assert rig.dropped("bad_message_authenticator") == 1

    run(scenario)


def test_ipv4_mapped_and_ipv6_sources_are_served() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        pkt4, raw4 = access(b"secret-host", ma=True)
        rig.send(raw4, ("::ffff:10.1.2.3", 5060, 0, 0))
        pkt6, raw6 = access(b"secret-v6-narrow", ma=True)
        rig.send(raw6, ("2001:db8:1::7", 5060, 0, 0))
        await rig.settle()
        # the IPv4 switch is handled (NAS key, logs) as 10.1.2.3, as on an IPv4 socket
        assert [(c[1].name, c[2]) for c in rig.handler.calls] == [
            ("host", "10.1.2.3"),
            ("v6-narrow", "2001:db8:1::7"),
        ]
        assert len(rig.transport.sent) == 2
        assert rig.transport.sent[0][1] == ("::ffff:10.1.2.3", 5060, 0, 0)
        assert rig.transport.sent[1][1] == ("2001:db8:1::7", 5060, 0, 0)
        assert verified(pkt4, rig.replies[0])
        assert verified(pkt6, rig.replies[1])

    run(scenario)


def test_unknown_source_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = access()
        rig.send(raw, ("172.16.0.1", 1812))
        rig.send(raw, ("2001:db9::1", 1812, 0, 0))
        _, acct = accounting()
        rig.send(acct, ("172.16.0.1", 1813), acct=True)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.transport.sent == []
        assert rig.dropped("unknown_nas") == 3
        assert rig.requests("auth", "dropped") == 2
        assert rig.requests("acct", "dropped") == 1

    run(scenario)


# --------------------------------------------------------------------------- answering


def test_access_request_is_answered_by_the_handler() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        pkt, raw = access()
        rig.send(raw)
        assert rig.in_flight() == 1
        await rig.settle()
        assert rig.in_flight() == 0
        assert len(rig.handler.calls) == 1
        request, matched, source_ip, acct_port = rig.handler.calls[0]
        assert request.text("User-Name") == "acme"
        assert request.identifier == pkt.id
        assert (matched, source_ip, acct_port) == (WIDE, "10.5.5.5", False)
        assert len(rig.transport.sent) == 1
        assert rig.transport.sent[0][1] == GW
        assert rig.replies[0][0] == ACCESS_ACCEPT
        assert verified(pkt, rig.replies[0])
        assert rig.metrics.registry.get_sample_value("radiusd_dropped_total", {}) is None

    run(scenario)


def test_accounting_request_is_answered_on_the_accounting_port() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        pkt, raw = accounting()
        rig.send(raw, acct=True)
        await rig.settle()
        assert [c[3] for c in rig.handler.calls] == [True]
        assert rig.replies[0][0] == ACCOUNTING_RESPONSE
        assert pkt.VerifyReply(pkt.CreateReply(packet=rig.replies[0]), rig.replies[0]) is True

    run(scenario)


def test_accounting_request_with_the_wrong_secret_is_dropped() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = accounting(b"secret-narrow")
        rig.send(raw, acct=True)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.transport.sent == []
        assert rig.dropped("bad_authenticator") == 1
        assert rig.requests("acct", "dropped") == 1

    run(scenario)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x02\x03", "truncated"),
        (b"\x02\x01\x00\x14" + bytes(16), "unknown_code"),
        (b"\x01\x01\x00\x30" + bytes(16), "bad_length"),
    ],
)
def test_malformed_datagrams_are_dropped_by_reason(data: bytes, reason: str) -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.send(data)
        await rig.settle()
        assert rig.transport.sent == []
        assert rig.handler.calls == []
        assert rig.dropped(reason) == 1
        assert rig.requests("auth", "dropped") == 1

    run(scenario)


def test_wrong_port() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, auth_raw = access()
        rig.send(auth_raw, acct=True)
        _, acct_raw = accounting()
        rig.send(acct_raw, acct=False)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.transport.sent == []
        assert rig.dropped("wrong_port") == 2
        assert rig.requests("acct", "dropped") == 1
        assert rig.requests("auth", "dropped") == 1

    run(scenario)


# ----------------------------------------------------------------- Message-Authenticator rules


def test_require_message_authenticator() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        _, without = access(b"secret-strict")
        rig.send(without, ("192.0.2.10", 1000))
        pkt, with_ma = access(b"secret-strict", ma=True)
        rig.send(with_ma, ("192.0.2.10", 1000))
        await rig.settle()
        assert rig.dropped("missing_message_authenticator") == 1
        assert len(rig.handler.calls) == 1
        assert rig.handler.calls[0][0].has_message_authenticator is True
        assert len(rig.replies) == 1
        assert verified(pkt, rig.replies[0])

    run(scenario)


def test_without_require_a_request_without_ma_is_answered() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        pkt, raw = access()
        rig.send(raw)
        await rig.settle()
        assert len(rig.replies) == 1
        assert raw_first_attribute(rig.replies[0]) == 80  # the reply still carries an MA
        assert verified(pkt, rig.replies[0])

    run(scenario)


def raw_first_attribute(raw: bytes) -> int:
    return raw[20]


def test_limit_proxy_state() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        _, without_ma = access(proxy_state=[b"ps-1"])
        rig.send(without_ma)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.transport.sent == []
        assert rig.dropped("proxy_state_without_message_authenticator") == 1
        pkt, with_ma = access(ma=True, proxy_state=[b"ps-1", b"ps-2"])
        rig.send(with_ma)
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert len(rig.replies) == 1
        assert raw_first_attribute(rig.replies[0]) == 80
        assert verified(pkt, rig.replies[0])
        assert pkt.CreateReply(packet=rig.replies[0])[33] == [b"ps-1", b"ps-2"]

    run(scenario)


def test_proxy_state_without_ma_passes_when_limit_is_off_but_require_drops_it() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = access(b"secret-legacy", proxy_state=[b"ps"])
        rig.send(raw, ("198.51.100.1", 1))
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.dropped("missing_message_authenticator") == 1

    run(scenario)


def test_a_wrong_message_authenticator_is_always_dropped() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = access(b"wrong", ma=True)  # WIDE: require_ma is off
        rig.send(raw)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.dropped("bad_message_authenticator") == 1

    run(scenario)


@pytest.mark.parametrize("acct_port", [False, True], ids=["auth-port", "acct-port"])
def test_status_server(acct_port: bool) -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        _, without = status(ma=False, accounting=acct_port)
        rig.send(without, acct=acct_port)
        await rig.settle()
        assert rig.handler.calls == []
        assert rig.transport.sent == []
        assert rig.dropped("missing_message_authenticator") == 1
        pkt, with_ma = status(ma=True, accounting=acct_port)
        rig.send(with_ma, acct=acct_port)
        await rig.settle()
        assert [(c[0].code, c[3]) for c in rig.handler.calls] == [(STATUS_SERVER, acct_port)]
        assert len(rig.replies) == 1
        assert rig.replies[0][0] == (ACCOUNTING_RESPONSE if acct_port else ACCESS_ACCEPT)
        assert raw_first_attribute(rig.replies[0]) == 80
        assert verified(pkt, rig.replies[0])

    run(scenario)


# --------------------------------------------------------------------------- duplicates


def test_duplicate_in_flight_is_dropped_then_replayed_from_the_cache() -> None:
    async def scenario() -> None:
        rig = Rig(FakeHandler(real_reply))
        rig.handler.gate = asyncio.Event()
        pkt, raw = access(ma=True)
        rig.send(raw)
        await asyncio.sleep(0)
        rig.send(raw)  # retransmission while the first is being handled
        await asyncio.sleep(0)
        assert len(rig.handler.calls) == 1
        assert rig.transport.sent == []
        assert rig.dropped("duplicate_in_flight") == 1
        rig.handler.gate.set()
        await rig.settle()
        assert len(rig.replies) == 1
        first = rig.replies[0]
        assert verified(pkt, first)
        rig.send(raw)
        rig.send(raw)
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.replies == [first, first, first]  # byte-identical
        assert all(addr == GW for _data, addr in rig.transport.sent)
        assert rig.requests("auth", "duplicate") == 2

    run(scenario)


def test_accounting_duplicate_is_replayed() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = accounting()
        rig.send(raw, acct=True)
        await rig.settle()
        rig.send(raw, acct=True)
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.replies == [b"reply#1", b"reply#1"]
        assert rig.requests("acct", "duplicate") == 1

    run(scenario)


def test_same_id_other_authenticator_is_a_new_request() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, first = access(ident=9, authenticator=b"A" * 16)
        _, second = access(ident=9, authenticator=b"B" * 16)
        assert first[1] == second[1] == 9
        rig.send(first)
        await rig.settle()
        rig.send(second)
        await rig.settle()
        assert len(rig.handler.calls) == 2
        assert rig.replies == [b"reply#1", b"reply#2"]
        # and a changed accounting packet with the same id is new too (its authenticator differs)
        _, a1 = accounting(session="x-1", ident=200)
        _, a2 = accounting(session="x-2", ident=200)
        rig.send(a1, acct=True)
        rig.send(a2, acct=True)
        await rig.settle()
        assert rig.replies == [b"reply#1", b"reply#2", b"reply#3", b"reply#4"]

    run(scenario)


def test_same_packet_from_another_source_port_is_a_new_request() -> None:
    async def scenario() -> None:
        rig = Rig()
        _, raw = access()
        rig.send(raw, ("10.5.5.5", 1000))
        rig.send(raw, ("10.5.5.5", 1001))
        await rig.settle()
        assert len(rig.handler.calls) == 2
        assert sorted(rig.transport.sent) == [
            (b"reply#1", ("10.5.5.5", 1000)),
            (b"reply#2", ("10.5.5.5", 1001)),
        ]

    run(scenario)


def test_duplicate_cache_expires_after_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(transport_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))

    async def scenario() -> None:
        rig = Rig(ttl=30.0)
        _, raw = access()
        rig.send(raw)
        await rig.settle()
        clock[0] += 29.0
        rig.send(raw)  # still cached
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.replies == [b"reply#1", b"reply#1"]
        clock[0] += 1.5  # 30.5 s after the reply
        rig.send(raw)
        await rig.settle()
        assert len(rig.handler.calls) == 2
        assert rig.replies == [b"reply#1", b"reply#1", b"reply#2"]

    run(scenario)


def test_duplicate_cache_ttl_zero_caches_nothing() -> None:
    async def scenario() -> None:
        rig = Rig(ttl=0.0)
        _, raw = access()
        rig.send(raw)
        await rig.settle()
        rig.send(raw)
        await rig.settle()
        assert rig.replies == [b"reply#1", b"reply#2"]

    run(scenario)


def test_duplicate_cache_is_bounded_lru() -> None:
    async def scenario() -> None:
        rig = Rig(size=2)
        raws = [access()[1] for _ in range(3)]
        for raw in raws:
            rig.send(raw)
            await rig.settle()
        assert rig.replies == [b"reply#1", b"reply#2", b"reply#3"]
        rig.send(raws[2])  # newest: cached
        await rig.settle()
        rig.send(raws[0])  # oldest: evicted, handled again
        await rig.settle()
        assert rig.replies == [b"reply#1", b"reply#2", b"reply#3", b"reply#3", b"reply#4"]

    run(scenario)


def test_in_flight_marker_survives_a_full_cache() -> None:
    async def scenario() -> None:
        rig = Rig(size=1)
        rig.handler.gate = asyncio.Event()
        rig.handler.gated = lambda request: request.text("User-Name") == "slow"
        _, slow = access(user="slow")
        _, quick = access(user="quick")
        rig.send(slow)
        await asyncio.sleep(0)
        rig.send(quick)  # answered while "slow" is in flight; the cache holds one entry
        await asyncio.sleep(0.01)
        assert rig.replies == [b"reply#2"]
        rig.send(slow)  # retransmission of the request in flight: must be dropped
        await asyncio.sleep(0)
        rig.handler.gate.set()
        await rig.settle()
        assert [c[0].text("User-Name") for c in rig.handler.calls] == ["slow", "quick"]
        assert rig.dropped("duplicate_in_flight") == 1
        assert rig.replies == [b"reply#2", b"reply#1"]

    run(scenario)


def test_handler_returning_none_is_not_cached() -> None:
    """Accounting that could not be recorded is left unanswered; the retry is handled again."""

    async def scenario() -> None:
        rig = Rig(FakeHandler(lambda request, acct, call: None if call == 1 else b"stored"))
        _, raw = accounting()
        rig.send(raw, acct=True)
        await rig.settle()
        assert rig.transport.sent == []
        rig.send(raw, acct=True)
        await rig.settle()
        assert len(rig.handler.calls) == 2
        assert rig.replies == [b"stored"]

    run(scenario)


def test_no_reply_on_a_closing_transport() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.transport.closing = True
        rig.send(access()[1])
        await rig.settle()
        assert len(rig.handler.calls) == 1
        assert rig.transport.sent == []

    run(scenario)


# --------------------------------------------------------------------------- load and errors


def test_max_in_flight_drops_overload_and_recovers() -> None:
    async def scenario() -> None:
        rig = Rig(max_in_flight=2)
        rig.handler.gate = asyncio.Event()
        raws = [access()[1] for _ in range(4)]
        rig.send(raws[0])
        rig.send(raws[1])
        rig.send(raws[2])  # over the bound
        rig.send(raws[3], acct=False)
        _, acct = accounting()
        rig.send(acct, acct=True)
        await asyncio.sleep(0)
        assert rig.in_flight() == 2
        assert len(rig.handler.calls) == 2
        assert rig.dropped("overload") == 3
        assert rig.requests("auth", "dropped") == 2
        assert rig.requests("acct", "dropped") == 1
        rig.handler.gate.set()
        await rig.settle()
        assert rig.in_flight() == 0
        assert rig.replies == [b"reply#1", b"reply#2"]
        rig.send(raws[2])  # the NAS retransmits: now there is room
        rig.send(acct, acct=True)
        await rig.settle()
        assert rig.replies == [b"reply#1", b"reply#2", b"reply#3", b"reply#4"]
        assert rig.dropped("overload") == 3

    run(scenario)


def test_handler_exception_gives_no_reply_and_the_next_request_is_answered() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.handler.errors.append(RuntimeError("database exploded"))
        _, failing = access()
        rig.send(failing)
        await rig.settle()
        assert rig.transport.sent == []
        assert rig.dropped("handler_error") == 1
        assert rig.requests("auth", "error") == 1
        assert rig.in_flight() == 0
        _, other = access()
        rig.send(other)
        await rig.settle()
        assert rig.replies == [b"reply#2"]
        rig.send(failing)  # the failed one is not cached: its retransmission is handled
        await rig.settle()
        assert rig.replies == [b"reply#2", b"reply#3"]
        assert len(rig.handler.calls) == 3
        assert rig.dropped("handler_error") == 1

    run(scenario)


def test_drain() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.handler.gate = asyncio.Event()
        rig.send(access()[1])
        await asyncio.sleep(0)
        assert await rig.server.drain(0.01) is False
        rig.handler.gate.set()
        assert await rig.server.drain(1.0) is True
        await rig.settle()
        assert rig.replies == [b"reply#1"]
        assert await rig.server.drain(0.0) is True

    run(scenario)


# --------------------------------------------------------------------------- DuplicateCache


def test_duplicate_cache_states() -> None:
    cache = DuplicateCache(ttl=10.0, size=10)
    key = ("10.0.0.1", 1, 1, 5, b"x" * 16)
    assert cache.get(key, 0.0) is None
    cache.begin(key)
    marker = cache.get(key, 0.0)
    assert marker is not None
    assert not isinstance(marker, bytes)
    assert cache.get(key, 1e12) is marker  # in flight never expires
    cache.done(key, b"reply", 100.0)
    assert cache.get(key, 105.0) == b"reply"
    assert cache.get(key, 110.0) == b"reply"
    assert cache.get(key, 110.001) is None
    assert cache.get(key, 0.0) is None  # expired entries are removed
    cache.begin(key)
    cache.done(key, None, 200.0)
    assert cache.get(key, 200.0) is None
