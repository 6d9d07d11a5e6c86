"""The only module that imports pyrad: datagrams <-> plain request values, reply building.

The structural checks here (header, lengths, attribute framing) run before pyrad sees a
datagram, because pyrad silently truncates an attribute whose length overruns the packet.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

ACCESS_REQUEST = rp.AccessRequest
ACCESS_ACCEPT = rp.AccessAccept
ACCESS_REJECT = rp.AccessReject
ACCOUNTING_REQUEST = rp.AccountingRequest
ACCOUNTING_RESPONSE = rp.AccountingResponse
STATUS_SERVER = rp.StatusServer

MAX_PACKET = 4096
_PROXY_STATE = 33
_MESSAGE_AUTHENTICATOR = 80
_USER_PASSWORD = 2
_CHAP_PASSWORD = 3
_CHAP_CHALLENGE = 60

# Every attribute the code reads or writes; a test checks each resolves in the dictionary.
REQUEST_ATTRIBUTES = (
    "User-Name",
    "NAS-IP-Address",
    "NAS-IPv6-Address",
    "NAS-Identifier",
    "Framed-IP-Address",
    "Called-Station-Id",
    "Calling-Station-Id",
    "Acct-Status-Type",
    "Acct-Session-Id",
    "Acct-Session-Time",
    "Acct-Delay-Time",
    "Event-Timestamp",
    "Service-Type",
    "h323-conf-id",
    "h323-call-origin",
    "h323-remote-address",
    "h323-connect-time",
    "h323-disconnect-time",
    "h323-setup-time",
    "Cisco-AVPair",
)
REPLY_ATTRIBUTES = (
    "Reply-Message",
    "Session-Timeout",
    "h323-return-code",
    "h323-credit-time",
    "h323-billing-model",
    "h323-credit-amount",
    "h323-currency",
    "h323-preferred-lang",
)
# Cisco VSAs carry "name=value" in the value
CISCO_PREFIXED = frozenset(
    name for name in REQUEST_ATTRIBUTES + REPLY_ATTRIBUTES if name.startswith("h323-")
)


class Malformed(Exception):
    """The datagram is not a RADIUS packet we can decode; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def load_dictionary(path: Path | None = None) -> Any:
    if path is not None:
        return Dictionary(str(path))
    root = resources.files("radiusd.dictionaries")
    with resources.as_file(root.joinpath("dictionary")) as main:
        return Dictionary(str(main))


def check_framing(data: bytes) -> int:
    """Validate header and attribute framing; return the packet code."""
    if len(data) < 20:
        raise Malformed("truncated", f"{len(data)} bytes")
    if len(data) > MAX_PACKET:
        raise Malformed("oversized", f"{len(data)} bytes")
    code, _ident, length = struct.unpack_from("!BBH", data)
    if length < 20 or length > len(data):
        raise Malformed("bad_length", f"length field {length}, datagram {len(data)}")
    pos = 20
    while pos < length:
        if pos + 2 > length:
            raise Malformed("bad_attribute", "attribute header overruns the packet")
        attr_len = data[pos + 1]
        if attr_len < 2 or pos + attr_len > length:
            raise Malformed("bad_attribute", f"attribute {data[pos]} length {attr_len}")
        if data[pos] == 26 and attr_len < 8:
            raise Malformed("bad_attribute", "short Vendor-Specific")
        pos += attr_len
    return int(code)


@dataclass(slots=True)
class Request:
    """A decoded, verified request: plain values for the handler, the packet for the reply."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: dict[str, list[Any]]
    has_message_authenticator: bool
    has_proxy_state: bool
    password: bytes | None = None
    chap: tuple[int, bytes, bytes] | None = None
    packet: Any = field(default=None, repr=False)

    def first(self, name: str) -> Any | None:
        values = self.attributes.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        """A string attribute; Cisco VSAs with their ``name=`` prefix removed."""
        value = self.first(name)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        value = str(value)
        if name in CISCO_PREFIXED and value.startswith(name + "="):
            value = value[len(name) + 1 :]
        return value

    def avpairs(self) -> dict[str, str]:
        """Cisco-AVPair values as a dict (``call-id=...``)."""
        pairs: dict[str, str] = {}
        for raw in self.attributes.get("Cisco-AVPair", []):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            key, sep, value = text.partition("=")
            if sep:
                pairs.setdefault(key.strip().lower(), value.strip())
        return pairs

    def dump(self) -> dict[str, list[str]]:
        """Every decoded attribute as text, for the accounting record (passwords never)."""
        return {
            name: [v.hex() if isinstance(v, bytes) else str(v) for v in values]
            for name, values in self.attributes.items()
            if name not in ("User-Password", "CHAP-Password", "Message-Authenticator")
        }


class Codec:
    def __init__(self, dictionary: Any) -> None:
        self.dictionary = dictionary

    def decode(self, data: bytes, secret: bytes) -> Request:
        """Decode and verify authenticators; raise Malformed (reason label) on any failure."""
        code = check_framing(data)
        if code in (ACCESS_REQUEST, STATUS_SERVER):
            cls = rp.AuthPacket
        elif code == ACCOUNTING_REQUEST:
            cls = rp.AcctPacket
        else:
            raise Malformed("unknown_code", f"code {code}")
        try:
            pkt = cls(packet=data, dict=self.dictionary, secret=secret)
        except Exception as exc:  # noqa: BLE001 - pyrad raises PacketError and others on junk
            raise Malformed("undecodable", str(exc)) from None
        has_ma = bool(pkt.message_authenticator)
        if has_ma:
            if len(pkt.get(_MESSAGE_AUTHENTICATOR, [b""])[0]) != 16:
                raise Malformed("bad_message_authenticator")
            if not pkt.verify_message_authenticator():
                raise Malformed("bad_message_authenticator")
        if code == ACCOUNTING_REQUEST and not pkt.VerifyAcctRequest():
            raise Malformed("bad_authenticator")
        attributes: dict[str, list[Any]] = {}
        try:
            for key in list(pkt.keys()):
                if isinstance(key, str):
                    attributes[key] = pkt[key]
        except Exception as exc:  # noqa: BLE001 - a value pyrad cannot decode
            raise Malformed("undecodable", f"attribute value: {exc}") from None
        request = Request(
            code=code,
            identifier=pkt.id,
            authenticator=pkt.authenticator,
            attributes=attributes,
            has_message_authenticator=has_ma,
            has_proxy_state=_PROXY_STATE in pkt,
            packet=pkt,
        )
        if code == ACCESS_REQUEST:
            raw_password = pkt.get(_USER_PASSWORD)
            if raw_password:
                request.password = pap_decrypt(raw_password[0], secret, pkt.authenticator)
            raw_chap = pkt.get(_CHAP_PASSWORD)
            if raw_chap and len(raw_chap[0]) == 17:
                challenge = pkt.get(_CHAP_CHALLENGE, [pkt.authenticator])[0]
                request.chap = (raw_chap[0][0], raw_chap[0][1:], challenge)
        return request

    def auth_reply(
        self, request: Request, *, accept: bool, attributes: list[tuple[str, Any]]
    ) -> bytes:
        """Access-Accept or Access-Reject; Message-Authenticator first, Proxy-State copied."""
        reply = request.packet.CreateReply()
        reply.code = ACCESS_ACCEPT if accept else ACCESS_REJECT
        for name, value in attributes:
            reply.AddAttribute(name, f"{name}={value}" if name in CISCO_PREFIXED else value)
        return bytes(reply.ReplyPacket())

    def acct_reply(self, request: Request) -> bytes:
        reply = request.packet.CreateReply()
        return bytes(reply.ReplyPacket())

    def status_reply(self, request: Request, *, accounting_port: bool) -> bytes:
        """Status-Server (RFC 5997): Access-Accept on auth, Accounting-Response on acct."""
        if accounting_port:
            reply = rp.AcctPacket(
                ACCOUNTING_RESPONSE,
                request.identifier,
                request.packet.secret,
                request.authenticator,
                dict=self.dictionary,
            )
            reply.message_authenticator = True
            return bytes(request.packet._PrepareReply(reply, {}).ReplyPacket())
        reply = request.packet.CreateReply()
        reply.code = ACCESS_ACCEPT
        return bytes(reply.ReplyPacket())


def pap_decrypt(cipher: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """User-Password (RFC 2865 §5.2), octets kept exactly (pyrad's PwDecrypt drops non-UTF-8
    octets); only the NUL padding is removed."""
    if not cipher or len(cipher) % 16 or len(cipher) > 128:
        raise Malformed("undecodable", "User-Password length")
    plain = bytearray()
    last = authenticator
    for start in range(0, len(cipher), 16):
        block = cipher[start : start + 16]
        pad = hashlib.md5(secret + last).digest()  # noqa: S324 - the RADIUS algorithm
        plain += bytes(a ^ b for a, b in zip(block, pad, strict=True))
        last = block
    return bytes(plain).rstrip(b"\x00")
