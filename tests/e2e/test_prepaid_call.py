"""A prepaid call end to end through the real daemon, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Daemon

PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "1", name: USA, rate: "0.10", setup_fee: "0", min_volume: 60, interval: 60,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Acme
    locale: es
    rate_table: retail
    payments: [{id: opening, amount: "1.00"}]
    accounts:
      - {name: acme-login, ident: login, value: acme, password: s3cret}
  - name: Broke
    rate_table: retail
    accounts:
      - {name: broke-ip, ident: ip, value: "10.9.9.9"}
"""


def provision(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "demo.yaml"))


def test_a_prepaid_call_is_granted_charged_and_shown(daemon: Daemon, tmp_path: Path) -> None:
    provision(daemon, tmp_path)
    daemon.start()
    reply = daemon.radclient(
        "auth",
        {
            "User-Name": '"acme"',
            "User-Password": '"s3cret"',
            "Called-Station-Id": '"15550001111"',
            "Calling-Station-Id": '"4420771234"',
            "h323-conf-id": '"h323-conf-id=3A7C0F21 8B1D11EF 9F2A0050 56A1B2C3"',
        },
    )
    assert reply is not None and reply.code == "Access-Accept"
    assert reply.cisco("h323-return-code") == "0"
    assert reply.cisco("h323-credit-time") == "600"
    assert reply.one("Session-Timeout") == "600"
    assert reply.cisco("h323-billing-model") == "1"
    assert reply.cisco("h323-credit-amount") == "1.00"
    assert reply.cisco("h323-currency") == "USD"
    assert reply.cisco("h323-preferred-lang") == "es"
    assert "Message-Authenticator" in reply.attributes
    assert daemon.client("Acme")["held"] == "1.00"
    held = json.loads(daemon.billingctl("sessions", "list", "--format", "json").stdout)
    assert [(s["client"], s["state"], s["granted_seconds"], s["held"]) for s in held] == [
        ("Acme", "held", 600, "1.00")
    ]

    call = {
        "User-Name": '"acme"',
        "Acct-Session-Id": '"leg-1"',
        "h323-conf-id": '"h323-conf-id=3A7C0F21 8B1D11EF 9F2A0050 56A1B2C3"',
        "Called-Station-Id": '"15550001111"',
        "NAS-IP-Address": "127.0.0.1",
    }
    start = daemon.radclient("acct", {**call, "Acct-Status-Type": "Start"})
    assert start is not None and start.code == "Accounting-Response"
    sessions = daemon.billingctl("sessions", "list", "--format", "json").stdout
    assert '"state": "active"' in sessions and '"acct_session_id": "leg-1"' in sessions
    assert daemon.client("Acme")["active_calls"] == 1

    stop = {**call, "Acct-Status-Type": "Stop", "Acct-Session-Time": "61"}
    assert daemon.radclient("acct", stop) is not None
    shown = daemon.client("Acme")
    assert shown["live_balance"] == "0.80"
    assert shown["held"] == "0.00"
    assert shown["active_calls"] == 0

    # the same Stop re-sent with a new Identifier and a delay: answered, not charged again
    resent = daemon.radclient("acct", {**stop, "Acct-Delay-Time": "4"})
    assert resent is not None and resent.code == "Accounting-Response"
    assert daemon.client("Acme")["live_balance"] == "0.80"
    cdrs = daemon.billingctl("cdrs", "list", "--format", "json").stdout
    assert cdrs.count('"acct_session_id": "leg-1"') == 1
    assert '"cost": "0.20"' in cdrs and '"billed_duration": 120' in cdrs

    assert daemon.stop() == 0
    assert len(daemon.log_events("radius_request")) == 4


def test_rejects_carry_their_codes(daemon: Daemon, tmp_path: Path) -> None:
    provision(daemon, tmp_path)
    daemon.start()
    cases = [
        ({"User-Name": '"nobody"', "Called-Station-Id": '"15550001111"'}, "1"),
        ({"User-Name": '"10.9.9.9"', "Called-Station-Id": '"15550001111"'}, "4"),
        (
            {
                "User-Name": '"acme"',
                "User-Password": '"s3cret"',
                "Called-Station-Id": '"4420771234"',
            },
            "9",
        ),
        ({"User-Name": '"acme"', "User-Password": '"wrong"', "Called-Station-Id": '"1555"'}, "2"),
    ]
    for attributes, code in cases:
        reply = daemon.radclient("auth", attributes)
        assert reply is not None and reply.code == "Access-Reject", attributes
        assert reply.cisco("h323-return-code") == code
        assert reply.one("Reply-Message")
    # two concurrent calls on 1.00: the second cannot afford the first grid point (code 12)
    first = daemon.radclient(
        "auth",
        {
            "User-Name": '"acme"',
            "User-Password": '"s3cret"',
            "Called-Station-Id": '"1555"',
            "Acct-Session-Id": '"a"',
        },
    )
    assert first is not None and first.cisco("h323-credit-time") == "600"
    second = daemon.radclient(
        "auth",
        {
            "User-Name": '"acme"',
            "User-Password": '"s3cret"',
            "Called-Station-Id": '"1555"',
            "Acct-Session-Id": '"b"',
        },
    )
    assert second is not None and second.cisco("h323-return-code") == "12"
    status, metrics = daemon.http("/metrics")
    assert status == 200
    assert 'radiusd_rejects_total{reason="insufficient_funds"} 1.0' in metrics
    assert 'radiusd_requests_total{result="reject",type="auth"} 5.0' in metrics
    assert daemon.http("/healthz") == (200, "ok\n")
    assert daemon.stop() == 0


def test_unknown_nas_and_bad_secret_get_no_reply(daemon: Daemon, tmp_path: Path) -> None:
    provision(daemon, tmp_path)
    daemon.start()
    import subprocess

    body = 'User-Name = "acme"\nAcct-Status-Type = Start\nAcct-Session-Id = "x"\n'
    out = subprocess.run(
        [
            "radclient",
            "-r",
            "1",
            "-t",
            "1",
            f"127.0.0.1:{daemon.acct_port}",
            "acct",
            "wrong-secret",
        ],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Received" not in out.stdout
    _status, metrics = daemon.http("/metrics")
    assert 'radiusd_dropped_total{reason="bad_authenticator"}' in metrics
    assert daemon.stop() == 0


def test_start_failures_are_one_line(tmp_path: Path) -> None:
    import os
    import subprocess

    from bench.ports import free_port

    from .conftest import BIN, write_config

    cases = [
        (f"sqlite:///{tmp_path / 'empty.db'}", "run `billingctl db upgrade`"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/none", "database unreachable"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIUSD_")}
    for url, expected in cases:
        config = tmp_path / "radiusd.toml"
        write_config(config, url, free_port(), free_port(), free_port())
        result = subprocess.run(
            [str(BIN / "radiusd"), "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("radiusd: ") and expected in lines[0]
        assert "Traceback" not in result.stderr
