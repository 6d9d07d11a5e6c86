"""Requests encoded once with pyrad before a run; replies verified by a hand-rolled check.

Requests are built with pyrad (the project's dictionary and reference codec) ahead of the
measurement, so the generator only sends bytes. Replies are checked on arrival by
``ReplyChecker``: the Response Authenticator (RFC 2865 §3, RFC 2866 §4) and, on
Access-Accept/Reject, the Message-Authenticator (RFC 3579 §3.2), with ``hashlib`` instead of
pyrad's packet objects so that checking costs a few microseconds.
``tests/e2e/test_bench_smoke.py`` checks it against pyrad's ``VerifyReply``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from pyrad import packet as rp

from radiusd.codec import load_dictionary

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5

START = 1
STOP = 2

# the outcome of a check, when it is not a reply code
BAD_AUTHENTICATOR = -1
BAD_MESSAGE_AUTHENTICATOR = -2
MALFORMED = -3
WRONG_IDENTIFIER = -4
NO_MESSAGE_AUTHENTICATOR = -5

NAS_IP = "127.0.0.1"
SETUP_TIME = "*12:00:00.000 UTC Mon Nov 23 2026"
CONNECT_TIME = "12:00:01.000 UTC Mon Nov 23 2026"


def dictionary() -> Any:
    """The project's packaged dictionary (RFC 2865/2866/2869/3162/5176 and Cisco)."""
    return load_dictionary()


@dataclass(frozen=True, slots=True)
class Call:
    """What the requests of one call carry."""

    username: str
    password: str
    calling: str
    called: str
    session_id: str
    conf_id: str  # 32 hex digits
    duration: int
    method: str = "pap"  # how the Access-Request proves the password: pap | chap | digest

    @property
    def h323_conf_id(self) -> str:
        c = self.conf_id
        return f"h323-conf-id={c[0:8]} {c[8:16]} {c[16:24]} {c[24:32]}"

    @property
    def avpair(self) -> str:
        return f"call-id={self.conf_id.lower()}@bench"


def access_request(
    dict_: Any, secret: bytes, ident: int, authenticator: bytes, call: Call
) -> bytes:
    """An Access-Request as a Cisco gateway sends it, Message-Authenticator first."""
    pkt = rp.AuthPacket(
        code=rp.AccessRequest, id=ident, secret=secret, authenticator=authenticator, dict=dict_
    )
    pkt["User-Name"] = call.username
    if call.method == "chap":
        response = hashlib.md5(b"\x01" + call.password.encode() + authenticator).digest()  # noqa: S324
        pkt["CHAP-Password"] = b"\x01" + response
    elif call.method == "digest":
        for name, value in digest_attributes(call):
            pkt.AddAttribute(name, value)
    else:
        pkt["User-Password"] = pkt.PwCrypt(call.password)
    pkt["NAS-IP-Address"] = NAS_IP
    pkt["Calling-Station-Id"] = call.calling
    pkt["Called-Station-Id"] = call.called
    pkt["Acct-Session-Id"] = call.session_id
    pkt["Cisco-AVPair"] = call.avpair
    pkt["h323-conf-id"] = call.h323_conf_id
    pkt.add_message_authenticator()
    return bytes(pkt.RequestPacket())


def digest_attributes(call: Call) -> list[tuple[str, Any]]:
    """SIP Digest as Kamailio's auth_radius sends it (draft-sterman): Digest-Response and one
    Digest-Attributes per part (realm, nonce, method, URI, qop, cnonce, nonce count, user)."""
    realm, nonce, uri = "sip.bench", call.conf_id.lower(), f"sip:{call.called}@sip.bench"
    ha1 = _hex(f"{call.username}:{realm}:{call.password}")
    ha2 = _hex(f"INVITE:{uri}")
    response = _hex(f"{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}")
    parts = [(1, realm), (2, nonce), (3, "INVITE"), (4, uri), (5, "auth"), (8, "0a4f113b"),
             (9, "00000001"), (10, call.username)]  # fmt: skip
    out: list[tuple[str, Any]] = [("Digest-Response", response)]
    out += [("Digest-Attributes", bytes((k, len(v) + 2)) + v.encode()) for k, v in parts]
    return out


def _hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def accounting_request(dict_: Any, secret: bytes, ident: int, call: Call, status: int) -> bytes:
    """An Accounting-Request Start or Stop for the originate leg of ``call``."""
    pkt = rp.AcctPacket(code=rp.AccountingRequest, id=ident, secret=secret, dict=dict_)
    pkt["User-Name"] = call.username
    pkt["NAS-IP-Address"] = NAS_IP
    pkt["Acct-Status-Type"] = "Start" if status == START else "Stop"
    pkt["Acct-Session-Id"] = call.session_id
    pkt["Calling-Station-Id"] = call.calling
    pkt["Called-Station-Id"] = call.called
    pkt["Acct-Delay-Time"] = 0
    pkt["Cisco-AVPair"] = call.avpair
    pkt["h323-conf-id"] = call.h323_conf_id
    pkt["h323-call-origin"] = "h323-call-origin=originate"
    pkt["h323-setup-time"] = f"h323-setup-time={SETUP_TIME}"
    pkt["h323-connect-time"] = f"h323-connect-time={CONNECT_TIME}"
    if status == STOP:
        pkt["Acct-Session-Time"] = call.duration
        pkt["Acct-Terminate-Cause"] = 1
        pkt["h323-disconnect-cause"] = "h323-disconnect-cause=10"
    return bytes(pkt.RequestPacket())


class Stamper:
    """Gives a pre-encoded request another Identifier: the Identifier is covered by the
    Message-Authenticator of an Access-Request and by the Request Authenticator of an
    Accounting-Request, so those are computed again (the same bytes pyrad would encode
    with that Identifier; a test checks it)."""

    __slots__ = ("_inner", "_outer", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._inner, self._outer = _hmac_pads(secret)

    def stamp(self, data: bytes, ident: int) -> bytes:
        code = data[0]
        if code == ACCOUNTING_REQUEST:
            head = bytes((code, ident)) + data[2:4]
            attrs = data[20:]
            return head + _md5(head + _ZERO16 + attrs + self._secret).digest() + attrs
        # Access-Request: Message-Authenticator first (pyrad's add_message_authenticator)
        zeroed = bytes((code, ident)) + data[2:22] + _ZERO16 + data[38:]
        inner = self._inner.copy()
        inner.update(zeroed)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return zeroed[:22] + outer.digest() + data[38:]


def check_stampable(data: bytes) -> None:
    """Raise ValueError unless ``Stamper`` can restamp ``data``."""
    if data[0] == ACCOUNTING_REQUEST:
        return
    if data[0] != ACCESS_REQUEST or data[20] != 80 or data[21] != 18:
        raise ValueError("an Access-Request must carry its Message-Authenticator first")


_ZERO16 = bytes(16)


def _md5(data: bytes = b"") -> hashlib._Hash:
    return hashlib.md5(data)  # noqa: S324 - RADIUS (RFC 2865, 2866, 3579) is built on MD5


def _hmac_pads(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    key = secret if len(secret) <= 64 else _md5(secret).digest()
    key = key.ljust(64, b"\x00")
    return _md5(bytes(b ^ 0x36 for b in key)), _md5(bytes(b ^ 0x5C for b in key))


class ReplyChecker:
    """Checks replies to our requests; ``check`` returns the reply code or a negative verdict."""

    __slots__ = ("_inner", "_outer", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._inner, self._outer = _hmac_pads(secret)

    @property
    def secret(self) -> bytes:
        return self._secret

    def check(self, data: bytes, request_authenticator: bytes, ident: int) -> int:
        if len(data) < 20:
            return MALFORMED
        length = (data[2] << 8) | data[3]
        if length < 20 or length > len(data):
            return MALFORMED
        if length != len(data):
            data = data[:length]
        if data[1] != ident:
            return WRONG_IDENTIFIER
        head = data[0:4]
        attrs = data[20:]
        expected = _md5(head + request_authenticator + attrs + self._secret).digest()
        if not hmac.compare_digest(expected, data[4:20]):
            return BAD_AUTHENTICATOR
        code = data[0]
        if code in (ACCESS_ACCEPT, ACCESS_REJECT):
            at = _find_attribute(attrs, 80)
            if at < 0:
                return NO_MESSAGE_AUTHENTICATOR
            if attrs[at + 1] != 18:
                return BAD_MESSAGE_AUTHENTICATOR
            zeroed = attrs[: at + 2] + bytes(16) + attrs[at + 18 :]
            inner = self._inner.copy()
            inner.update(head + request_authenticator + zeroed)
            outer = self._outer.copy()
            outer.update(inner.digest())
            if not hmac.compare_digest(outer.digest(), attrs[at + 2 : at + 18]):
                return BAD_MESSAGE_AUTHENTICATOR
        return code


def _find_attribute(attrs: bytes, wanted: int) -> int:
    pos = 0
    end = len(attrs)
    while pos + 2 <= end:
        kind, length = attrs[pos], attrs[pos + 1]
        if length < 2:
            return -1
        if kind == wanted:
            return pos if pos + length <= end else -1
        pos += length
    return -1


def pyrad_verify(dict_: Any, secret: bytes, request: bytes, reply: bytes) -> bool:
    """The reference check: pyrad's ``VerifyReply`` (Message-Authenticator enforced)."""
    code = request[0]
    cls = rp.AuthPacket if code == ACCESS_REQUEST else rp.AcctPacket
    sent = cls(packet=request, dict=dict_, secret=secret)
    received = cls(packet=reply, dict=dict_, secret=secret)
    return bool(sent.VerifyReply(received, reply, enforce_ma=code == ACCESS_REQUEST))


def reply_attributes(dict_: Any, secret: bytes, reply: bytes) -> dict[str, list[Any]]:
    """A reply decoded by pyrad, for reports and tests (never on the hot path)."""
    code = reply[0]
    cls = rp.AcctPacket if code == ACCOUNTING_RESPONSE else rp.AuthPacket
    pkt = cls(packet=reply, dict=dict_, secret=secret)
    names = pkt.keys()  # pyrad: the attribute names (iterating gives raw codes)
    return {str(k): list(pkt[k]) for k in names if isinstance(k, str)}


def header(data: bytes) -> tuple[int, int, int]:
    code, ident, length = struct.unpack_from("!BBH", data)
    return int(code), int(ident), int(length)
