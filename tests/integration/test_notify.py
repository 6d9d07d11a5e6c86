"""Low-balance notifications, the events log, the mail queue (a real SMTP server) and the
Disconnect-Request queue, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from billing_core.adapters.smtp_mail import SmtpSettings, deliver_due
from billing_core.adapters.sql.disconnect import queue_overruns
from billing_core.adapters.sql.notify import check_notifications, record_event
from billing_core.adapters.sql.tables import calls_t, disconnect_t, mail_t
from billing_core.ports import LiveView

from ..authorize import decide
from ..smtp_server import SmtpServer
from .billingctl_support import Ctl, csv_rows, ctl

__all__ = ["ctl"]  # the fixture

D = Decimal


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _mail_on(ctl: Ctl) -> None:
    ctl.config.write_text(
        ctl.config.read_text() + '\n[smtp]\nhost = "127.0.0.1"\nfrom = "billing@carrier.example"\n'
    )


def _settings(server: SmtpServer, **kw: float) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=server.port,
        sender="billing@carrier.example",
        timeout_seconds=2.0,
        retry_base=kw.get("retry_base", 10.0),
        retry_cap=60.0,
        give_up_after=kw.get("give_up_after", 3600.0),
    )


def test_fields_everywhere(ctl: Ctl, tmp_path: Path) -> None:
    doc = tmp_path / "p.yaml"
    doc.write_text(
        "clients:\n  - {name: Acme, notify_client_below: '5.00', notify_admin_below: '2'}\n"
    )
    ctl("load", str(doc))
    shown = ctl.json("clients", "show", "Acme")
    assert (shown["notify_client_below"], shown["notify_admin_below"]) == ("5.00", "2.00")
    assert shown["notifications"]["client"] == {"below": "5.00", "armed": True, "sent_at": None}

    bad = tmp_path / "bad.yaml"
    bad.write_text("clients:\n  - {name: B, notify_admin_below: 'lots'}\n")
    assert ctl.fail("load", str(bad)).startswith("clients[0].notify_admin_below: ")

    ctl("templates", "add", "low", "--notify-client-below", "3", "--notify-admin-below", "1")
    assert ctl.json("templates", "show", "low")["notify_client_below"] == "3.00"
    ctl("clients", "add", "Beta", "--template", "low")
    assert ctl.json("clients", "show", "Beta")["notify_admin_below"] == "1.00"
    ctl("clients", "edit", "Beta", "--notify-admin-below", "")
    assert ctl.fail("clients", "edit", "Beta", "--notify-client-below", "x").startswith(
        "notify_client_below: "
    )
    listed = {c["name"]: c for c in ctl.json("clients", "list")}
    assert listed["Beta"]["notify_admin_below"] is None
    assert listed["Beta"]["notify_client_below"] == "3.00"
    rows = {r["name"]: r for r in csv_rows(ctl("clients", "list", "--format", "csv"))}
    assert rows["Acme"]["notify_client_below"] == "5.00"
    edits = ctl.json("audit", "list", "--client", "Beta")
    assert any(
        e["before"]
        and e["before"].get("notify_admin_below") == "1.00"
        and e["after"].get("notify_admin_below") is None
        for e in edits
    )


def test_fires_once_per_crossing_and_rearms(ctl: Ctl) -> None:
    _mail_on(ctl)
    ctl("clients", "add", "Acme", "--notify-client-below", "5", "--notify-admin-below", "3")
    ctl("clients", "edit", "Acme", "--billing-email", "bill@acme.example")
    ctl("payments", "add", "Acme", "10")
    assert ctl.json("mail", "list") == []
    ctl("payments", "add", "Acme", "--", "-6")  # 4: below 5, not below 3
    mails = ctl.json("mail", "list", "--client", "Acme")
    assert [(m["to"], m["status"]) for m in mails] == [("bill@acme.example", "queued")]
    assert ctl.json("events", "list", "--kind", "low_balance") == []
    shown = ctl.json("clients", "show", "Acme")["notifications"]
    assert shown["client"]["armed"] is False and shown["client"]["sent_at"]
    assert shown["admin"]["armed"] is True

    ctl("payments", "add", "Acme", "--", "-0.5")  # 3.50: still below 5, no second mail
    ctl("payments", "add", "Acme", "--", "-1")  # 2.50: below 3, the admin's event
    assert len(ctl.json("mail", "list")) == 1
    events = ctl.json("events", "list", "--kind", "low_balance", "--client", "Acme")
    assert len(events) == 1
    assert events[0]["detail"]["available"] == "2.50"
    assert events[0]["detail"]["threshold"] == "3.00"

    ctl("payments", "add", "Acme", "10")  # 12.50: both re-armed
    assert ctl.json("clients", "show", "Acme")["notifications"]["client"]["armed"] is True
    ctl("payments", "add", "Acme", "--", "-10")  # 2.50 again: both fire again
    assert len(ctl.json("mail", "list")) == 2
    assert len(ctl.json("events", "list", "--kind", "low_balance")) == 2
    assert ctl.json("mail", "list", "--status", "sent") == []


def test_hold_fires_and_only_money_coming_in_rearms(ctl: Ctl) -> None:
    ctl("clients", "add", "Acme", "--notify-admin-below", "5")
    ctl("payments", "add", "Acme", "10")
    engine = ctl.engine()
    client_id = ctl.json("clients", "show", "Acme")["id"]

    def check(balance: str, held: str) -> int:
        view = {client_id: LiveView(D(balance), D(held), 1)}
        return len(check_notifications(engine, view, mail_enabled=False))

    assert check("10", "6") == 1  # a hold takes the funds to 4
    assert check("10", "0") == 0  # the hold released: no re-arm, nothing
    assert check("9", "8") == 0  # the call charged 1; another hold: still fired
    assert check("9", "0") == 0
    assert check("15", "12") == 0  # a payment re-arms it (15 > 9 seen since)...
    assert check("15", "12") == 1  # ...and the next check fires on the hold
    assert len(ctl.json("events", "list", "--kind", "low_balance")) == 2


def test_many_processes_fire_a_crossing_once(ctl: Ctl) -> None:
    ctl("clients", "add", "Acme", "--notify-admin-below", "5")
    engine = ctl.engine()
    client_id = ctl.json("clients", "show", "Acme")["id"]
    view = {client_id: LiveView(D("1"), D("0"), 0)}
    fired: list[int] = []
    barrier = threading.Barrier(4)

    def node() -> None:
        barrier.wait()
        fired.append(len(check_notifications(engine, view, mail_enabled=False)))

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(fired) == 1
    assert len(ctl.json("events", "list", "--kind", "low_balance")) == 1


def test_mail_queue_against_a_real_smtp_server(ctl: Ctl, smtp: SmtpServer) -> None:
    _mail_on(ctl)
    ctl("clients", "add", "Acme", "--notify-client-below", "5")
    ctl("clients", "edit", "Acme", "--billing-email", "bill@acme.example")
    ctl("payments", "add", "Acme", "--", "-1")
    engine = ctl.engine()
    now = datetime.now(UTC)
    assert deliver_due(engine, _settings(smtp), now) == {"sent": 1, "retry": 0, "failed": 0}
    [message] = smtp.recorder.received
    assert message["To"] == "bill@acme.example"
    assert "Acme" in message["Subject"]
    body = message.get_payload()
    assert isinstance(body, str)
    assert "-1.00 USD" in body and "5.00 USD" in body
    assert [m["status"] for m in ctl.json("mail", "list", "--status", "sent")] == ["sent"]
    # nothing is sent twice
    assert deliver_due(engine, _settings(smtp), now + timedelta(hours=1))["sent"] == 0

    # the server goes down mid-run: the next message waits with backoff, then goes out
    ctl("payments", "add", "Acme", "10")
    ctl("payments", "add", "Acme", "--", "-10")
    smtp.stop()
    now = datetime.now(UTC)
    assert deliver_due(engine, _settings(smtp), now)["retry"] == 1
    [queued] = ctl.json("mail", "list", "--status", "queued")
    assert queued["attempts"] == 1 and queued["last_error"]
    assert deliver_due(engine, _settings(smtp), now + timedelta(seconds=5))["retry"] == 0
    smtp.start()
    smtp.recorder.answer = "451 4.3.0 try again later"
    assert deliver_due(engine, _settings(smtp), now + timedelta(seconds=11))["retry"] == 1
    smtp.recorder.answer = "250 OK"
    assert deliver_due(engine, _settings(smtp), now + timedelta(seconds=25))["retry"] == 0
    assert deliver_due(engine, _settings(smtp), now + timedelta(seconds=31))["sent"] == 1
    assert len(smtp.recorder.received) == 2

    # 5xx: failed for good, with its event
    ctl("payments", "add", "Acme", "10")
    ctl("payments", "add", "Acme", "--", "-10")
    smtp.recorder.answer = "550 5.1.1 mailbox unavailable"
    assert deliver_due(engine, _settings(smtp), datetime.now(UTC))["failed"] == 1
    [failed] = ctl.json("mail", "list", "--status", "failed")
    assert failed["last_error"].startswith("550")
    [event] = ctl.json("events", "list", "--kind", "notification_failed")
    assert event["client"] == "Acme" and event["detail"]["mail_id"] == failed["id"]


def test_a_claimed_message_is_never_sent_again_after_a_restart(ctl: Ctl, smtp: SmtpServer) -> None:
    _mail_on(ctl)
    ctl("clients", "add", "Acme", "--notify-client-below", "5", "--billing-email", "b@a.example")
    ctl("payments", "add", "Acme", "--", "-1")
    engine = ctl.engine()
    now = datetime.now(UTC)
    # a sender claimed it and died before it knew whether the server took it
    with engine.begin() as conn:
        conn.execute(update(mail_t).values(status="sending", claimed_at=now))
    assert deliver_due(engine, _settings(smtp), now)["sent"] == 0
    later = now + timedelta(minutes=5)
    assert deliver_due(engine, _settings(smtp), later) == {"sent": 0, "retry": 0, "failed": 1}
    assert smtp.recorder.received == []
    [row] = ctl.json("mail", "list")
    assert row["status"] == "failed" and "interrupted" in row["last_error"]


def test_events_list_filters_and_status_changes_queue_disconnects(ctl: Ctl) -> None:
    ctl("clients", "add", "Acme")
    ctl("clients", "add", "Beta")
    ctl("accounts", "add", "Acme", "acme-ip", "--ident", "ip", "--value", "10.0.0.1")
    engine = ctl.engine()
    ids = {c["name"]: c["id"] for c in ctl.json("clients", "list")}
    now = datetime.now(UTC)
    account_id = ctl.json("accounts", "list")[0]["id"]
    with engine.begin() as conn:
        for sid, client in (("s1", "Acme"), ("s2", "Acme"), ("s3", "Beta")):
            conn.execute(
                insert(calls_t).values(
                    client_id=ids[client],
                    account_id=account_id if client == "Acme" else None,
                    nas_key="127.0.0.1/32|127.0.0.1",
                    acct_session_id=sid,
                    called="15551234567",
                    state="active",
                    granted_seconds=60,
                    hold=D("0.6"),
                    started_at=now,
                    last_seen_at=now,
                    max_session_time=30 if sid != "s3" else 400,
                    accounted=True,
                )
            )
    ctl("accounts", "disable", "acme-ip")
    ctl("clients", "edit", "Acme", "--status", "stop")
    ctl("clients", "delete", "Acme")
    kinds = [e["kind"] for e in ctl.json("events", "list", "--client", "Acme")]
    assert kinds == ["client_deleted", "client_stopped", "account_disabled"]
    assert (
        ctl.json("events", "list", "--kind", "client_stopped")[0]["detail"]["disconnects_queued"]
        == 2
    )
    assert ctl.json("events", "list", "--since", "2099-01-01") == []
    assert len(ctl.json("events", "list", "--since", now.date().isoformat())) == 3
    assert ctl.fail("events", "list", "--client", "Nobody") == "no client named 'Nobody'"
    code, _out, err = ctl.run("events", "list", "--since", "yesterday")
    assert code == 2 and "argument --since: not a date" in err

    # Beta's call reports 400 s on a 60 s grant: past grant + grace, one row however often
    assert queue_overruns(engine, now, 300) == 1
    assert queue_overruns(engine, now, 300) == 0
    with engine.connect() as conn:
        rows = [(r.acct_session_id, r.reason) for r in conn.execute(select(disconnect_t))]
    assert sorted(rows) == [
        ("s1", "account_disabled"),
        ("s1", "client_deleted"),
        ("s1", "client_stopped"),
        ("s2", "account_disabled"),
        ("s2", "client_deleted"),
        ("s2", "client_stopped"),
        ("s3", "overrun"),
    ]

    record_event(engine, "lockout", client_id=ids["Beta"], detail={"account": "beta-login"})
    [lockout] = ctl.json("events", "list", "--kind", "lockout")
    assert lockout["client"] == "Beta"
    table = ctl("events", "list", "--kind", "lockout")
    assert "beta-login" in table.splitlines()[1]


def test_accounting_writes_its_events_in_its_transaction(db_url: str) -> None:
    from dataclasses import replace

    from billing_core.adapters.sql.db import make_engine
    from billing_core.domain.identification import CallerFacts
    from billing_core.domain.policy import Accept
    from billingctl.services import load

    from .test_sql_store import call, services, spec, stop

    load.apply_provisioning(make_engine(db_url), spec("5.00"))
    store, authz, acct = services(db_url)
    assert isinstance(decide(authz, call("c1")).decision, Accept)
    acct.record(replace(stop("c1", 0), status=1, session_time=None))
    nobody = replace(
        stop("u1", 0), status=1, session_time=None, caller=CallerFacts(user_name="nobody")
    )
    assert acct.record(nobody).result == "unknown_account"
    assert acct.record(replace(nobody, status=3, session_time=5)).result == "unknown_account"
    reboot = replace(stop("c1", 0), status=7, arrived=datetime.now(UTC) + timedelta(seconds=5))
    assert acct.record(reboot).closed_calls == 1  # Accounting-On

    assert isinstance(decide(authz, call("c2")).decision, Accept)
    later = datetime.now(UTC) + timedelta(seconds=10)  # after the reboot's epoch began
    acct.record(replace(stop("c2", 0), status=1, session_time=None, arrived=later))
    assert acct.close_stale(datetime.now(UTC) + timedelta(hours=5)) == 1

    with store.engine.connect() as conn:
        from billing_core.adapters.sql.tables import events_t

        rows = list(conn.execute(select(events_t).order_by(events_t.c.id)))
    assert [r.kind for r in rows] == ["unknown_account", "nas_rebooted", "call_stale"]
    assert '"closed_calls": 1' in rows[1].detail and rows[1].nas_key == "nas|10.0.0.1"
    assert rows[2].client_name == "Acme" and '"acct_session_id": "c2"' in rows[2].detail
