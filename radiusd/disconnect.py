"""Disconnect-Request (RFC 5176): ask a NAS to end a call in progress.

The packet is built and its answer checked here (sans-IO functions), and a background job
of the primary process sends the queue (billing_core.adapters.sql.disconnect): for each
row, a Disconnect-Request to the call's NAS on its ``coa_port`` with the NAS's secret,
carrying User-Name, Acct-Session-Id, NAS-IP-Address, the call's h323-conf-id and
Cisco-AVPair ``call-id`` as the NAS sent them, and a Message-Authenticator. It is sent up
to ``tries`` times, ``timeout`` seconds apart, with the same Identifier; the ACK, the NAK
(with its Error-Cause) or the silence is recorded in the events log and counted in
``radiusd_disconnects_total{result}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from billing_core.config import NasConfig
from billing_core.ports import DisconnectQueue, WantedDisconnect

from .logging import get_logger
from .metrics import Metrics

DISCONNECT_REQUEST = 40
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42

USER_NAME = 1
NAS_IP_ADDRESS = 4
VENDOR_SPECIFIC = 26
ACCT_SESSION_ID = 44
MESSAGE_AUTHENTICATOR = 80
ERROR_CAUSE = 101
CISCO = 9
CISCO_AVPAIR = 1
H323_CONF_ID = 24


@dataclass(frozen=True, slots=True)
class DisconnectCall:
    """What identifies the call to its NAS."""

    acct_session_id: str
    user_name: str | None = None
    nas_ip: str | None = None
    conf_id: str | None = None  # h323-conf-id as the NAS sent it
    call_id: str | None = None  # Cisco-AVPair call-id


@dataclass(frozen=True, slots=True)
class Answer:
    result: str  # ack | nak
    error_cause: int | None = None


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!BB", kind, len(value) + 2) + value


def _cisco(kind: int, text: str) -> bytes:
    inner = _attr(kind, text.encode())
    return _attr(VENDOR_SPECIFIC, struct.pack("!I", CISCO) + inner)


def _text_value(raw: str, prefix: str) -> str:
    return raw[len(prefix) :] if raw.startswith(prefix) else raw


def build_request(call: DisconnectCall, identifier: int, secret: bytes) -> bytes:
    """The Disconnect-Request: Request Authenticator = MD5(packet with a zero authenticator
    + secret), its Message-Authenticator computed first over that same zero authenticator
    (RFC 5176 §3.5, RFC 3579 §3.2)."""
    attrs = bytearray()
    if call.user_name:
        attrs += _attr(USER_NAME, call.user_name.encode()[:253])
    attrs += _attr(ACCT_SESSION_ID, call.acct_session_id.encode()[:253])
    if call.nas_ip:
        try:
            address = ipaddress.ip_address(call.nas_ip)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv4Address):
            attrs += _attr(NAS_IP_ADDRESS, address.packed)
    if call.conf_id:
        attrs += _cisco(H323_CONF_ID, "h323-conf-id=" + _text_value(call.conf_id, "h323-conf-id="))
    if call.call_id:
        attrs += _cisco(CISCO_AVPAIR, "call-id=" + call.call_id)
    ma_offset = 20 + len(attrs) + 2
    attrs += _attr(MESSAGE_AUTHENTICATOR, bytes(16))
    length = 20 + len(attrs)
    packet = bytearray(struct.pack("!BBH", DISCONNECT_REQUEST, identifier, length))
    packet += bytes(16) + attrs
    packet[ma_offset : ma_offset + 16] = hmac.new(secret, bytes(packet), hashlib.md5).digest()
    authenticator = hashlib.md5(bytes(packet) + secret, usedforsecurity=False).digest()
    packet[4:20] = authenticator
    return bytes(packet)


def _attributes(packet: bytes) -> list[tuple[int, int, bytes]]:
    """(type, offset of the value, value) of each attribute; ValueError when malformed."""
    found: list[tuple[int, int, bytes]] = []
    offset = 20
    while offset < len(packet):
        if offset + 2 > len(packet):
            raise ValueError("truncated attribute")
        kind, size = packet[offset], packet[offset + 1]
        if size < 2 or offset + size > len(packet):
            raise ValueError("bad attribute length")
        found.append((kind, offset + 2, packet[offset + 2 : offset + size]))
        offset += size
    return found


def parse_answer(packet: bytes, request: bytes, secret: bytes) -> Answer | None:
    """The NAS's answer to ``request``, or None when it is not one (wrong Identifier, code
    or authenticator, a wrong Message-Authenticator, a broken packet)."""
    if len(packet) < 20:
        return None
    code, identifier, length = struct.unpack("!BBH", packet[:4])
    if identifier != request[1] or code not in (DISCONNECT_ACK, DISCONNECT_NAK):
        return None
    if length != len(packet):
        return None
    expected = hashlib.md5(
        packet[:4] + request[4:20] + packet[20:] + secret, usedforsecurity=False
    ).digest()
    if not hmac.compare_digest(expected, packet[4:20]):
        return None
    try:
        attrs = _attributes(packet)
    except ValueError:
        return None
    error_cause: int | None = None
    for kind, offset, value in attrs:
        if kind == MESSAGE_AUTHENTICATOR:
            zeroed = bytearray(packet)
            zeroed[4:20] = request[4:20]
            zeroed[offset : offset + 16] = bytes(16)
            mac = hmac.new(secret, bytes(zeroed), hashlib.md5).digest()
            if not hmac.compare_digest(mac, value):
                return None
        elif kind == ERROR_CAUSE and len(value) == 4:
            error_cause = struct.unpack("!I", value)[0]
    return Answer("ack" if code == DISCONNECT_ACK else "nak", error_cause)


def call_of(wanted: WantedDisconnect) -> DisconnectCall:
    """The identifiers of a queued call, from its last Accounting-Request as received."""
    attrs = wanted.attributes

    def first(name: str) -> str | None:
        values = attrs.get(name) or []
        return str(values[0]) if values else None

    call_id = None
    for pair in attrs.get("Cisco-AVPair") or []:
        key, sep, value = str(pair).partition("=")
        if sep and key.strip().lower() == "call-id":
            call_id = value.strip()
            break
    nas_ip = first("NAS-IP-Address")
    if nas_ip is None:
        tail = wanted.nas_key.rpartition("|")[2]
        nas_ip = tail if _is_ipv4(tail) else None
    return DisconnectCall(
        acct_session_id=wanted.acct_session_id,
        user_name=first("User-Name"),
        nas_ip=nas_ip,
        conf_id=first("h323-conf-id") or (wanted.conf_id or None),
        call_id=call_id,
    )


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def destination(nas: NasConfig, call: DisconnectCall) -> str | None:
    """The NAS's address: its [[nas]] address when that is one host, else the call's
    NAS-IP-Address when the entry's network holds it."""
    if nas.address.num_addresses == 1:
        return str(nas.address.network_address)
    if call.nas_ip:
        try:
            if ipaddress.ip_address(call.nas_ip) in nas.address:
                return call.nas_ip
        except ValueError:
            return None
    return None


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, request: bytes, secret: bytes) -> None:
        self.request = request
        self.secret = secret
        self.answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        answer = parse_answer(data, self.request, self.secret)
        if answer is not None and not self.answer.done():
            self.answer.set_result(answer)


async def send_disconnect(
    host: str,
    port: int,
    call: DisconnectCall,
    secret: bytes,
    *,
    tries: int = 3,
    timeout: float = 2.0,
) -> Answer | None:
    """Send until answered, ``tries`` times at most; None when the NAS stays silent."""
    request = build_request(call, secrets.randbelow(256), secret)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Reply(request, secret), remote_addr=(host, port)
    )
    try:
        for _ in range(tries):
            transport.sendto(request)
            try:
                return await asyncio.wait_for(asyncio.shield(protocol.answer), timeout)
            except TimeoutError:
                continue
        return None
    finally:
        transport.close()


class Disconnector:
    """The primary's job: queue calls past their grant, send the queue, record answers."""

    def __init__(
        self,
        queue: DisconnectQueue,
        nas: Sequence[NasConfig],
        metrics: Metrics,
        *,
        grace_seconds: int,
        tries: int = 3,
        timeout: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._queue = queue
        self.nas: Mapping[str, NasConfig] = {n.name: n for n in nas}
        self._metrics = metrics
        self._grace = grace_seconds
        self._tries = tries
        self._timeout = timeout
        self._clock = clock

    def set_nas(self, nas: Sequence[NasConfig]) -> None:
        self.nas = {n.name: n for n in nas}

    def _claim(self) -> list[WantedDisconnect]:
        now = self._clock()
        # rows claimed by a sender that died (a send takes tries x timeout at most)
        self._queue.requeue_stuck(now - timedelta(seconds=self._tries * self._timeout + 30))
        self._queue.queue_overruns(now, self._grace)
        return self._queue.claim(now)

    async def job(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = await loop.run_in_executor(None, self._claim)
        if wanted:
            await asyncio.gather(*(self._one(item) for item in wanted))

    async def _one(self, wanted: WantedDisconnect) -> None:
        loop = asyncio.get_running_loop()
        name = wanted.nas_key.partition("|")[0]
        nas = self.nas.get(name)
        call = call_of(wanted)
        host = destination(nas, call) if nas is not None else None
        if nas is None or not nas.coa_port or host is None:
            await loop.run_in_executor(None, lambda: self._queue.done(wanted, "off", self._clock()))
            return
        answer = await send_disconnect(
            host, nas.coa_port, call, nas.secret.bytes(), tries=self._tries, timeout=self._timeout
        )
        result = answer.result if answer is not None else "timeout"
        cause = answer.error_cause if answer is not None else None
        await loop.run_in_executor(
            None,
            lambda: self._queue.done(
                wanted, result, self._clock(), error_cause=cause, nas_name=name
            ),
        )
        self._metrics.disconnects.labels(result).inc()
        get_logger("radiusd").info(
            "disconnect",
            nas=wanted.nas_key,
            session_id=wanted.acct_session_id,
            reason=wanted.reason,
            result=result,
            error_cause=cause,
        )
