"""Who is calling, proven: PAP, CHAP (RFC 2865 §5.3) and SIP Digest (RFC 2617 as carried by
draft-sterman and RFC 5090) checked against an account's secret. Pure: no IO, no keys.

An account keeps its secret in the form its methods need (README: Credentials): a salted
hash when it allows PAP only, the secret itself (encrypted at rest, decrypted in memory by
the service) when it allows CHAP or Digest, which both need it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

AuthMethod = Literal["pap", "chap", "digest"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("pap", "chap", "digest")
DEFAULT_METHODS: frozenset[AuthMethod] = frozenset({"pap"})
# methods that need the secret itself (not a hash): the server key must be configured
NEEDS_SECRET: frozenset[AuthMethod] = frozenset({"chap", "digest"})

# why a login account's credentials were refused (radiusd_auth_failures_total{reason})
FailureReason = Literal["missing", "not_allowed", "wrong", "unusable", "locked_out"]


@dataclass(frozen=True, slots=True)
class Chap:
    """CHAP-Password (ident, 16-octet response) and the challenge: CHAP-Challenge, else the
    Request Authenticator (RFC 2865 §2.2)."""

    ident: int
    response: bytes
    challenge: bytes


@dataclass(frozen=True, slots=True)
class Digest:
    """The parts of a SIP Digest response (RFC 2617 §3.2.2) a NAS forwards."""

    response: str  # 32 hex digits
    username: str  # the digest user name, as the caller sent it (used in HA1)
    realm: str
    nonce: str
    method: str
    uri: str
    qop: str = ""  # "", "auth" or "auth-int"
    algorithm: str = ""  # "" (MD5), "MD5" or "MD5-sess"
    cnonce: str = ""
    nonce_count: str = ""
    body_digest: str = ""  # H(entity-body) for auth-int, as draft-sterman/RFC 5090 carry it


def parse_auth_methods(value: object) -> frozenset[AuthMethod]:
    """A list (or comma-separated text) of methods; ValueError names the problem."""
    if isinstance(value, str):
        items: Iterable[object] = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ValueError("must be a list of pap, chap, digest")
    chosen: set[AuthMethod] = set()
    for item in items:
        if not isinstance(item, str) or item.strip().lower() not in AUTH_METHODS:
            raise ValueError(f"unknown method {item!r} (expected pap, chap or digest)")
        chosen.add(item.strip().lower())  # type: ignore[arg-type]
    if not chosen:
        raise ValueError("must name at least one of pap, chap, digest")
    return frozenset(chosen)


def methods_text(methods: Iterable[str]) -> str:
    """The canonical stored and shown form: ``pap,chap,digest`` order."""
    given = set(methods)
    return ",".join(m for m in AUTH_METHODS if m in given)


def needs_secret(methods: Iterable[str]) -> bool:
    return any(m in NEEDS_SECRET for m in methods)


def strip_realm(name: str) -> str:
    """``user@domain`` -> ``user`` (the ``strip_realm`` of a NAS's dialect)."""
    user, sep, _domain = name.partition("@")
    return user if sep and user else name


# --- checks ----------------------------------------------------------------------------------


def pap_ok(secret: bytes, password: bytes) -> bool:
    return hmac.compare_digest(secret, password)


def chap_response(ident: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 2865 §5.3 / RFC 1994: MD5(CHAP ident + secret + challenge)."""
    return _md5(bytes((ident,)) + secret + challenge).digest()


def chap_ok(secret: bytes, chap: Chap) -> bool:
    return hmac.compare_digest(chap_response(chap.ident, secret, chap.challenge), chap.response)


def _h(text: bytes) -> bytes:
    return _md5(text).hexdigest().encode()


_md5 = functools.partial(hashlib.md5, usedforsecurity=False)  # RFC 2617 Digest is MD5


def digest_response(secret: bytes, digest: Digest) -> str | None:
    """The response the caller must have sent (RFC 2617 §3.2.2.1), lower-case hex; None when
    the request asks for what cannot be computed (an unknown algorithm or qop, auth-int
    without the body's hash, qop without cnonce or nonce count)."""
    algorithm = digest.algorithm.lower() if digest.algorithm else ""
    qop = digest.qop.lower() if digest.qop else ""
    if algorithm not in ("", "md5", "md5-sess") or qop not in ("", "auth", "auth-int"):
        return None
    if qop and not (digest.cnonce and digest.nonce_count):
        return None
    nonce = digest.nonce.encode()
    ha1 = _h(b"%s:%s:%s" % (digest.username.encode(), digest.realm.encode(), secret))
    if algorithm == "md5-sess":
        if not digest.cnonce:
            return None
        ha1 = _h(b"%s:%s:%s" % (ha1, nonce, digest.cnonce.encode()))
    a2 = b"%s:%s" % (digest.method.encode(), digest.uri.encode())
    if qop == "auth-int":
        if not digest.body_digest:
            return None
        a2 += b":" + digest.body_digest.lower().encode()
    ha2 = _h(a2)
    if qop:
        final = b"%s:%s:%s:%s:%s:%s" % (
            ha1,
            nonce,
            digest.nonce_count.encode(),
            digest.cnonce.encode(),
            qop.encode(),
            ha2,
        )
    else:
        final = b"%s:%s:%s" % (ha1, nonce, ha2)
    return _md5(final).hexdigest()


def digest_ok(secret: bytes, digest: Digest) -> bool:
    expected = digest_response(secret, digest)
    if expected is None:
        return False
    return hmac.compare_digest(expected.encode(), digest.response.strip().lower().encode())
