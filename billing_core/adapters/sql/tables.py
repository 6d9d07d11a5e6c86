"""The schema's tables as SQLAlchemy Core objects (built from ``models``): one home for them,
and for the few expressions every SQL module shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import BindParameter

from billing_core.domain.calls import CallState

from .models import (
    AccountRow,
    AcctEventRow,
    AuthFailureRow,
    CallKeyRow,
    CallRow,
    CatalogVersion,
    CdrRow,
    ClientRow,
    DisconnectRow,
    EventRow,
    LiveBalanceRow,
    MailRow,
    NasEpochRow,
    NotifyStateRow,
    RateIndexSnapshot,
    RateRow,
    RateTableRow,
    Setting,
    TransactionRow,
    table,
)

accounts_t = table(AccountRow)
acct_events_t = table(AcctEventRow)
auth_failures_t = table(AuthFailureRow)
call_keys_t = table(CallKeyRow)
calls_t = table(CallRow)
catalog_version_t = table(CatalogVersion)
cdrs_t = table(CdrRow)
clients_t = table(ClientRow)
disconnect_t = table(DisconnectRow)
events_t = table(EventRow)
live_t = table(LiveBalanceRow)
mail_t = table(MailRow)
nas_epochs_t = table(NasEpochRow)
notify_state_t = table(NotifyStateRow)
rate_tables_t = table(RateTableRow)
rate_snapshots_t = table(RateIndexSnapshot)
rates_t = table(RateRow)
settings_t = table(Setting)
transactions_t = table(TransactionRow)


def utcnow() -> datetime:
    """Now, as the timestamp columns take it (aware UTC)."""
    return datetime.now(UTC)


def live_calls_condition(now: datetime | BindParameter[datetime]) -> Any:
    """Calls that count (``domain.calls.counts``): active ones, and held ones whose hold has
    not lapsed (at ``now``, or at a bind parameter's value in a statement built once)."""
    return or_(
        calls_t.c.state == CallState.ACTIVE.value,
        and_(calls_t.c.state == CallState.HELD.value, calls_t.c.hold_expires_at > now),
    )
