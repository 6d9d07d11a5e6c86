"""Switch dialects -> domain commands (pure): standard RADIUS and Cisco h323-* attributes."""

from __future__ import annotations

from datetime import datetime

from billing_core.domain.accounting_packets import AccountingEvent, normalize_conf_id
from billing_core.domain.identification import CallerFacts
from billing_core.domain.nas import nas_key as core_nas_key
from billing_core.services.authorization import AuthorizeCall, Chap, Digest

from .codec import Request

NAS_IDENTITIES = ("NAS-IP-Address", "NAS-IPv6-Address", "NAS-Identifier")

_STATUS_NAMES = {
    "Start": 1,
    "Stop": 2,
    "Interim-Update": 3,
    "Alive": 3,
    "Accounting-On": 7,
    "Accounting-Off": 8,
    "Failed": 15,
}


def nas_key(request: Request, nas_name: str, source_ip: str) -> str:
    """The NAS entry plus the first of NAS-IP-Address, NAS-IPv6-Address, NAS-Identifier,
    else the source address (CONTRACT §3, The NAS)."""
    return core_nas_key(nas_name, map(request.first, NAS_IDENTITIES), source_ip)


_DIGEST_USER_NAME = 10  # draft-sterman: a sub-attribute of Digest-Attributes (207)


def digest_user_name(request: Request) -> str | None:
    """The user name of draft-sterman's Digest-Attributes, when the request carries one."""
    for raw in (request.digest or {}).get(207, ()):
        if isinstance(raw, bytes) and len(raw) >= 2 and raw[0] == _DIGEST_USER_NAME:
            return raw[2 : raw[1]].decode("utf-8", "replace") if raw[1] >= 2 else None
    return None


def strip_realm(name: str | None) -> str | None:
    """``user@domain`` -> ``user`` (a NAS with strip_realm); other names as they are."""
    if name and "@" in name:
        user = name.rsplit("@", 1)[0]
        return user or name
    return name


def caller_facts(
    request: Request, realm: bool = False, user_name: str | None = None
) -> CallerFacts:
    """What the request says about its caller; ``realm``: strip ``@domain`` from User-Name
    (and from the digest user name, used when there is no User-Name). ``user_name``: the
    name that identifies the caller, already found (a digest's)."""
    if user_name is None:
        user_name = request.text("User-Name")
        if user_name is None and request.digest is not None:
            user_name = digest_user_name(request)
        if realm:
            user_name = strip_realm(user_name)
    return CallerFacts(
        user_name=user_name,
        framed_ip=request.text("Framed-IP-Address"),
        remote_address=request.text("h323-remote-address"),
        calling=request.text("Calling-Station-Id"),
        called=request.text("Called-Station-Id"),
    )


def call_identifiers(request: Request, session_id: str | None = None) -> tuple[str, ...]:
    """h323-conf-id (spaces removed, lower-cased), the AVPair call-id, Acct-Session-Id
    (``session_id``: that text already read)."""
    ids: list[str] = []
    conf_id = request.text("h323-conf-id")
    if conf_id:
        ids.append(normalize_conf_id(conf_id))
    if "Cisco-AVPair" in request.attributes:
        call_id = request.avpairs().get("call-id")
        if call_id:
            ids.append(call_id)
    if session_id is None:
        session_id = request.text("Acct-Session-Id")
    if session_id:
        ids.append(session_id)
    return tuple(dict.fromkeys(ids))


# draft-sterman Digest-Attributes (207) sub-attribute type -> position in parts; RFC 5090
# attribute type -> the same positions. Positions: realm, nonce, method, uri, qop,
# algorithm, body digest, cnonce, nonce count, user name.
_STERMAN_AT = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9}
_RFC5090_AT = {104: 0, 105: 1, 108: 2, 109: 3, 110: 4, 111: 5, 112: 6, 113: 7, 114: 8, 115: 9}
_STERMAN_RESPONSE = 206
_STERMAN_ATTRIBUTES = 207
_RFC5090_RESPONSE = 103


def digest_credentials(request: Request, *, rfc5090: bool = True) -> Digest | None:
    """The SIP Digest of an Access-Request: draft-sterman (Digest-Response 206 with
    Digest-Attributes 207, one sub-attribute each, as Kamailio, OpenSIPS and Sippy send), else
    RFC 5090 Digest-* (103-115) when the NAS's dialect uses them (``rfc5090``). None when
    there is none; a part it lacks is empty (a digest that then cannot be computed fails)."""
    raw = request.digest
    if not raw:
        return None
    parts = [b""] * 10
    found = raw.get(_STERMAN_RESPONSE)
    if found is not None:
        response = found[0]
        at = _STERMAN_AT
        for value in raw.get(_STERMAN_ATTRIBUTES, ()):
            # sub-attribute: type, length (counting these two octets), value
            if len(value) >= 2 and 2 <= value[1] <= len(value):
                i = at.get(value[0])
                if i is not None and not parts[i]:
                    parts[i] = value[2 : value[1]]
    elif rfc5090 and _RFC5090_RESPONSE in raw:
        response = raw[_RFC5090_RESPONSE][0]
        for kind, i in _RFC5090_AT.items():
            values = raw.get(kind)
            if values:
                parts[i] = values[0]
    else:
        return None
    text = [p.decode("utf-8", "replace") for p in parts]
    return Digest(
        response.decode("utf-8", "replace"),
        text[9],
        text[0],
        text[1],
        text[2],
        text[3],
        text[4],
        text[5],
        text[7],
        text[8],
        text[6],
    )


def digest_account_name(digest: Digest, *, strip: bool = False) -> str:
    """The name a digest identifies its account by: the digest user name (not the realm),
    ``user@domain`` cut to ``user`` when the NAS's ``strip_realm`` is set."""
    return (strip_realm(digest.username) or digest.username) if strip else digest.username


def authorize_command(
    request: Request,
    key: str,
    arrived: datetime,
    realm: bool = False,
    *,
    rfc5090: bool = True,
) -> AuthorizeCall:
    chap = Chap(*request.chap) if request.chap else None
    session_id = request.text("Acct-Session-Id")
    digest = digest_credentials(request, rfc5090=rfc5090) if request.digest else None
    # the digest user name identifies the account (User-Name may carry "@realm")
    name = digest_account_name(digest, strip=realm) if digest and digest.username else None
    caller = caller_facts(request, realm, name)
    return AuthorizeCall(
        nas_key=key,
        caller=caller,
        password=request.password,
        chap=chap,
        identifiers=call_identifiers(request, session_id),
        arrived=arrived,
        acct_session_id=session_id or "",
        digest=digest,
    )


def status_type(request: Request) -> int | None:
    value = request.first("Acct-Status-Type")
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return _STATUS_NAMES.get(str(value))


def _int(request: Request, name: str) -> int | None:
    value = request.first(name)
    return value if isinstance(value, int) else None


def dialog_tags(request: Request) -> str:
    """The unordered pair of Sip-From-Tag and Sip-To-Tag ("" when the NAS sends neither): a
    callee's BYE swaps them, and it closes the same leg."""
    tags = sorted(request.text(name) or "" for name in ("Sip-From-Tag", "Sip-To-Tag"))
    return "" if not any(tags) else f"{tags[0]};{tags[1]}"


def accounting_event(
    request: Request,
    key: str,
    bill_leg: str,
    arrived: datetime,
    *,
    realm: bool = False,
    zero_final: bool = False,
) -> AccountingEvent | None:
    """None when the request lacks Acct-Status-Type or Acct-Session-Id (malformed)."""
    status = status_type(request)
    session_id = request.text("Acct-Session-Id")
    if status is None or not session_id:
        return None
    conf_id = request.text("h323-conf-id")
    origin = request.text("h323-call-origin")
    return AccountingEvent(
        nas_key=key,
        bill_leg=bill_leg,  # type: ignore[arg-type]
        status=status,
        acct_session_id=session_id,
        conf_id=normalize_conf_id(conf_id) if conf_id else None,
        avpair_call_id=request.avpairs().get("call-id"),
        origin=origin.strip().lower() if origin else None,
        session_time=_int(request, "Acct-Session-Time"),
        delay=_int(request, "Acct-Delay-Time"),
        arrived=arrived,
        caller=caller_facts(request, realm),
        connect_time=request.text("h323-connect-time"),
        disconnect_time=request.text("h323-disconnect-time"),
        attributes=request.dump(),
        tags=dialog_tags(request) if "Sip-From-Tag" in request.attributes else "",
        zero_final=zero_final,
    )
