"""The kinds of event the events log holds (README: the events log): the vocabulary shared
by the daemon, which records them, and billingctl, which lists and filters them.

Kept here, with no IO, so that ``billingctl --help`` (and every shell completion, which
builds the whole parser) need not import the SQL adapter that records events (which
imports it from here).
"""

from __future__ import annotations

EVENT_KINDS: tuple[str, ...] = (
    "low_balance",
    "client_stopped",
    "client_deleted",
    "account_disabled",
    "nas_rebooted",
    "call_stale",
    "unknown_account",
    "lockout",
    "live_rebuilt",
    "live_healed",
    "notification_failed",
    "disconnect_ack",
    "disconnect_nak",
    "disconnect_timeout",
)
