"""One list of event kinds: the one billingctl offers (``events list --kind``) is the one
the events log accepts."""

from __future__ import annotations

from billing_core.adapters.sql_notify import EVENT_KINDS as RECORDED
from billing_core.domain.events import EVENT_KINDS


def test_the_console_offers_exactly_the_kinds_the_log_records() -> None:
    assert EVENT_KINDS == RECORDED
