"""A call's lifecycle (CONTRACT §3), as data: its states, what moves a call between them,
the packets that move it, the epoch a packet belongs to, and the names a call goes by.

The accounting service reads these tables instead of spelling the rules out in branches,
and the adapters read them too (the SQL side's "calls that count", the epochs it reads
ahead), so a rule is written here once. Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from billing_core.domain.accounting_packets import AcctStatus


class CallState(StrEnum):
    """What a call in progress is doing; a closed call is not kept (its CDRs are)."""

    HELD = "held"  # authorized, or back after a zero-second leg: holds until its hold expires
    ACTIVE = "active"  # its accounting is recorded: holds and counts until it is closed
    CLOSED = "closed"


class CallMove(StrEnum):
    """What happens to a call."""

    AUTHORIZED = "authorized"  # an Access-Request granted (the live state holds)
    ACCOUNTED = "accounted"  # a Start or Interim-Update of a billable leg recorded
    REHELD = "reheld"  # a Stop of 0 s or a Failed, zero_duration_stop = "retry"
    STOPPED = "stopped"  # a billable leg's Stop charged, or 0 s with zero_duration_stop "final"
    CLOSED_BY_SERVER = "closed_by_server"  # Accounting-On/Off or stale: billed as last known
    LAPSED = "lapsed"  # no accounting within auth_hold_seconds: released, no CDR
    CORRECTED = "corrected"  # a Stop after the server closed the call: its CDR corrected
    NEW_EPOCH = "new_epoch"  # Accounting-On/Off: the NAS's calls from before it closed, and
    # its later packets never match a leg closed before it


@dataclass(frozen=True, slots=True)
class Step:
    """One row of the lifecycle: from which states a move applies, the state it leaves the
    call in, and whether the call then holds funds and capacity."""

    source: frozenset[CallState]
    target: CallState
    holds: bool


_OPEN = frozenset((CallState.HELD, CallState.ACTIVE))
_ANY = frozenset(CallState)

#: The call lifecycle: every move, the states it applies to, the state it leads to.
LIFECYCLE: Mapping[CallMove, Step] = {
    # a new call (not kept yet: closed) or a held one authorized again; an active call
    # authorized again stays active, its hold computed afresh
    CallMove.AUTHORIZED: Step(frozenset((CallState.CLOSED, CallState.HELD)), CallState.HELD, True),
    CallMove.ACCOUNTED: Step(_ANY, CallState.ACTIVE, True),
    CallMove.REHELD: Step(_OPEN, CallState.HELD, True),
    CallMove.STOPPED: Step(_ANY, CallState.CLOSED, False),
    CallMove.CLOSED_BY_SERVER: Step(_OPEN, CallState.CLOSED, False),
    CallMove.LAPSED: Step(frozenset((CallState.HELD,)), CallState.CLOSED, False),
    CallMove.CORRECTED: Step(frozenset((CallState.CLOSED,)), CallState.CLOSED, False),
    CallMove.NEW_EPOCH: Step(_OPEN, CallState.CLOSED, False),
}


def state_after(move: CallMove) -> CallState:
    """The state ``move`` leaves a call in."""
    return LIFECYCLE[move].target


def counts(state: str, hold_expires_at: datetime | None, now: datetime) -> bool:
    """Whether a call counts toward capacity and holds funds at ``now``: an active call
    always, a held one until its hold expires."""
    if state == CallState.ACTIVE:
        return True
    return state == CallState.HELD and hold_expires_at is not None and hold_expires_at > now


# --- the packets that move a call -------------------------------------------------------------
#: Accounting-Request statuses that describe a leg of a call.
LEG_STATUSES: frozenset[int] = frozenset(
    (AcctStatus.START, AcctStatus.INTERIM_UPDATE, AcctStatus.STOP, AcctStatus.FAILED)
)
#: The leg statuses that open or refresh a call (``CallMove.ACCOUNTED``).
OPENING: frozenset[int] = frozenset((AcctStatus.START, AcctStatus.INTERIM_UPDATE))
#: The leg statuses that end a leg.
ENDING: frozenset[int] = frozenset((AcctStatus.STOP, AcctStatus.FAILED))


class ClosedBy(StrEnum):
    """Who closed a call, as its CDR records it (CONTRACT §5)."""

    STOP = "stop"
    ACCOUNTING_ON = "accounting-on"
    ACCOUNTING_OFF = "accounting-off"
    STALE = "stale"


#: The NAS restarts (``CallMove.NEW_EPOCH``), by status, with the name they close calls by.
NAS_RESTARTS: Mapping[int, str] = {
    AcctStatus.ACCOUNTING_ON: ClosedBy.ACCOUNTING_ON.value,
    AcctStatus.ACCOUNTING_OFF: ClosedBy.ACCOUNTING_OFF.value,
}
#: Calls the server closed: a later Stop corrects their CDR (``CallMove.CORRECTED``).
CLOSED_BY_SERVER: frozenset[str] = frozenset(
    (ClosedBy.STALE.value, ClosedBy.ACCOUNTING_ON.value, ClosedBy.ACCOUNTING_OFF.value)
)


# --- epochs ---------------------------------------------------------------------------------
def leg_epoch(epoch: int, changed_at: datetime | None, when: datetime) -> int:
    """The epoch of a packet of event time ``when``, the NAS key being in ``epoch`` since
    ``changed_at``: a packet from before the last Accounting-On/Off belongs to the epoch
    before it (a late Stop of a call the NAS reboot closed)."""
    return epoch - 1 if changed_at is not None and when < changed_at else epoch


# how far back a late Stop's leg is looked for: one reboot may start several epochs (an
# Accounting-Off then an On, each perhaps sent twice)
LATE_EPOCHS = 4


def late_epochs(epoch: int) -> range:
    """The epochs a late Stop's leg may be in, the newest first: ``epoch`` (``leg_epoch``'s
    answer, the one before the current) and those before it, ``LATE_EPOCHS`` in all."""
    return range(epoch, max(-1, epoch - LATE_EPOCHS), -1)


def possible_epochs(epoch: int, changed_at: datetime | None) -> tuple[int, ...]:
    """The epochs a packet of the NAS key may belong to, whatever its event time
    (``leg_epoch``): the current one and, after an Accounting-On/Off, the one before."""
    return (epoch,) if changed_at is None else (epoch, epoch - 1)


# --- the names a call goes by -----------------------------------------------------------------
def live_uid(call_id: int, uid: str) -> str:
    """A call's id in the live state: its authorization's, else one made of its row id."""
    return uid or f"db{call_id}"


def start_mark(started_at: datetime) -> str:
    """A leg's Start as text (microseconds since the epoch): part of its CDR's unique key."""
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    return str(round(started_at.timestamp() * 1_000_000))


def mark_start(mark: str) -> datetime:
    """The Start a ``start_mark`` names."""
    return datetime.fromtimestamp(int(mark) / 1_000_000, UTC)


def once(mark: str, duration: int | None) -> str:
    """Which Stop of a leg identity a CDR is (``ClosedLeg.once``): the leg's Start mark ("" without
    one), then the Stop's own duration, or "t" when it is timed from the Start (once per
    Start)."""
    return f"{mark}/{'t' if duration is None else duration}"


def mark_of(once_key: str) -> str:
    """The Start mark of a ``once`` key."""
    return once_key.split("/", 1)[0]
