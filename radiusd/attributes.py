"""Switch dialects -> domain commands (pure): standard RADIUS and Cisco h323-* attributes."""

from __future__ import annotations

from datetime import datetime

from billing_core.identification import CallerFacts
from billing_core.nas import nas_key as core_nas_key
from billing_core.services import AuthorizeCall, Chap
from billing_core.sessions import AccountingEvent, normalize_conf_id

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


def caller_facts(request: Request) -> CallerFacts:
    return CallerFacts(
        user_name=request.text("User-Name"),
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


def authorize_command(request: Request, key: str, arrived: datetime) -> AuthorizeCall:
    chap = Chap(*request.chap) if request.chap else None
    session_id = request.text("Acct-Session-Id")
    return AuthorizeCall(
        nas_key=key,
        caller=caller_facts(request),
        password=request.password,
        chap=chap,
        identifiers=call_identifiers(request, session_id),
        arrived=arrived,
        acct_session_id=session_id or "",
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


def accounting_event(
    request: Request, key: str, bill_leg: str, arrived: datetime
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
        caller=caller_facts(request),
        connect_time=request.text("h323-connect-time"),
        disconnect_time=request.text("h323-disconnect-time"),
        attributes=request.dump(),
    )
