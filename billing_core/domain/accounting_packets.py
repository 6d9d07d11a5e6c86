"""Accounting rules of CONTRACT §3 as pure functions: legs, durations, event times."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import BillEventsBy, BillLeg


class AcctStatus(IntEnum):
    START = 1
    STOP = 2
    INTERIM_UPDATE = 3
    ACCOUNTING_ON = 7
    ACCOUNTING_OFF = 8
    FAILED = 15


@dataclass(frozen=True, slots=True)
class AccountingEvent:
    """One Accounting-Request, read from the switch's dialect into plain values."""

    nas_key: str
    bill_leg: BillLeg
    status: int
    acct_session_id: str
    conf_id: str | None
    avpair_call_id: str | None
    origin: str | None  # h323-call-origin, lower-cased
    session_time: int | None
    delay: int | None
    arrived: datetime
    caller: CallerFacts
    connect_time: str | None = None  # h323-connect-time as sent
    disconnect_time: str | None = None  # h323-disconnect-time as sent
    attributes: dict[str, list[str]] = field(default_factory=dict)
    tags: str = ""  # the unordered pair of Sip-From-Tag and Sip-To-Tag; "" when not sent
    zero_final: bool = False  # [[nas]] zero_duration_stop = "final"
    # identifiers(), computed once: a batch asks for them four or five times an event
    _identifiers: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [self.acct_session_id]
        if self.conf_id:
            ids.append(self.conf_id)
        if self.avpair_call_id:
            ids.append(self.avpair_call_id)
        object.__setattr__(self, "_identifiers", tuple(dict.fromkeys(ids)))

    def has_own_duration(self) -> bool:
        """Acct-Session-Time, or h323 connect and disconnect times that both parse."""
        if self.session_time is not None:
            return True
        if self.connect_time and self.disconnect_time:
            return (
                parse_h323_time(self.connect_time) is not None
                and parse_h323_time(self.disconnect_time) is not None
            )
        return False

    def event_time(self, max_acct_delay_seconds: int) -> datetime:
        """Arrival minus Acct-Delay-Time; a bogus delay is ignored (RFC 2866 §5.2)."""
        delay = self.delay or 0
        if delay < 0 or delay > max_acct_delay_seconds:
            delay = 0
        return self.arrived - timedelta(seconds=delay)

    def identifiers(self) -> tuple[str, ...]:
        """Acct-Session-Id, h323-conf-id and the AVPair call-id, each once, in this order."""
        return self._identifiers

    @property
    def billable(self) -> bool:
        return is_billable(self.origin, self.bill_leg)


def is_billable(origin: str | None, bill_leg: BillLeg) -> bool:
    return not origin or bill_leg in ("any", origin)


def normalize_conf_id(raw: str) -> str:
    """h323-conf-id compared with spaces removed, lower-cased."""
    return raw.replace(" ", "").lower()


_H323_TIME = re.compile(
    r"^[*.]?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?\s+\S+\s+\w{3}\s+(\w{3})\s+(\d{1,2})\s+(\d{4})$"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


def parse_h323_time(raw: str) -> datetime | None:
    """Cisco's ``HH:MM:SS.mmm ZONE Ddd Mon DD YYYY`` (a leading '*' or '.' ignored).

    The zone is not interpreted: only the difference of two such times is ever used.
    """
    match = _H323_TIME.match(raw.strip())
    if not match:
        return None
    hh, mm, ss, frac, mon, day, year = match.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    micro = int((frac or "0").ljust(6, "0"))
    try:
        return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), micro)
    except ValueError:
        return None


def _round_half_up(seconds: float) -> int:
    return math.floor(seconds + 0.5)


def stop_duration(
    event: AccountingEvent, start_event_time: datetime | None, max_acct_delay_seconds: int
) -> int:
    """A Stop's duration: Acct-Session-Time, else h323 disconnect - connect, else the time
    between its Start's and Stop's event times, else 0."""
    if event.session_time is not None:
        return max(0, event.session_time)
    if event.connect_time and event.disconnect_time:
        connect = parse_h323_time(event.connect_time)
        disconnect = parse_h323_time(event.disconnect_time)
        if connect is not None and disconnect is not None:
            return max(0, _round_half_up((disconnect - connect).total_seconds()))
    if start_event_time is not None:
        elapsed = event.event_time(max_acct_delay_seconds) - start_event_time
        return max(0, _round_half_up(elapsed.total_seconds()))
    return 0


def rating_moment(
    bill_events_by: BillEventsBy,
    *,
    authorized_at: datetime | None,
    started_at: datetime | None,
    stopped_at: datetime,
    duration: int,
) -> datetime:
    """The moment whose rates apply to a call (CONTRACT §3, Times)."""
    if bill_events_by == "disconnect":
        return stopped_at
    fallback = stopped_at - timedelta(seconds=duration)
    if bill_events_by == "setup":
        return authorized_at or fallback
    return started_at or fallback
