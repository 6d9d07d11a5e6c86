"""The sippy dialect: Sippy B2BUA's requests (tests/data/dialect_sippy.json, from the
project's research of current Sippy code: User-Name = the remote IP, password "cisco",
Cisco-AVPair call-id and no h323-conf-id, per-leg Stop-only accounting that shares one
Acct-Session-Id) replayed in order to the real daemon over UDP."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from pyrad import packet
from pyrad.dictionary import Dictionary

from radiusd.codec import DIALECT_DICTIONARIES

from .conftest import SECRET, Daemon, make_daemon

DATA = Path(__file__).resolve().parents[1] / "data" / "dialect_sippy.json"
DICTIONARIES = Path(__file__).resolve().parents[2] / "dictionaries"
PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "44", name: UK, rate: "0.60", setup_fee: "0", min_volume: 0, interval: 1,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Trunk
    rate_table: retail
    payments: [{id: trunk-opening, amount: "10.00"}]
    accounts:
      - {name: trunk-ip, ident: ip, value: "203.0.113.10"}
"""


def _send(daemon: Daemon, dictionary: Any, exchange: dict[str, Any], ident: int) -> Any:
    accounting = exchange["code"] == "Accounting-Request"
    if accounting:
        pkt = packet.AcctPacket(id=ident, secret=SECRET.encode(), dict=dictionary)
    else:
        pkt = packet.AuthPacket(id=ident, secret=SECRET.encode(), dict=dictionary)
    for name, value in exchange["attributes"]:
        if name == "User-Password":
            pkt[name] = pkt.PwCrypt(value)
            continue
        kind = dictionary.attributes[name].type
        pkt.AddAttribute(
            name, int(value) if kind in ("integer", "date") and value.isdigit() else value
        )
    raw = pkt.RequestPacket()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        port = daemon.acct_port if accounting else daemon.auth_port
        sock.sendto(raw, ("127.0.0.1", port))
        data, _addr = sock.recvfrom(4096)
    return pkt.CreateReply(packet=data) if not accounting else data


def test_a_sippy_call_is_replayed_and_charged_once(tmp_path: Path, sqlite_url: str) -> None:
    daemon = make_daemon(tmp_path, (sqlite_url, ""), extra='dialect = "sippy"')
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    dialect = json.loads(DATA.read_text())
    assert dialect["name"] == "sippy-b2bua"
    dictionary = Dictionary(str(DICTIONARIES / DIALECT_DICTIONARIES["sippy"]))
    steps = {e["step"]: e for e in dialect["exchanges"]}
    daemon.start()
    try:
        accept = _send(daemon, dictionary, steps["authorization (IP-authenticated trunk)"], 1)
        assert accept.code == packet.AccessAccept
        assert accept["h323-credit-time"] == ["h323-credit-time=1000"]  # 10.00 at 0.01 a second
        assert daemon.client("Trunk")["held"] == "10.00"  # the hold, keyed by call-id
        for ident, step in enumerate(
            [
                "accounting start (originate leg)",
                "accounting stop (answer leg)",
                "accounting stop (originate leg)",
                "accounting stop (originate leg)",  # sent again: a duplicate
                "accounting stop (originate leg, failed attempt)",
            ],
            start=2,
        ):
            assert _send(daemon, dictionary, steps[step], ident)[0] == packet.AccountingResponse
        outcomes = [
            e["outcome"]
            for e in daemon.log_events("radius_request")
            if e.get("code") == "Accounting-Request"
        ]
        assert outcomes == ["recorded", "not_billable", "charged", "duplicate", "ended"]
        cdrs = json.loads(daemon.billingctl("cdrs", "list", "--format", "json").stdout)
        assert [(c["duration"], c["cost"]) for c in cdrs] == [(181, "1.81")]
        trunk = daemon.client("Trunk")
        assert (trunk["live_balance"], trunk["held"], trunk["active_calls"]) == ("8.19", "0.00", 0)
    finally:
        daemon.stop()
