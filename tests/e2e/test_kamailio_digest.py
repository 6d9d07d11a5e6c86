"""A real Kamailio (contrib/kamailio/kamailio.cfg, auth_radius) challenges a SIP caller and
forwards its digest to the daemon, which verifies it against the account's encrypted
secret: the right password places the call, a wrong one gets 403 (Access-Reject)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Daemon, make_daemon
from .kamailio import Kamailio, KamailioOptions
from .sipua import Callee, Caller

PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "44", name: UK, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Alice
    rate_table: retail
    payments: [{id: opening, amount: "10.00"}]
    accounts:
      - {name: alice-login, ident: login, value: alice, password: "w0nderland",
         auth_methods: [digest]}
"""
NUMBER = "4420794600123"


@dataclass
class Setup:
    daemon: Daemon
    kamailio: Kamailio
    callee: Callee

    def call(self, password: str) -> tuple[int, list[int]]:
        caller = Caller(("127.0.0.1", self.kamailio.port), "alice", password=password)
        try:
            result = caller.call(NUMBER, self.callee.port, talk=0.5)
        finally:
            caller.close()
        return result.status, result.responses


@pytest.fixture
def sip(tmp_path: Path, sqlite_url: str) -> Iterator[Setup]:
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        pytest.fail("kamailio is missing: install kamailio and kamailio-radius-modules (.ci/run)")
    key = tmp_path / "secrets.key"
    key.write_text(bytes(range(32)).hex())
    key.chmod(0o600)
    daemon = make_daemon(
        tmp_path,
        (sqlite_url, ""),
        extra=f'dialect = "kamailio"\n\n[security]\nsecrets_key_file = "{key}"\n',
    )
    daemon.billingctl("db", "upgrade")
    (tmp_path / "sip.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "sip.yaml"))
    daemon.start()
    kamailio = Kamailio(
        tmp_path, KamailioOptions(auth_ports=(daemon.auth_port,), acct_ports=(daemon.acct_port,))
    )
    callee = Callee("answer")
    try:
        kamailio.start()
        yield Setup(daemon, kamailio, callee)
    finally:
        callee.close()
        kamailio.stop()
        if daemon.process is not None:
            daemon.stop()


def test_kamailio_digest_right_password_calls_wrong_password_is_refused(sip: Setup) -> None:
    status, responses = sip.call("w0nderland")
    assert status == 200, (responses, sip.kamailio.log()[-3000:], sip.daemon.log()[-3000:])
    assert 407 in responses  # challenged by Kamailio, the digest verified by the daemon
    status, responses = sip.call("guess")
    assert status == 403, (responses, sip.daemon.log()[-3000:])
    requests = [
        (e["user"], e["outcome"], e.get("auth"), e.get("auth_failure"))
        for e in sip.daemon.log_events("radius_request")
        if e.get("code") == "Access-Request"
    ]
    assert requests == [
        ("alice", "accept", "digest", None),
        ("alice", "reject", "digest", "wrong"),
    ]
    assert "w0nderland" not in sip.daemon.log() and "guess" not in sip.daemon.log()
