"""The reply of each business rejection: one table, read by the daemon's handler and by
``billingctl explain`` (so an explanation names the code the switch would get)."""

from __future__ import annotations

from billing_core.domain.model import RejectReason

# One row per business rejection: (h323-return-code, Reply-Message).
REJECT_REPLIES: dict[RejectReason, tuple[int, str]] = {
    RejectReason.UNKNOWN_ACCOUNT: (1, "Unknown account"),
    RejectReason.BAD_PASSWORD: (2, "Wrong or missing password"),
    RejectReason.LOCKED_OUT: (2, "Too many wrong passwords: account locked, try again later"),
    RejectReason.CLIENT_DELETED: (1, "Account is deleted"),
    RejectReason.CLIENT_STOPPED: (7, "Account is blocked"),
    RejectReason.NO_RATE: (9, "No rate for the destination"),
    RejectReason.CAPACITY: (3, "Too many calls in progress"),
    RejectReason.ZERO_BALANCE: (4, "Zero balance"),
    RejectReason.CREDIT_LIMIT: (6, "Credit limit reached"),
    RejectReason.INSUFFICIENT_FUNDS: (12, "Insufficient funds for the destination"),
}
