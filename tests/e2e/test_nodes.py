"""Two daemons on one PostgreSQL and one Redis: a node that loses Redis, then goes away,
leaves nothing for the others to trip over (the live state heals from the database)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .conftest import Daemon, make_daemon
from .servers import TcpProxy

PROVISIONING = """
settings: {max_call_length: 300}
rate_tables:
  - name: retail
    rates:
      - {code: "1", rate: "0.60", min_volume: 1, interval: 1, effective_date: "2026-01-01"}
clients:
  - name: Acme
    rate_table: retail
    capacity: 2
    payments: [{id: opening, amount: "10.00"}]
    accounts:
      - {name: acme-login, ident: login, value: acme}
"""


def call(conf: str) -> dict[str, str]:
    return {
        "User-Name": '"acme"',
        "Called-Station-Id": '"15550001111"',
        "h323-conf-id": f'"h323-conf-id={conf}"',
        "Acct-Session-Id": f'"leg-{conf}"',
        "NAS-IP-Address": "127.0.0.1",
    }


def authorize(node: Daemon, conf: str) -> str:
    reply = node.radclient("auth", call(conf))
    assert reply is not None
    return reply.cisco("h323-return-code")


def account(node: Daemon, conf: str, status: str, seconds: int | None = None) -> None:
    attributes = {**call(conf), "Acct-Status-Type": status}
    if seconds is not None:
        attributes["Acct-Session-Time"] = str(seconds)
    reply = node.radclient("acct", attributes)
    assert reply is not None and reply.code == "Accounting-Response"


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Daemon, Daemon, TcpProxy]]:
    """Node A reaches Redis through a proxy the test can cut; node B directly."""
    target = urlparse(redis_url)
    proxy = TcpProxy(target.port or 6379)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_daemon(tmp_path / "a", (pg_url, f"redis://127.0.0.1:{proxy.port}{target.path}"))
    b = make_daemon(tmp_path / "b", (pg_url, redis_url))
    (tmp_path / "acme.yaml").write_text(PROVISIONING)
    b.billingctl("load", str(tmp_path / "acme.yaml"))
    a.start()
    b.start()
    yield a, b, proxy
    for node in (a, b):
        if node.process is not None:
            node.process.kill()
            node.process.wait()
    proxy.close()


@pytest.mark.parametrize("gone", [signal.SIGTERM, signal.SIGKILL])
def test_a_node_cut_off_from_redis_leaves_no_drift_once_it_is_gone(
    nodes: tuple[Daemon, Daemon, TcpProxy], gone: signal.Signals
) -> None:
    a, b, proxy = nodes
    for conf in ("c1", "c2"):
        assert authorize(a, conf) == "0"
        account(a, conf, "Start")
    assert b.client("Acme")["active_calls"] == 2
    assert authorize(b, "c3") == "3"  # at capacity: both nodes see both calls

    proxy.sever()  # A loses Redis; B does not
    account(a, "c1", "Stop", 30)  # accounting goes on: 0.30 each, in the database only
    account(a, "c2", "Stop", 30)
    assert a.process is not None
    a.process.send_signal(gone)
    a.process.wait(timeout=30)
    a.process = None

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        shown = b.client("Acme")
        if shown["active_calls"] == 0:
            break
        time.sleep(0.25)
    assert (shown["active_calls"], shown["held"], shown["live_balance"]) == (0, "0.00", "9.40")
    verify = b.billingctl("live", "verify", "--format", "json")
    assert json.loads(verify.stdout)["drifts"] == []
    assert json.loads(b.billingctl("sessions", "list", "--format", "json").stdout) == []
    assert authorize(b, "c3") == "0"  # capacity is free again
    cdrs = json.loads(b.billingctl("cdrs", "list", "--format", "json").stdout)
    assert sorted((c["acct_session_id"], c["cost"]) for c in cdrs) == [
        ("leg-c1", "0.30"),
        ("leg-c2", "0.30"),
    ]
    healed = [line for line in b.log().splitlines() if "live_state_healed" in line]
    assert healed, b.log()
