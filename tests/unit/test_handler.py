"""radiusd.handler without sockets or a database: decoded requests in, reply bytes out.

``Handler`` is driven with in-memory fakes of its two billing_core calls (``authorize`` and
``record``), inside ``asyncio.run`` (no pytest-asyncio). The replies are read back with
pyrad, as a switch would, and checked against the contract's table of codes."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pyrad import packet as rp

from billing_core.config import Dialect, NasConfig, Secret
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.model import Client, RejectReason
from billing_core.domain.policy import Accept, Reject
from billing_core.errors import Dependency, Unavailable
from billing_core.services.accounting import AcctOutcome
from billing_core.services.authorization import AuthFailure, AuthorizeCall, AuthOutcome
from radiusd.codec import DIALECT_DICTIONARIES, Codec, Request, load_dictionary
from radiusd.handler import Handler
from radiusd.metrics import Metrics
from radiusd.transport import NasTable, RadiusServer

D: Any = load_dictionary()
CODEC = Codec(D)
CODECS = {d: Codec(load_dictionary(dialect=d)) for d in DIALECT_DICTIONARIES if d != "cisco"}
SECRET = b"testing123"
SOURCE = "10.0.0.1"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CLIENT = Client(
    id=7,
    name="Acme",
    status="active",
    currency="USD",
    locale="es",
    postpaid=False,
    credit=Decimal("0"),
    rate_table_id=1,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="disconnect",
)
POSTPAID = Client(**{**{s: getattr(CLIENT, s) for s in Client.__slots__}, "postpaid": True})


def nas(dialect: Dialect = "cisco") -> NasConfig:
    return NasConfig(
        address=ipaddress.ip_network(f"{SOURCE}/32"),
        secret=Secret(SECRET.decode()),
        name="gw",
        dialect=dialect,
    )


# --------------------------------------------------------------------------- fakes


@dataclass
class FakeAuthorization:
    """``AuthorizationService.authorize``: the outcome it is given, or the error."""

    outcome: AuthOutcome | None = None
    error: Exception | None = None
    calls: list[AuthorizeCall] = field(default_factory=list)

    async def authorize(self, request: AuthorizeCall) -> AuthOutcome:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


@dataclass
class FakeAccounting:
    """The group committer's ``submit``: answers once ``committed`` is set."""

    outcome: AcctOutcome = field(default_factory=lambda: AcctOutcome("recorded"))
    error: Exception | None = None
    committed: asyncio.Event | None = None
    recorded: list[AccountingEvent] = field(default_factory=list)

    async def record(self, event: AccountingEvent) -> AcctOutcome:
        if self.committed is not None:
            await self.committed.wait()
        if self.error is not None:
            raise self.error
        self.recorded.append(event)
        return self.outcome


def handler(
    authorization: FakeAuthorization | None = None, accounting: FakeAccounting | None = None
) -> Handler:
    return Handler(
        CODEC,
        (authorization or FakeAuthorization()).authorize,
        (accounting or FakeAccounting()).record,
        Metrics(),
        clock=lambda: NOW,
        codecs=CODECS,
    )


def access_request(**attributes: Any) -> tuple[Any, Request]:
    """A switch's Access-Request (pyrad, with a Message-Authenticator) and its decoding."""
    packet = rp.AuthPacket(code=rp.AccessRequest, id=7, secret=SECRET, dict=D)
    for name, value in {
        "User-Name": "acme",
        "Called-Station-Id": "15551234567",
        "Acct-Session-Id": "call-1",
        **attributes,
    }.items():
        packet[name] = value
    packet.add_message_authenticator()
    return packet, CODEC.decode(packet.RequestPacket(), SECRET)


def accounting_request(**attributes: Any) -> tuple[Any, Request]:
    packet = rp.AcctPacket(code=rp.AccountingRequest, id=9, secret=SECRET, dict=D)
    for name, value in {"Acct-Status-Type": "Start", "User-Name": "acme", **attributes}.items():
        packet[name] = value
    return packet, CODEC.decode(packet.RequestPacket(), SECRET)


def read_reply(packet: Any, raw: bytes | None) -> tuple[int, dict[str, list[Any]]]:
    """(code, attributes) of a reply as the switch reads it; a bad reply fails the test."""
    assert raw is not None, "no reply"
    reply = packet.CreateReply(packet=raw)
    assert packet.VerifyReply(reply, raw, enforce_ma=packet.code != rp.AccountingRequest)
    return reply.code, {name: reply[name] for name in reply.keys()}  # noqa: SIM118 - names; iterating gives codes


def handle(h: Handler, request: Request, dialect: Dialect = "cisco", acct: bool = False) -> Any:
    return asyncio.run(h.handle(request, nas(dialect), SOURCE, acct))


def counted(h: Handler, name: str, **labels: str) -> float:
    h.metrics.flush()
    return h.metrics.registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------- Access-Request

PREPAID_ACCEPT = AuthOutcome(Accept(600, Decimal("1.00"), Decimal("5.259")), CLIENT)

ACCEPTS: list[tuple[str, AuthOutcome, Dialect, dict[str, list[Any]]]] = [
    (
        "prepaid",
        PREPAID_ACCEPT,
        "cisco",
        {
            "h323-return-code": ["h323-return-code=0"],
            "h323-credit-time": ["h323-credit-time=600"],
            "Session-Timeout": [600],
            "h323-billing-model": ["h323-billing-model=1"],
            "h323-credit-amount": ["h323-credit-amount=5.25"],  # rounded toward -infinity
            "h323-currency": ["h323-currency=USD"],
            "h323-preferred-lang": ["h323-preferred-lang=es"],
        },
    ),
    (
        "postpaid",
        AuthOutcome(Accept(7200, Decimal("0"), None), POSTPAID),
        "cisco",
        {
            "h323-return-code": ["h323-return-code=0"],
            "h323-credit-time": ["h323-credit-time=7200"],
            "Session-Timeout": [7200],
            "h323-billing-model": ["h323-billing-model=0"],
            "h323-currency": ["h323-currency=USD"],
            "h323-preferred-lang": ["h323-preferred-lang=es"],
        },
    ),
    (
        "authentication only",
        AuthOutcome(Accept(None, Decimal("0"), Decimal("3")), CLIENT),
        "cisco",
        {
            "h323-return-code": ["h323-return-code=0"],
            "h323-billing-model": ["h323-billing-model=1"],
            "h323-credit-amount": ["h323-credit-amount=3.00"],
            "h323-currency": ["h323-currency=USD"],
            "h323-preferred-lang": ["h323-preferred-lang=es"],
        },
    ),
]


@pytest.mark.parametrize(
    ("outcome", "dialect", "expected"),
    [case[1:] for case in ACCEPTS],
    ids=[case[0] for case in ACCEPTS],
)
def test_an_accept_carries_the_grant_and_the_client_terms(
    outcome: AuthOutcome, dialect: Dialect, expected: dict[str, list[Any]]
) -> None:
    authorization = FakeAuthorization(outcome)
    h = handler(authorization)
    packet, request = access_request()
    code, attributes = read_reply(packet, handle(h, request, dialect))
    assert code == rp.AccessAccept
    attributes.pop("Message-Authenticator")
    assert attributes == expected
    assert counted(h, "radiusd_requests_total", type="auth", result="accept") == 1
    # the one call got the request as the switch sent it
    [command] = authorization.calls
    assert (command.caller.user_name, command.caller.called) == ("acme", "15551234567")
    assert command.arrived == NOW and "call-1" in command.identifiers


def test_a_kamailio_accept_also_carries_the_grant_as_a_sip_avp() -> None:
    h = handler(FakeAuthorization(PREPAID_ACCEPT))
    packet, request = access_request()
    raw = handle(h, request, "kamailio")
    kamailio = rp.AuthPacket(
        code=rp.AccessRequest, id=7, secret=SECRET, dict=load_dictionary(dialect="kamailio")
    )
    kamailio.authenticator = packet.authenticator
    reply = kamailio.CreateReply(packet=raw)
    assert reply["SIP-AVP"] == ["credit_time:600"]
    assert reply["Session-Timeout"] == [600]


# (reason, h323-return-code): CONTRACT.md §3, the table of checks; one row per reason
REJECTS = [
    (RejectReason.UNKNOWN_ACCOUNT, 1),
    (RejectReason.BAD_PASSWORD, 2),
    (RejectReason.LOCKED_OUT, 2),
    (RejectReason.CLIENT_DELETED, 1),
    (RejectReason.CLIENT_STOPPED, 7),
    (RejectReason.NO_RATE, 9),
    (RejectReason.CAPACITY, 3),
    (RejectReason.ZERO_BALANCE, 4),
    (RejectReason.CREDIT_LIMIT, 6),
    (RejectReason.INSUFFICIENT_FUNDS, 12),
]


def test_the_reject_table_covers_every_reason() -> None:
    assert {reason for reason, _code in REJECTS} == set(RejectReason)


@pytest.mark.parametrize(("reason", "return_code"), REJECTS, ids=[r.value for r, _ in REJECTS])
def test_each_reject_gets_its_code_and_a_message(reason: RejectReason, return_code: int) -> None:
    h = handler(FakeAuthorization(AuthOutcome(Reject(reason))))
    packet, request = access_request()
    code, attributes = read_reply(packet, handle(h, request))
    assert code == rp.AccessReject
    assert attributes["h323-return-code"] == [f"h323-return-code={return_code}"]
    [message] = attributes["Reply-Message"]
    assert message.strip()
    assert "h323-credit-time" not in attributes and "Session-Timeout" not in attributes
    assert counted(h, "radiusd_rejects_total", reason=reason.value) == 1
    assert counted(h, "radiusd_requests_total", type="auth", result="reject") == 1


def test_a_refused_password_is_counted_by_method_and_reason() -> None:
    outcome = AuthOutcome(
        Reject(RejectReason.BAD_PASSWORD), CLIENT, failure=AuthFailure("chap", "wrong")
    )
    h = handler(FakeAuthorization(outcome))
    packet, request = access_request()
    code, _attributes = read_reply(packet, handle(h, request))
    assert code == rp.AccessReject
    assert counted(h, "radiusd_auth_failures_total", method="chap", reason="wrong") == 1


# --------------------------------------------------------------------------- no reply

OUTAGES: list[tuple[str, Callable[[Exception], tuple[Handler, Request]]]] = [
    ("auth", lambda error: (handler(FakeAuthorization(error=error)), access_request()[1])),
    (
        "acct",
        lambda error: (
            handler(accounting=FakeAccounting(error=error)),
            accounting_request(**{"Acct-Session-Id": "s1"})[1],
        ),
    ),
]


@pytest.mark.parametrize("dependency", ["database", "redis"])
@pytest.mark.parametrize(("kind", "make"), OUTAGES, ids=[kind for kind, _ in OUTAGES])
def test_an_unavailable_dependency_leaves_the_request_unanswered(
    kind: str, make: Callable[[Exception], tuple[Handler, Request]], dependency: Dependency
) -> None:
    """The handler raises; the transport counts the outage by name and sends nothing."""
    h, request = make(Unavailable(dependency))
    with pytest.raises(Unavailable):
        handle(h, request, acct=kind == "acct")
    sent: list[bytes] = []

    class Transport:
        def sendto(self, data: bytes, addr: Any) -> None:
            sent.append(data)

        def is_closing(self) -> bool:
            return False

    server = RadiusServer(
        CODEC,
        NasTable([nas()]),
        h.handle,
        h.metrics,
        max_in_flight=10,
        duplicate_ttl=30,
        duplicate_size=100,
        codecs=CODECS,
    )

    async def through_the_transport() -> None:
        server.receive(request.raw, (SOURCE, 4000), Transport(), kind == "acct")  # type: ignore[arg-type]
        await server.drain(5)

    asyncio.run(through_the_transport())
    assert sent == []
    assert counted(h, "radiusd_dropped_total", reason=f"{dependency}_unavailable") == 1
    assert counted(h, "radiusd_requests_total", type=kind, result="error") == 1
    assert counted(h, "radiusd_requests_total", type=kind, result="answered") == 0


# --------------------------------------------------------------------------- accounting

ACCOUNTING: list[tuple[str, AcctOutcome, dict[str, float]]] = [
    ("recorded", AcctOutcome("recorded"), {}),
    (
        "charged",
        AcctOutcome("charged", client_id=7, cost=Decimal("0.10"), duration=60),
        {},
    ),
    (
        "unknown account",
        AcctOutcome("unknown_account"),
        {"radiusd_rejects_total": 1},
    ),
    (
        "collision",
        AcctOutcome("charged", client_id=7, cost=Decimal("0.10"), duration=60, collision=True),
        {"radiusd_session_id_collisions_total": 1},
    ),
]


@pytest.mark.parametrize(
    ("outcome", "metrics"), [case[1:] for case in ACCOUNTING], ids=[c[0] for c in ACCOUNTING]
)
def test_accounting_is_answered_only_once_recorded(
    outcome: AcctOutcome, metrics: dict[str, float]
) -> None:
    async def scenario() -> tuple[Any, list[AccountingEvent], bool, bytes | None]:
        accounting = FakeAccounting(outcome, committed=asyncio.Event())
        h = handler(accounting=accounting)
        packet, request = accounting_request(
            **{"Acct-Status-Type": "Stop", "Acct-Session-Id": "s1", "Acct-Session-Time": 60}
        )
        task = asyncio.create_task(h.handle(request, nas(), SOURCE, True))
        await asyncio.sleep(0.01)
        waiting = not task.done() and accounting.recorded == []
        assert accounting.committed is not None
        accounting.committed.set()
        raw = await task
        for name, value in metrics.items():
            labels = {"reason": "unknown_account"} if name == "radiusd_rejects_total" else {}
            assert counted(h, name, **labels) == value
        assert counted(h, "radiusd_requests_total", type="acct", result="answered") == 1
        return packet, accounting.recorded, waiting, raw

    packet, recorded, waiting, raw = asyncio.run(scenario())
    assert waiting, "answered before the record committed"
    code, _attributes = read_reply(packet, raw)
    assert code == rp.AccountingResponse
    [event] = recorded
    assert (event.acct_session_id, event.nas_key, event.session_time) == ("s1", "gw|10.0.0.1", 60)


def test_accounting_without_a_session_id_is_dropped_unrecorded() -> None:
    accounting = FakeAccounting()
    h = handler(accounting=accounting)
    _packet, request = accounting_request()
    assert handle(h, request, acct=True) is None
    assert accounting.recorded == []
    assert counted(h, "radiusd_dropped_total", reason="malformed_accounting") == 1


def test_status_server_is_answered_without_a_billing_call() -> None:
    authorization, accounting = FakeAuthorization(), FakeAccounting()
    h = handler(authorization, accounting)
    for accounting_port, cls, expected in (
        (False, rp.AuthPacket, rp.AccessAccept),
        (True, rp.AcctPacket, rp.AccountingResponse),
    ):
        packet = cls(code=rp.StatusServer, id=3, secret=SECRET, dict=D)
        packet.message_authenticator = True
        request = CODEC.decode(packet.RequestPacket(), SECRET)
        code, _attributes = read_reply(packet, handle(h, request, acct=accounting_port))
        assert code == expected
    assert authorization.calls == [] and accounting.recorded == []
