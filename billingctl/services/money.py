"""Money in the console: the live state follows the ledger's payments and charges, and an
invoice covers the period after the last one (the rules; the SQL is in adapters)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from billing_core.errors import UserError
from billing_core.ports import BalanceMoved, LiveState
from billing_core.services.ledger import follow_ledger
from billingctl.adapters import admin_money

if TYPE_CHECKING:
    from billingctl.adapters.audit import AuditContext


def follow_payments(live: LiveState | None, moved: Sequence[tuple[int, Decimal, int]]) -> bool:
    """After the ledger committed payments or manual charges ((client id, amount, the
    client's live sequence after it), in commit order): move the live balances kept outside
    the database too, each on top of its own sequence. True when the live state missed the
    last of them (unreachable); None is the database itself, which has them already."""
    missed = False
    if live is None:
        return missed
    for client_id, amount, seq in moved:
        missed = follow_ledger(live, [BalanceMoved(client_id, amount)], {client_id: seq})
    return missed


class InvoicedClient(Protocol):
    """What the invoice period is decided from (a client row)."""

    @property
    def name(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def last_invoiced(self) -> date | None: ...


def invoice_period(client: InvoicedClient, until: date, now: datetime) -> tuple[date | None, date]:
    """The period an invoice through ``until`` covers: from the day after the client's
    last-invoiced date (None: from the beginning) through ``until``. Refused when ``until``
    has not ended yet in the client's time zone, or is not after the last-invoiced date
    (an invoice is never changed, so periods never overlap)."""
    today = now.astimezone(ZoneInfo(client.timezone)).date()
    if until >= today:
        raise UserError(
            f"until: {until.isoformat()} has not ended yet in the client's time zone"
            f" ({client.timezone}, today is {today.isoformat()}); invoice up to yesterday"
        )
    if client.last_invoiced is None:
        return None, until
    if until <= client.last_invoiced:
        raise UserError(
            f"until: {client.name} is invoiced through {client.last_invoiced.isoformat()}"
            " already; give a later day"
        )
    return client.last_invoiced + timedelta(days=1), until


def generate_invoice(
    engine: Any, client: str, until: date, *, audit: AuditContext, now: datetime | None = None
) -> dict[str, Any]:
    """One invoice for the call charges since the last-invoiced date through ``until``,
    decided and written in one transaction."""
    now = now or datetime.now(UTC)
    with admin_money.client_transaction(engine, client) as (conn, row):
        period = invoice_period(row, until, now)
        return admin_money.issue_invoice(conn, row, period, audit=audit, now=now)
