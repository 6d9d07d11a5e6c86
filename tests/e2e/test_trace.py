"""`radiusd serve --trace USER`: the real daemon logs the decision steps of that caller only,
and SIGUSR1 turns the tracing off and on."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BIN, Daemon, make_daemon

PROVISIONING = """
settings: {max_call_length: 60}
rate_tables:
  - name: retail
    rates:
      - {code: "1", rate: "0.10", min_volume: 60, interval: 60, effective_date: "2026-01-01"}
clients:
  - name: Acme
    rate_table: retail
    payments: [{id: acme-1, amount: "1.00"}]
    accounts: [{name: acme-login, ident: login, value: acme, password: s3cret}]
  - name: Other
    rate_table: retail
    payments: [{id: other-1, amount: "1.00"}]
    accounts: [{name: other-login, ident: login, value: other}]
"""


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def traced(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemon]:
    if request.param == "sqlite":
        backend = (str(request.getfixturevalue("sqlite_url")), "")
    else:
        backend = (
            str(request.getfixturevalue("pg_url")),
            str(request.getfixturevalue("redis_url")),
        )
    daemon = make_daemon(tmp_path, backend)
    daemon.billingctl("db", "upgrade")
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    log = (tmp_path / "daemon.log").open("ab")
    daemon.process = subprocess.Popen(
        [str(BIN / "radiusd"), "serve", "--config", str(daemon.config), "--trace", "acme"],
        cwd=tmp_path,
        env=daemon.env,
        stdout=log,
        stderr=log,
    )
    wait_for(daemon, "started")
    yield daemon
    if daemon.process is not None:
        daemon.process.kill()
        daemon.process.wait()


def wait_for(daemon: Daemon, event: str, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while len(daemon.log_events(event)) < count:
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log()
        assert time.monotonic() < deadline, f"no {event} in:\n{daemon.log()}"
        time.sleep(0.05)


def call(daemon: Daemon, user: str, password: str = "") -> str:
    attributes = {"User-Name": user, "Called-Station-Id": "15550001111"}
    if password:
        attributes["User-Password"] = password
    reply = daemon.radclient("auth", attributes)
    assert reply is not None
    return reply.code


def test_trace_logs_the_steps_of_the_traced_caller_only(traced: Daemon) -> None:
    wait_for(traced, "trace_on")
    assert call(traced, "acme", "s3cret") == "Access-Accept"
    assert call(traced, "other") == "Access-Accept"
    assert call(traced, "acme", "hunter2x") == "Access-Reject"
    wait_for(traced, "radius_request", 3)
    traces = traced.log_events("auth_trace")
    assert [t["user"] for t in traces] == ["acme", "acme"]
    first, second = traces
    steps = [s["step"] for s in first["steps"]]  # type: ignore[attr-defined]
    assert steps == [
        "nas",
        "account",
        "password",
        "status",
        "number",
        "rate",
        "balance",
        "holds",
        "capacity",
        "decision",
    ]
    assert (first["result"], first["code"]) == ("accept", 0)
    by_step = {s["step"]: s for s in first["steps"]}  # type: ignore[attr-defined]
    assert by_step["account"]["client"] == "Acme"
    assert by_step["balance"]["live_balance"] == "1.00"
    assert by_step["decision"]["grant_seconds"] == 60  # max_call_length
    assert by_step["decision"]["hold"] == "0.10"
    assert (second["result"], second["code"], second["reason"]) == ("reject", 2, "bad_password")
    assert "s3cret" not in traced.log() and "hunter2x" not in traced.log()

    # SIGUSR1: off, then on again
    assert traced.process is not None
    traced.process.send_signal(signal.SIGUSR1)
    wait_for(traced, "trace_off")
    assert call(traced, "acme", "s3cret") == "Access-Accept"
    wait_for(traced, "radius_request", 4)
    assert len(traced.log_events("auth_trace")) == 2
    traced.process.send_signal(signal.SIGUSR1)
    wait_for(traced, "trace_on", 2)
    assert call(traced, "acme", "s3cret") == "Access-Accept"
    wait_for(traced, "auth_trace", 3)
    assert traced.stop() == 0
