"""Dual stack: a ``[::]`` listener answers IPv4 switches (their ``::ffff:a.b.c.d`` sources
match IPv4 ``[[nas]]`` entries and make the same NAS key as over an IPv4 socket) and IPv4
scrapers of /metrics, and a v4-mapped listen address works. The real daemon, radclient
over IPv4."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import BIN, make_daemon

PROVISIONING = """
rate_tables:
  - name: flat
    rates:
      - {code: "1", rate: "0.60", min_volume: 0, interval: 1, effective_date: "2020-01-01"}
clients:
  - name: Dual
    postpaid: true
    rate_table: flat
    accounts: [{name: dual, ident: login, value: dual}]
"""


@pytest.mark.parametrize("host", ["::", "::ffff:127.0.0.1"])
def test_an_ipv6_listener_answers_an_ipv4_switch(
    tmp_path: Path, sqlite_url: str, host: str
) -> None:
    daemon = make_daemon(tmp_path, (sqlite_url, ""))
    text = daemon.config.read_text()
    for port in (daemon.auth_port, daemon.acct_port, daemon.metrics_port):
        text = text.replace(f'"127.0.0.1:{port}"', f'"[{host}]:{port}"')
    daemon.config.write_text(text)
    check = subprocess.run(
        [str(BIN / "radiusd"), "check-config", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        env=daemon.env,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    assert f'auth_listen = "[{host}]:{daemon.auth_port}"' in check.stdout
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    daemon.start()
    try:
        started = daemon.log_events("started")
        assert re.search(rf"\[{re.escape(host)}\]:{daemon.auth_port}", json.dumps(started))
        # the metrics endpoint too: an IPv4 scraper reaches it
        assert daemon.http("/healthz")[0] == 200
        reply = daemon.radclient(
            "auth", {"User-Name": '"dual"', "Called-Station-Id": '"15550001111"'}
        )
        assert reply is not None and reply.code == "Access-Accept", daemon.log()
        session = {"User-Name": '"dual"', "Acct-Session-Id": '"ds-1"'}
        start = daemon.radclient(
            "acct", {**session, "Acct-Status-Type": "Start", "Called-Station-Id": '"15550001111"'}
        )
        assert start is not None and start.code == "Accounting-Response"
        stop = daemon.radclient(
            "acct",
            {
                **session,
                "Acct-Status-Type": "Stop",
                "Acct-Session-Time": "10",
                "Called-Station-Id": '"15550001111"',
            },
        )
        assert stop is not None and stop.code == "Accounting-Response"
        (cdr,) = json.loads(daemon.billingctl("cdrs", "list", "--format", "json").stdout)
        # the source ::ffff:127.0.0.1 is the IPv4 switch 127.0.0.1: the same NAS key as on
        # an IPv4 socket, not a second NAS
        assert cdr["nas"] == "127.0.0.1/32|127.0.0.1"
        assert cdr["cost"] == "0.10"
    finally:
        assert daemon.stop() == 0
