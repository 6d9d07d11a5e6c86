"""The only module that imports pyrad: datagrams <-> plain request values, reply building.

pyrad gives the dictionaries (names, types, vendors) and the packet codes; the datagrams
themselves are decoded and encoded here, by a struct walk over the attributes (in C,
``radiusd/_walk.c``, where the package was built with a compiler; else in Python,
``Codec.walk_py`` and ``check_framing``, which the tests hold the C walk to). Its
structural checks (header, lengths, attribute framing) are strict: an attribute whose
length overruns the packet makes it malformed, never truncated.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

_cwalk: ModuleType | None
try:  # the attribute walk in C (setup.py: optional, built where a compiler is found)
    from radiusd import _walk as _cwalk
except ImportError:  # pragma: no cover - a build without a C compiler walks in Python
    _cwalk = None

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
# SIP Digest: RFC 5090 Digest-* (103-122) and draft-sterman Digest-Response (206) with its
# Digest-Attributes (207); kept as octets for radiusd.attributes.digest_credentials
DIGEST_KINDS = frozenset((*range(103, 123), 206, 207))
_DIGEST_ATTRIBUTES = 207
# the attributes decode() keeps as received octets too (and as the C walk takes them)
_RAW_KINDS = frozenset(
    (_PROXY_STATE, _USER_PASSWORD, _CHAP_PASSWORD, _CHAP_CHALLENGE, *DIGEST_KINDS)
)
_RAW_MASK = bytes(1 if kind in _RAW_KINDS else 0 for kind in range(256))

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


# the packaged dictionary of each switch dialect ([[nas]] dialect)
DIALECT_DICTIONARIES = {
    "cisco": "dictionary",
    "sippy": "dictionary.sippy",
    "kamailio": "dictionary.kamailio",
    "opensips": "dictionary.opensips",
}


def load_dictionary(path: Path | None = None, dialect: str = "cisco") -> Any:
    """``path`` when given, else the packaged dictionary of ``dialect``."""
    if path is not None:
        return Dictionary(str(path))
    root = resources.files("radiusd.dictionaries")
    with resources.as_file(root.joinpath(DIALECT_DICTIONARIES[dialect])) as main:
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
    """A decoded, verified request: plain values for the handler; the datagram and secret
    it came with, for the reply."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: dict[str, list[Any]]
    has_message_authenticator: bool
    has_proxy_state: bool
    password: bytes | None = None
    chap: tuple[int, bytes, bytes] | None = None
    # an Access-Request's Digest attributes by type (octets as received), when it has any
    digest: dict[int, list[bytes]] | None = None
    raw: bytes = field(default=b"", repr=False)
    secret: bytes = field(default=b"", repr=False)
    proxy_states: list[bytes] = field(default_factory=list, repr=False)
    # attributes whose value did not fit their dictionary type: kept as raw octets in
    # ``attributes``, named here (counted, ignored for billing)
    attribute_errors: list[str] = field(default_factory=list, repr=False)

    def first(self, name: str) -> Any | None:
        values = self.attributes.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        """A string attribute; Cisco VSAs with their ``name=`` prefix removed."""
        values = self.attributes.get(name)
        if not values:
            return None
        value = values[0]
        if value.__class__ is not str:
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if name in CISCO_PREFIXED:
            prefix = name + "="
            if value.startswith(prefix):
                return value[len(prefix) :]
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
        """Every decoded attribute as text, for the accounting record (passwords never).
        Most attributes come once and as text already: those are taken as they are."""
        out: dict[str, list[str]] = {}
        for name, values in self.attributes.items():
            if name in _NOT_DUMPED:
                continue
            if len(values) == 1 and values[0].__class__ is str:
                out[name] = [values[0]]
            else:
                out[name] = [_as_text(v) for v in values]
        return out


def _as_text(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


_MA_ZERO = b"\x50\x12" + bytes(16)
# never stored with an accounting record: credentials and their proofs
_NOT_DUMPED = frozenset(
    (
        "User-Password",
        "CHAP-Password",
        "Message-Authenticator",
        "Digest-Response",
        "Digest-Attributes",
    )
)


class _AttributeInfo:
    __slots__ = ("code", "name", "type", "values", "vendor")

    def __init__(
        self, name: str, vendor: int, code: int, type_: str, values: dict[int, str]
    ) -> None:
        self.name = name
        self.vendor = vendor
        self.code = code
        self.type = type_
        self.values = values  # enumerated integers by their dictionary names, as pyrad gives


def _octets(raw: bytes) -> Any:
    return raw


def _string(raw: bytes) -> Any:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _integer(raw: bytes) -> Any:
    if len(raw) != 4:
        raise Malformed("undecodable", "integer length")
    return int.from_bytes(raw, "big")


def _ipaddr(raw: bytes) -> Any:
    if len(raw) != 4:
        raise Malformed("undecodable", "ipaddr length")
    return socket.inet_ntoa(raw)  # the dotted quad, as str(IPv4Address(raw))


def _ipv6addr(raw: bytes) -> Any:
    if len(raw) != 16:
        raise Malformed("undecodable", "ipv6addr length")
    return str(ipaddress.IPv6Address(raw))


_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "string": _string,
    "integer": _integer,
    "date": _integer,
    "ipaddr": _ipaddr,
    "ipv6addr": _ipv6addr,
}

Decoder = tuple[str, Callable[[bytes], Any]]

# the C walk's value kinds (radiusd/_walk.c): 0 octets, 1 string, 2 integer, 3 ipaddr, 4 the
# type's Python decoder
_C_KINDS = {"string": 1, "integer": 2, "date": 2, "ipaddr": 3}
# (name, kind, enumerated names or None, Python decoder or None): an entry of the C walk
CEntry = tuple[str, int, dict[int, str] | None, Callable[[bytes], Any] | None]


def _c_entry(info: _AttributeInfo) -> CEntry:
    decode = _DECODERS.get(info.type)
    kind = _C_KINDS.get(info.type, 4 if decode is not None else 0)
    values = info.values if kind == 2 and info.values else None
    return info.name, kind, values, decode if kind == 4 else None


def _decoder(info: _AttributeInfo) -> Decoder:
    """(name, raw -> value) for one attribute, the type dispatch of _decode done once."""
    decode = _DECODERS.get(info.type, _octets)
    values = info.values
    if not values:
        return info.name, decode

    def enumerated(raw: bytes) -> Any:
        value = decode(raw)
        return values.get(value, value) if isinstance(value, int) else value

    return info.name, enumerated


def _walk_vendor_py(
    value: bytes,
    vendors: dict[tuple[int, int], Decoder],
    attributes: dict[str, list[Any]],
    errors: list[str],
) -> None:
    """A Vendor-Specific attribute's sub-attributes, into ``attributes`` (``walk_py``)."""
    vendor = int.from_bytes(value[:4], "big")
    sub = 4
    end = len(value)
    while sub + 2 <= end:
        vtype, vlen = value[sub], value[sub + 1]
        if vlen < 2 or sub + vlen > end:
            raise Malformed("bad_attribute", "Vendor-Specific sub-attribute")
        found = vendors.get((vendor, vtype))
        if found is not None:
            _add_value(found, value[sub + 2 : sub + vlen], attributes, errors)
        sub += vlen


def _add_value(
    decoder: Decoder, raw: bytes, attributes: dict[str, list[Any]], errors: list[str]
) -> None:
    """One attribute's value decoded into ``attributes``; a value that does not fit its type
    is kept as its octets and named in ``errors`` (``walk_py``)."""
    name, decode = decoder
    try:
        decoded = decode(raw)
    except Malformed:
        decoded = raw
        errors.append(name)
    values = attributes.get(name)
    if values is None:
        attributes[name] = [decoded]
    else:
        values.append(decoded)


class Codec:
    """Decodes requests and encodes replies with a struct walk over the attributes, using the
    pyrad dictionary for names and types (pyrad's own codec costs several times more per
    packet; tests check this one against it byte for byte)."""

    def __init__(self, dictionary: Any) -> None:
        self.dictionary = dictionary
        self._by_key: dict[tuple[int, int], _AttributeInfo] = {}
        self._by_name: dict[str, _AttributeInfo] = {}
        for name, attr in dictionary.attributes.items():
            vendor = dictionary.vendors.GetForward(attr.vendor) if attr.vendor else 0
            values = {
                int.from_bytes(raw, "big"): value_name
                for value_name, raw in attr.values.forward.items()
                if isinstance(raw, bytes)
            }
            info = _AttributeInfo(name, vendor, attr.code, attr.type, values)
            self._by_key.setdefault((vendor, attr.code), info)
            self._by_name[name] = info
        # decoders: standard attributes by type code, vendor attributes by (vendor, type)
        self._standard: list[Decoder | None] = [None] * 256
        self._vendor: dict[tuple[int, int], Decoder] = {}
        for (vendor, code), info in self._by_key.items():
            if vendor:
                self._vendor[(vendor, code)] = _decoder(info)
            elif 0 <= code < 256:
                self._standard[code] = _decoder(info)
        # the same tables for the C walk: standard by type, vendor attributes by
        # vendor << 8 | type
        self._c_standard: tuple[CEntry | None, ...] = tuple(
            _c_entry(self._by_key[(0, code)]) if (0, code) in self._by_key else None
            for code in range(256)
        )
        self._c_vendor: dict[int, CEntry] = {
            vendor << 8 | code: _c_entry(info)
            for (vendor, code), info in self._by_key.items()
            if vendor and 0 <= code < 256
        }
        self._encoded: dict[tuple[str, type, Any], bytes] = {}

    def decode(self, data: bytes, secret: bytes) -> Request:
        """Decode and verify authenticators; raise Malformed (reason label) on any failure."""
        if _cwalk is not None:
            code, length = _cwalk.frame(data, Malformed)
        else:
            code, length = check_framing(data), int.from_bytes(data[2:4], "big")
        if code not in (ACCESS_REQUEST, STATUS_SERVER, ACCOUNTING_REQUEST):
            raise Malformed("unknown_code", f"code {code}")
        packet = data[:length]
        authenticator = packet[4:20]
        if _cwalk is not None:
            attributes, raw_by_type, errors, ma_at = _cwalk.walk(
                packet, self._c_standard, self._c_vendor, _RAW_MASK, Malformed
            )
        else:
            attributes, raw_by_type, errors, ma_at = self.walk_py(packet)
        if ma_at >= 0:
            # RFC 3579 §3.2 / RFC 5080: an Accounting-Request's MA is taken with the Request
            # Authenticator zeroed; an Access-Request's or Status-Server's as received
            head = packet[:4] + (bytes(16) if code == ACCOUNTING_REQUEST else authenticator)
            zeroed = head + packet[20:ma_at] + _MA_ZERO + packet[ma_at + 18 :]
            expected = hmac.digest(secret, zeroed, "md5")
            if not hmac.compare_digest(expected, packet[ma_at + 2 : ma_at + 18]):
                raise Malformed("bad_message_authenticator")
        if code == ACCOUNTING_REQUEST:
            digest = hashlib.md5(  # noqa: S324 - RFC 2866 Request Authenticator
                packet[:4] + bytes(16) + packet[20:] + secret
            ).digest()
            if not hmac.compare_digest(digest, authenticator):
                raise Malformed("bad_authenticator")
        request = Request(
            code=code,
            identifier=packet[1],
            authenticator=authenticator,
            attributes=attributes,
            has_message_authenticator=ma_at >= 0,
            has_proxy_state=_PROXY_STATE in raw_by_type,
        )
        request.raw = packet
        request.secret = secret
        request.proxy_states = raw_by_type.get(_PROXY_STATE, [])
        if errors:
            request.attribute_errors = errors
        if code == ACCESS_REQUEST:
            raw_password = raw_by_type.get(_USER_PASSWORD)
            if raw_password:
                request.password = pap_decrypt(raw_password[0], secret, authenticator)
            raw_chap = raw_by_type.get(_CHAP_PASSWORD)
            if raw_chap and len(raw_chap[0]) == 17:
                challenge = raw_by_type.get(_CHAP_CHALLENGE, [authenticator])[0]
                request.chap = (raw_chap[0][0], raw_chap[0][1:], challenge)
            if 206 in raw_by_type or 207 in raw_by_type or 103 in raw_by_type:
                request.digest = {k: v for k, v in raw_by_type.items() if k in DIGEST_KINDS}
        return request

    def walk_py(
        self, packet: bytes
    ) -> tuple[dict[str, list[Any]], dict[int, list[bytes]], list[str], int]:
        """The attribute walk of a framed packet, in Python (radiusd/_walk.c is its twin in
        C): (attributes by name, the octets of the types kept raw, by type, the names of
        values that did not fit their type, the Message-Authenticator's offset or -1)."""
        length = len(packet)
        standard = self._standard
        vendors = self._vendor
        attributes: dict[str, list[Any]] = {}
        raw_by_type: dict[int, list[bytes]] = {}
        errors: list[str] = []
        ma_at = -1
        pos = 20
        while pos < length:
            kind, size = packet[pos], packet[pos + 1]
            value = packet[pos + 2 : pos + size]
            if kind == 26:
                _walk_vendor_py(value, vendors, attributes, errors)
            else:
                if kind == _MESSAGE_AUTHENTICATOR:
                    if size != 18 or ma_at >= 0:
                        raise Malformed("bad_message_authenticator")
                    ma_at = pos
                if kind in _RAW_KINDS:
                    raws = raw_by_type.get(kind)
                    if raws is None:
                        raw_by_type[kind] = [value]
                    else:
                        raws.append(value)
                    if kind == _DIGEST_ATTRIBUTES:
                        pos += size  # its sub-attributes are read from the octets (digest)
                        continue
                known = standard[kind]
                if known is not None:
                    _add_value(known, value, attributes, errors)
            pos += size
        return attributes, raw_by_type, errors, ma_at

    _ENCODED_MAX = 4096

    def _encode(self, name: str, value: Any) -> bytes:
        """One reply attribute's bytes; most replies repeat the same few (return code,
        billing model, currency, the usual grant), so they are encoded once and kept."""
        key = (name, type(value), value)
        found = self._encoded.get(key)
        if found is None:
            if len(self._encoded) >= self._ENCODED_MAX:  # bounded: amounts vary per call
                self._encoded.clear()
            found = self._encoded[key] = self._encode_new(name, value)
        return found

    def _encode_new(self, name: str, value: Any) -> bytes:
        info = self._by_name[name]
        if info.type in ("integer", "date"):
            raw = int(value).to_bytes(4, "big")
        elif isinstance(value, bytes):
            raw = value
        else:
            text = f"{name}={value}" if name in CISCO_PREFIXED else str(value)
            raw = text.encode("utf-8")
        if info.vendor:
            inner = bytes((info.code, len(raw) + 2)) + raw
            return bytes((26, len(inner) + 6)) + info.vendor.to_bytes(4, "big") + inner
        return bytes((info.code, len(raw) + 2)) + raw

    def _reply(self, request: Request, code: int, body: bytes, *, signed: bool) -> bytes:
        """Proxy-State copied in order after the Message-Authenticator (first, when signed),
        then the reply's own attributes; the Response Authenticator over it all."""
        proxy = b"".join(bytes((_PROXY_STATE, len(v) + 2)) + v for v in request.proxy_states)
        attrs = (_MA_ZERO if signed else b"") + proxy + body
        header = bytes((code, request.identifier)) + (20 + len(attrs)).to_bytes(2, "big")
        if signed:
            mac = hmac.digest(request.secret, header + request.authenticator + attrs, "md5")
            attrs = b"\x50\x12" + mac + attrs[18:]
        response = hashlib.md5(  # noqa: S324 - RFC 2865 Response Authenticator
            header + request.authenticator + attrs + request.secret
        ).digest()
        return header + response + attrs

    def auth_reply(
        self, request: Request, *, accept: bool, attributes: list[tuple[str, Any]]
    ) -> bytes:
        """Access-Accept or Access-Reject; Message-Authenticator first, Proxy-State copied."""
        encode = self._encode
        body = b"".join([encode(name, value) for name, value in attributes])
        return self._reply(request, ACCESS_ACCEPT if accept else ACCESS_REJECT, body, signed=True)

    def acct_reply(self, request: Request) -> bytes:
        return self._reply(request, ACCOUNTING_RESPONSE, b"", signed=False)

    def status_reply(self, request: Request, *, accounting_port: bool) -> bytes:
        """Status-Server (RFC 5997): Access-Accept on auth, Accounting-Response on acct, both
        with a Message-Authenticator."""
        code = ACCOUNTING_RESPONSE if accounting_port else ACCESS_ACCEPT
        return self._reply(request, code, b"", signed=True)


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
        plain += (int.from_bytes(block, "big") ^ int.from_bytes(pad, "big")).to_bytes(16, "big")
        last = block
    return bytes(plain).rstrip(b"\x00")
