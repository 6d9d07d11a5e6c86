"""Invoices date a call's charge by the call's billed moment, not by when its Stop reached
the ledger: the midnight case, on SQLite and PostgreSQL, through the real accounting
service and ``billingctl invoices generate``."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import transactions_t
from billing_core.domain.accounting_packets import AccountingEvent, AcctStatus
from billing_core.domain.identification import CallerFacts
from billing_core.services.accounting import AccountingService
from billing_core.services.authorization import CatalogCache
from billingctl.adapters import admin
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

from .billingctl_support import Ctl, ctl

__all__ = ["ctl"]  # the fixture

ZONE = ZoneInfo("America/New_York")  # the client's days are not UTC days


def _spec() -> Any:
    rate = {
        "code": "1",
        "name": "USA",
        "rate": "0.60",
        "setup_fee": "0",
        "min_volume": 60,
        "interval": 60,
        "grace_volume": 0,
        "effective_date": "2026-01-01T00:00:00Z",
    }
    document = {
        "rate_tables": [{"name": "retail", "currency": "USD", "rates": [rate]}],
        "clients": [
            {
                "name": "Acme",
                "rate_table": "retail",
                "timezone": "America/New_York",
                "bill_events_by": "connect",
                "payments": [{"id": "p1", "amount": "100"}],
                "accounts": [{"name": "acme", "ident": "ani", "value": "15550000001"}],
            }
        ],
    }
    return parse_provisioning(document, lambda _path: iter(()))


def _event(session: str, status: AcctStatus, at: datetime, seconds: int | None) -> AccountingEvent:
    return AccountingEvent(
        nas_key="nas|10.0.0.1",
        bill_leg="originate",
        status=status,
        acct_session_id=session,
        conf_id=None,
        avpair_call_id=None,
        origin=None,
        session_time=seconds,
        delay=0,
        arrived=at.astimezone(UTC),
        caller=CallerFacts(calling="15550000001", called="15551234567"),
    )


def _local(day: date, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=ZONE)


def test_a_call_at_2359_whose_stop_arrives_after_midnight_stays_in_its_period(
    ctl: Ctl,
) -> None:
    engine = ctl.engine()
    load.apply_provisioning(engine, _spec())
    store = SqlStore(engine)
    catalog = CatalogCache(store, min_interval=0)
    acct = AccountingService(
        lambda: catalog.current, store, store, auth_hold_seconds=180, max_acct_delay_seconds=86400
    )
    day = datetime.now(ZONE).date() - timedelta(days=3)
    after = day + timedelta(days=1)
    # connected 23:59 on `day`, 150 s long: the Stop arrives at 00:01:30 on the next day
    late = [
        _event("late", AcctStatus.START, _local(day, 23, 59), None),
        _event("late", AcctStatus.STOP, _local(after, 0, 1, 30), 150),
    ]
    # connected 00:00:30 on the next day: never in `day`'s invoice
    next_day = [
        _event("next", AcctStatus.START, _local(after, 0, 0, 30), None),
        _event("next", AcctStatus.STOP, _local(after, 0, 1, 30), 60),
    ]
    assert [o.result for o in acct.record_many([*late, *next_day])] == [
        "recorded",
        "charged",
        "recorded",
        "charged",
    ]
    with engine.connect() as conn:
        ledger = {
            r.cdr_id: r.created_at
            for r in conn.execute(select(transactions_t).where(transactions_t.c.kind == "call"))
        }
    # both charges reached the ledger after `day` ended (when the service recorded them):
    # dating by ledger time would leave `day`'s invoice empty
    assert len(ledger) == 2
    assert all(at.astimezone(ZONE).date() > day for at in ledger.values())
    costs = {c["acct_session_id"]: c["cost"] for c in admin.list_cdrs(engine)}
    assert costs == {"late": "1.80", "next": "0.60"}

    out = ctl("invoices", "generate", "--client", "Acme", "--until", day.isoformat())
    assert "1 call charges, total 1.80 USD" in out, out
    out = ctl("invoices", "generate", "--client", "Acme", "--until", after.isoformat())
    assert "1 call charges, total 0.60 USD" in out, out
    invoices = ctl.json("invoices", "list", "--client", "Acme")
    assert [(i["period_end"], i["charges"], i["total"]) for i in invoices] == [
        (day.isoformat(), 1, "1.80"),
        (after.isoformat(), 1, "0.60"),
    ]


def test_a_charge_dated_in_an_invoiced_period_goes_on_the_next_invoice(ctl: Ctl) -> None:
    """A Stop that arrives after its period was invoiced is billed once, on the next
    invoice (an issued invoice never changes), and never lost."""
    engine = ctl.engine()
    load.apply_provisioning(engine, _spec())
    store = SqlStore(engine)
    catalog = CatalogCache(store, min_interval=0)
    acct = AccountingService(
        lambda: catalog.current, store, store, auth_hold_seconds=180, max_acct_delay_seconds=86400
    )
    day = datetime.now(ZONE).date() - timedelta(days=3)
    acct.record_many([_event("a", AcctStatus.START, _local(day, 12, 0), None)])
    ctl("invoices", "generate", "--client", "Acme", "--until", day.isoformat())
    acct.record_many([_event("a", AcctStatus.STOP, _local(day + timedelta(days=1), 9, 0), 60)])
    ctl("invoices", "generate", "--client", "Acme", "--until", str(day + timedelta(days=1)))
    invoices = ctl.json("invoices", "list", "--client", "Acme")
    assert [(i["charges"], i["total"]) for i in invoices] == [(0, "0.00"), (1, "0.60")]
