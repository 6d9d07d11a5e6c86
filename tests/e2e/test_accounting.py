"""Accounting through the real daemon: legs, exactly once, Accounting-On, stale calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Daemon, make_daemon

PROVISIONING = """
settings:
  max_call_length: 3600
rate_tables:
  - name: retail
    rates:
      - {code: "1", rate: "0.60", min_volume: 1, interval: 1, effective_date: "2026-01-01"}
clients:
  - name: Acme
    capacity: 1
    rate_table: retail
    payments: [{id: acme-1, amount: "100.00"}]
    accounts:
      - {name: acme, ident: login, value: acme}
      - {name: acme-gw, ident: ip, value: "192.0.2.10"}
"""


@pytest.fixture
def running(tmp_path: Path, backend: tuple[str, str]) -> Iterator[Daemon]:
    d = make_daemon(tmp_path, backend, billing="stale_grace_seconds = 1")
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    d.billingctl("load", str(tmp_path / "p.yaml"))
    d.start()
    yield d
    if d.process is not None:
        d.process.kill()
        d.process.wait()


def acct(d: Daemon, status: str, session: str, **extra: str) -> None:
    attributes = {
        "User-Name": '"acme"',
        "Acct-Status-Type": status,
        "Acct-Session-Id": f'"{session}"',
        "Called-Station-Id": '"15550001111"',
        "NAS-IP-Address": "127.0.0.1",
    }
    attributes.update({k.replace("_", "-"): v for k, v in extra.items()})
    reply = d.radclient("acct", attributes)
    assert reply is not None and reply.code == "Accounting-Response", attributes


def auth(d: Daemon, session: str) -> str:
    reply = d.radclient(
        "auth",
        {
            "User-Name": '"acme"',
            "Called-Station-Id": '"15550001111"',
            "Acct-Session-Id": f'"{session}"',
            "NAS-IP-Address": "127.0.0.1",
        },
    )
    assert reply is not None
    return reply.cisco("h323-return-code")


def cdrs(d: Daemon) -> list[dict[str, Any]]:
    return list(json.loads(d.billingctl("cdrs", "list", "--format", "json").stdout))


def balance(d: Daemon) -> str:
    return str(d.client("Acme")["live_balance"])


def test_an_interim_then_a_stop_charges_the_stop_duration(running: Daemon) -> None:
    d = running
    assert auth(d, "s1") == "0"
    acct(d, "Start", "s1")
    acct(d, "Interim-Update", "s1", Acct_Session_Time="30")
    assert d.client("Acme")["active_calls"] == 1
    acct(d, "Stop", "s1", Acct_Session_Time="95")
    assert [(c["duration"], c["cost"], c["closed_by"]) for c in cdrs(d)] == [(95, "0.95", "stop")]
    assert balance(d) == "99.05"
    assert d.client("Acme")["active_calls"] == 0


def test_a_duplicate_stop_is_charged_once_and_a_collision_is_charged(running: Daemon) -> None:
    d = running
    acct(d, "Stop", "dup", Acct_Session_Time="60")  # no Start, no authorization: still charged
    acct(d, "Stop", "dup", Acct_Session_Time="60", Acct_Delay_Time="9")  # the same Stop again
    assert balance(d) == "99.40"
    acct(d, "Stop", "dup", Acct_Session_Time="10")  # same identity, another duration: a new leg
    assert balance(d) == "99.30"
    assert sorted(c["duration"] for c in cdrs(d)) == [10, 60]
    _status, metrics = d.http("/metrics")
    assert "radiusd_session_id_collisions_total 1.0" in metrics


def test_only_the_billable_leg_is_charged(running: Daemon) -> None:
    d = running
    conf = '"h323-conf-id=AA BB CC DD"'
    for origin in ("answer", "originate"):
        acct(
            d,
            "Start",
            "sippy-1",
            h323_conf_id=conf,
            h323_call_origin=f'"h323-call-origin={origin}"',
        )
    for origin in ("answer", "originate"):
        acct(
            d,
            "Stop",
            "sippy-1",
            Acct_Session_Time="100",
            h323_conf_id=conf,
            h323_call_origin=f'"h323-call-origin={origin}"',
        )
    assert [(c["duration"], c["cost"]) for c in cdrs(d)] == [(100, "1.00")]
    assert balance(d) == "99.00"


def test_accounting_on_frees_the_capacity(running: Daemon) -> None:
    d = running
    assert auth(d, "c1") == "0"
    acct(d, "Start", "c1")
    acct(d, "Interim-Update", "c1", Acct_Session_Time="40")
    assert auth(d, "c2") == "3"  # capacity 1
    acct(d, "Accounting-On", "reboot-1")
    assert auth(d, "c3") == "0"
    closed = cdrs(d)
    assert [(c["duration"], c["cost"], c["closed_by"]) for c in closed] == [
        (40, "0.40", "accounting-on")
    ]
    # the Stop of the closed call arrives late (its event time is before the reboot): corrected
    acct(d, "Stop", "c1", Acct_Session_Time="50", Acct_Delay_Time="30")
    assert [(c["duration"], c["cost"]) for c in cdrs(d)] == [(50, "0.50")]
    assert balance(d) == "99.50"


def test_a_stale_call_is_closed_and_a_late_stop_corrects_it(running: Daemon) -> None:
    d = running
    d.billingctl("settings", "set", "max_call_length", "2")
    time.sleep(1.5)  # the daemon picks the setting up within a second
    assert auth(d, "quiet") == "0"
    acct(d, "Start", "quiet")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not cdrs(d):
        time.sleep(0.3)
    stale = cdrs(d)
    assert [(c["duration"], c["cost"], c["closed_by"]) for c in stale] == [(0, "0.00", "stale")]
    assert d.client("Acme")["active_calls"] == 0
    acct(d, "Stop", "quiet", Acct_Session_Time="61")
    acct(d, "Stop", "quiet", Acct_Session_Time="61", Acct_Delay_Time="3")
    corrected = cdrs(d)
    assert [(c["duration"], c["cost"], c["closed_by"]) for c in corrected] == [
        (61, "0.61", "stale")
    ]
    assert balance(d) == "99.39"


def test_unknown_accounts_are_recorded_and_answered(running: Daemon) -> None:
    d = running
    reply = d.radclient(
        "acct",
        {
            "User-Name": '"stranger"',
            "Acct-Status-Type": "Stop",
            "Acct-Session-Id": '"x"',
            "Acct-Session-Time": "60",
        },
    )
    assert reply is not None and reply.code == "Accounting-Response"
    assert cdrs(d) == []
    _status, metrics = d.http("/metrics")
    assert 'radiusd_rejects_total{reason="unknown_account"} 1.0' in metrics


def test_a_failed_leg_makes_no_cdr_and_keeps_the_call(running: Daemon) -> None:
    d = running
    assert auth(d, "f1") == "0"
    acct(d, "Failed", "f1")
    assert cdrs(d) == []
    assert auth(d, "f2") == "3"  # the call is held again for another attempt
    acct(d, "Stop", "f1", Acct_Session_Time="5")
    assert [(c["duration"], c["cost"]) for c in cdrs(d)] == [(5, "0.05")]
    assert auth(d, "f3") == "0"
