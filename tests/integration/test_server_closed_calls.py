"""Calls the server closed (stale, Accounting-On/Off) and then their real Stop, after the
NAS's epoch moved, on real SQLite and PostgreSQL: each is corrected once, never charged
twice. The unit tests over the fakes (tests/unit/test_accounting_rules.py) found these
double charges; here they are held on the SQL adapter:

- a held call (SqlStore.authorize stores it with no epoch) and a call kept by a late
  Accounting-On move to the NAS's current epoch with their accounting, so the CDR a
  server's close gives them is the leg their Stop looks for;
- an Accounting-On sent again, or an Off then an On, start several epochs at one reboot: a
  late Stop looks for its leg in the last epochs before the current one, newest first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from billing_core.adapters.sql.db import make_engine
from billing_core.domain.accounting_packets import AccountingEvent, AcctStatus
from billing_core.domain.identification import CallerFacts
from billing_core.domain.policy import Accept
from billingctl.adapters import admin
from billingctl.services import load

from ..authorize import decide
from .test_sql_store import call, now, services, spec


def event(
    base: datetime,
    status: int,
    session: str,
    at: int,
    *,
    seconds: int | None = None,
    delay: int = 0,
) -> AccountingEvent:
    return AccountingEvent(
        nas_key="nas|10.0.0.1",
        bill_leg="originate",
        status=status,
        acct_session_id=session,
        conf_id=None,
        avpair_call_id=None,
        origin=None,
        session_time=seconds,
        delay=delay,
        arrived=base + timedelta(seconds=at),
        caller=CallerFacts(user_name="acme", called="15550001111"),
    )


def test_an_authorized_call_closed_as_stale_after_an_accounting_on_is_corrected(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, authz, acct = services(db_url)
    t = now()
    assert acct.record(event(t, AcctStatus.ACCOUNTING_ON, "boot", -10)).result == "closed"
    assert isinstance(decide(authz, call("c1")).decision, Accept)
    acct.record_many(
        [
            event(t, AcctStatus.START, "c1", 0),
            event(t, AcctStatus.INTERIM_UPDATE, "c1", 30, seconds=30),
        ]
    )
    assert acct.close_stale(t + timedelta(seconds=30 + 7200 + 301)) == 1
    assert [(c["duration"], c["cost"]) for c in admin.list_cdrs(engine)] == [(30, "0.10")]
    assert acct.record(event(t, AcctStatus.STOP, "c1", 7600, seconds=61)).result == "corrected"
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"


def test_a_call_kept_by_a_late_accounting_on_then_closed_is_corrected(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    t = now()
    acct.record_many([event(t, AcctStatus.START, "old", 0), event(t, AcctStatus.START, "new", 60)])
    # the reboot at 50 s, reported at 100 s: "new" began after it and is kept
    on = acct.record(event(t, AcctStatus.ACCOUNTING_ON, "r", 100, delay=50))
    assert on.closed_calls == 1
    acct.record(event(t, AcctStatus.INTERIM_UPDATE, "new", 90, seconds=30))
    assert acct.close_stale(t + timedelta(seconds=90 + 3600 + 301)) == 1
    assert acct.record(event(t, AcctStatus.STOP, "new", 4000, seconds=180)).result == "corrected"
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.70"


def test_a_late_stop_after_a_resent_accounting_on_corrects_the_closed_call(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    t = now()
    acct.record_many(
        [
            event(t, AcctStatus.START, "c1", 0),
            event(t, AcctStatus.INTERIM_UPDATE, "c1", 45, seconds=45),
            event(t, AcctStatus.ACCOUNTING_ON, "boot", 100),
        ]
    )
    # the same On re-sent 5 s later, its Acct-Delay-Time grown: a new authenticator
    assert acct.record(event(t, AcctStatus.ACCOUNTING_ON, "boot", 105, delay=5)).result == "closed"
    assert [(c["duration"], c["cost"]) for c in admin.list_cdrs(engine)] == [(45, "0.10")]
    late_stop = event(t, AcctStatus.STOP, "c1", 120, seconds=61, delay=59)
    assert acct.record(late_stop).result == "corrected"
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"


def test_a_late_stop_after_an_off_and_an_on_corrects_the_call_the_off_closed(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    t = now()
    acct.record_many(
        [
            event(t, AcctStatus.START, "c1", 0),
            event(t, AcctStatus.INTERIM_UPDATE, "c1", 45, seconds=45),
            event(t, AcctStatus.ACCOUNTING_OFF, "down", 100),
            event(t, AcctStatus.ACCOUNTING_ON, "up", 160),
        ]
    )
    assert [(c["duration"], c["cost"]) for c in admin.list_cdrs(engine)] == [(45, "0.10")]
    late_stop = event(t, AcctStatus.STOP, "c1", 200, seconds=70, delay=130)
    assert acct.record(late_stop).result == "corrected"
    assert [(c["duration"], c["cost"]) for c in admin.list_cdrs(engine)] == [(70, "0.20")]
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"
