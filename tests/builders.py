"""Domain values for tests: a prepaid client and a rate, any field given by keyword."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing_core.domain.model import Client
from billing_core.domain.rating import Rate

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def client(**kw: Any) -> Client:
    """An active prepaid USD client of rate table 1, no credit, no capacity limit."""
    fields: dict[str, Any] = {
        "id": 1,
        "name": "Acme",
        "status": "active",
        "currency": "USD",
        "locale": None,
        "postpaid": False,
        "credit": Decimal(0),
        "rate_table_id": 1,
        "capacity": None,
        "low_balance_threshold": None,
        "low_balance_capacity": None,
        "bill_events_by": "disconnect",
    }
    fields.update(kw)
    return Client(**fields)


def rate(**kw: Any) -> Rate:
    """0.10 a minute on code 1, billed 60/60, effective from ``EPOCH``."""
    fields: dict[str, Any] = {
        "code": "1",
        "name": "",
        "rate": Decimal("0.10"),
        "setup_fee": Decimal(0),
        "min_volume": 60,
        "interval": 60,
        "grace_volume": 0,
        "effective_date": EPOCH,
    }
    fields.update(kw)
    return Rate(**fields)
