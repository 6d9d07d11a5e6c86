"""Low-balance notifications: when one fires and when it re-arms, and the message. Pure.

A client may have two thresholds: ``notify_client_below`` (an e-mail to its billing
address) and ``notify_admin_below`` (a ``low_balance`` entry in the events log). Each is
compared with the client's **funds**: the available balance (live balance + credit) minus
what its calls in progress hold, so an authorization whose hold takes the funds below the
threshold fires it, not only the charge at the end of the call.

A notification fires once per crossing: it is then disarmed, and it re-arms only when the
available balance (holds not counted) rises again, to the threshold or above, from the
lowest value seen since it fired: a payment, a credit, a charge corrected down. A released
hold does not re-arm it, so a client whose every call holds all its funds gets one message
per dip, not one per call. The adapters apply a transition with a conditional UPDATE (the
state it expects in the WHERE clause), so one crossing fires once on any number of nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from billing_core.domain.money import display

#: The notifications, by the name of their state row.
KINDS: tuple[str, ...] = ("client", "admin")


class Transition(Enum):
    NONE = "none"
    FIRE = "fire"  # armed -> fired; low = available
    REARM = "rearm"  # fired -> armed
    LOWER = "lower"  # fired, a new lowest available balance


@dataclass(frozen=True, slots=True)
class NotifyState:
    armed: bool
    low_available: Decimal | None  # the lowest available balance seen since it fired


def transition(
    state: NotifyState, threshold: Decimal, available: Decimal, funds: Decimal
) -> Transition:
    """The one step a check takes: ``available`` = live + credit, ``funds`` = available
    minus the holds of calls in progress."""
    if state.armed:
        return Transition.FIRE if funds < threshold else Transition.NONE
    low = state.low_available
    if available >= threshold and (low is None or available > low):
        return Transition.REARM
    if low is None or available < low:
        return Transition.LOWER
    return Transition.NONE


@dataclass(frozen=True, slots=True)
class LowBalance:
    client: str
    currency: str
    live_balance: Decimal
    credit: Decimal
    held: Decimal
    threshold: Decimal

    @property
    def available(self) -> Decimal:
        return self.live_balance + self.credit

    @property
    def funds(self) -> Decimal:
        return self.available - self.held


def message(low: LowBalance) -> tuple[str, str]:
    """The client's e-mail: (subject, body)."""
    subject = f"Low balance: {low.client} ({display(low.funds)} {low.currency})"
    body = "\n".join(
        (
            f"The balance of {low.client} is low.",
            "",
            f"Balance:            {display(low.live_balance)} {low.currency}",
            f"Credit:             {display(low.credit)} {low.currency}",
            f"Available:          {display(low.available)} {low.currency}",
            f"Held by calls:      {display(low.held)} {low.currency}",
            f"Notification below: {display(low.threshold)} {low.currency}",
            "",
            "Calls are refused once the funds run out. Please add funds to your account.",
            "",
        )
    )
    return subject, body


def detail(low: LowBalance) -> dict[str, str]:
    """The low-balance figures for an event's detail (amounts as decimal strings)."""
    return {
        "balance": display(low.live_balance),
        "credit": display(low.credit),
        "available": display(low.available),
        "held": display(low.held),
        "threshold": display(low.threshold),
        "currency": low.currency,
    }
