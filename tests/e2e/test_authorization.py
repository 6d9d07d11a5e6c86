"""CONTRACT §3's authorization table, row by row, through the real daemon and radclient."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Daemon, Reply

PROVISIONING = """
settings:
  max_call_length: 1800
rate_tables:
  - name: retail
    rates:
      - {code: "1", rate: "0.10", min_volume: 60, interval: 60, effective_date: "2026-01-01"}
      - {code: "44", rate: "0.20", min_volume: 60, interval: 60, effective_date: "2026-01-01"}
      - {code: "49", rate: "9.00", min_volume: 60, interval: 60, effective_date: "2026-01-01",
         end_date: "2026-02-01"}
  - name: retail-eur
    currency: EUR
    rates:
      - {code: "1", rate: "0.10", min_volume: 60, interval: 60, effective_date: "2026-01-01"}
clients:
  - name: Acme
    locale: es
    rate_table: retail
    payments: [{id: acme-1, amount: "1.00"}]
    accounts:
      - {name: acme-login, ident: login, value: acme, password: s3cret}
      - {name: acme-ip, ident: ip, value: "10.1.1.1", tech_prefix: "123#"}
      - {name: acme-ani, ident: ani, value: "4420771234"}
  - name: Gone
    status: deleted
    rate_table: retail
    payments: [{id: gone-1, amount: "5.00"}]
    accounts: [{name: gone, ident: login, value: gone}]
  - name: Stopped
    status: stop
    rate_table: retail
    payments: [{id: stop-1, amount: "5.00"}]
    accounts: [{name: stopped, ident: login, value: stopped}]
  - name: Broke
    rate_table: retail
    accounts: [{name: broke, ident: login, value: broke}]
  - name: Indebted
    credit: "-1.00"
    rate_table: retail
    payments: [{id: debt-1, amount: "0.50"}]
    accounts: [{name: indebted, ident: login, value: indebted}]
  - name: Trusted
    credit: "5.00"
    rate_table: retail
    accounts: [{name: trusted, ident: login, value: trusted}]
  - name: Single
    capacity: 1
    rate_table: retail
    payments: [{id: single-1, amount: "10.00"}]
    accounts: [{name: single, ident: login, value: single}]
  - name: Thin
    capacity: 5
    low_balance: {threshold: "20.00", capacity: 0}
    rate_table: retail
    payments: [{id: thin-1, amount: "10.00"}]
    accounts: [{name: thin, ident: login, value: thin}]
  - name: Globex
    postpaid: true
    currency: EUR
    rate_table: retail-eur
    accounts: [{name: globex, ident: login, value: globex}]
"""


def auth(daemon: Daemon, user: str, called: str | None = "15550001111", **extra: str) -> Reply:
    attributes = {"User-Name": f'"{user}"'}
    if called is not None:
        attributes["Called-Station-Id"] = f'"{called}"'
    attributes.update({k.replace("_", "-"): v for k, v in extra.items()})
    reply = daemon.radclient("auth", attributes)
    assert reply is not None, f"no reply for {attributes}"
    return reply


def rejected(reply: Reply, code: str) -> None:
    assert reply.code == "Access-Reject", reply
    assert reply.cisco("h323-return-code") == code
    assert reply.one("Reply-Message")
    assert "Session-Timeout" not in reply.attributes


@pytest.fixture
def running(daemon: Daemon, tmp_path: Path) -> Daemon:
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    daemon.start()
    return daemon


def test_the_checks_table_row_by_row(running: Daemon) -> None:
    d = running
    pw = {"User_Password": '"s3cret"'}
    rejected(auth(d, "nobody"), "1")  # no account matches
    rejected(auth(d, "acme", User_Password='"wrong"'), "2")  # wrong password
    rejected(auth(d, "acme"), "2")  # missing password
    rejected(auth(d, "gone"), "1")  # deleted client
    rejected(auth(d, "stopped"), "7")  # stopped client
    rejected(auth(d, "acme", "86123456", **pw), "9")  # no rate for the number
    rejected(auth(d, "acme", "4912345", **pw), "9")  # a rate that has ended
    rejected(auth(d, "thin"), "3")  # the low-balance capacity (0) applies under 20.00
    rejected(auth(d, "broke"), "4")  # prepaid, zero balance, no credit
    rejected(auth(d, "indebted"), "6")  # available -0.50 with a credit limit
    ok = auth(d, "acme", "44207712345", **pw)  # 1.00 at 0.20/min: 300 s
    assert ok.code == "Access-Accept" and ok.cisco("h323-credit-time") == "300"
    rejected(auth(d, "acme", "15550001111", **pw), "12")  # the first call holds everything

    trusted = auth(d, "trusted")  # balance 0 + credit 5.00 at 0.10/min, capped at 1800
    assert trusted.cisco("h323-credit-time") == "1800"
    assert trusted.cisco("h323-credit-amount") == "5.00"

    postpaid = auth(d, "globex")
    assert postpaid.code == "Access-Accept"
    assert postpaid.cisco("h323-credit-time") == "1800"
    assert postpaid.one("Session-Timeout") == "1800"
    assert postpaid.cisco("h323-billing-model") == "0"
    assert postpaid.cisco("h323-currency") == "EUR"
    assert "h323-credit-amount" not in postpaid.attributes
    assert "h323-preferred-lang" not in postpaid.attributes


def test_capacity_counts_other_calls_but_not_the_request_own(running: Daemon) -> None:
    d = running
    first = auth(d, "single", Acct_Session_Id='"call-1"')
    assert first.code == "Access-Accept"
    rejected(auth(d, "single", Acct_Session_Id='"call-2"'), "3")
    # the same call asking again (a calling card's second stage, a failover) is not over capacity
    again = auth(d, "single", Acct_Session_Id='"call-1"')
    assert again.code == "Access-Accept"
    shown = d.client("Single")
    assert shown["held"] == "3.00"  # one hold of 1800 s at 0.10/min, not two


def test_authentication_only_without_a_called_number(running: Daemon) -> None:
    d = running
    reply = auth(d, "acme", None, User_Password='"s3cret"', h323_conf_id='"h323-conf-id=1 2 3 4"')
    assert reply.code == "Access-Accept"
    assert reply.cisco("h323-return-code") == "0"
    assert reply.cisco("h323-billing-model") == "1"
    assert reply.cisco("h323-credit-amount") == "1.00"
    assert reply.cisco("h323-preferred-lang") == "es"
    assert "h323-credit-time" not in reply.attributes
    assert "Session-Timeout" not in reply.attributes
    assert d.client("Acme")["held"] == "0.00"
    rejected(auth(d, "broke", None), "4")
    rejected(auth(d, "10.1.1.1", None), "1")  # a tech-prefix account cannot match it


def test_who_is_calling_ip_ani_and_tech_prefix(running: Daemon) -> None:
    d = running
    by_ip = auth(d, "10.1.1.1", "123#15550001111")
    assert by_ip.code == "Access-Accept" and by_ip.cisco("h323-credit-time") == "600"
    d.billingctl("payments", "add", "Acme", "1.00")
    rejected(auth(d, "10.1.1.1", "15550001111"), "1")  # the prefix is required
    by_ani = auth(
        d, "unknown-user", "sip:+15550001111@example.com", Calling_Station_Id='"+4420771234"'
    )
    assert by_ani.code == "Access-Accept"
    assert by_ani.cisco("h323-credit-time") == "600"


def test_a_payment_counts_at_the_next_authorization(running: Daemon) -> None:
    d = running
    rejected(auth(d, "broke"), "4")
    d.billingctl("payments", "add", "Broke", "0.30")
    reply = auth(d, "broke")
    assert reply.code == "Access-Accept" and reply.cisco("h323-credit-time") == "180"
    d.billingctl("settings", "set", "max_call_length", "120")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        # the same call asking again: its own hold is not counted, so only the cap changes
        if auth(d, "trusted", Acct_Session_Id='"probe"').cisco("h323-credit-time") == "120":
            break
        time.sleep(0.3)
    assert auth(d, "trusted", Acct_Session_Id='"probe"').cisco("h323-credit-time") == "120"
