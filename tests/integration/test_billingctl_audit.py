"""The audit log on SQLite and PostgreSQL: load and billingctl changes, before and after,
passwords masked, one entry per changed client/rate table/setting, filtered by client."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from .billingctl_support import Ctl, csv_rows, ctl

__all__ = ["ctl"]  # the fixture

FILE = """
settings:
  max_call_length: 3600
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "1", rate: "0.01", effective_date: "2026-01-01T00:00:00Z"}
      - {code: "44", rate: "0.02", effective_date: "2026-01-01T00:00:00Z"}
clients:
  - name: Acme
    credit: "CREDIT"
    rate_table: retail
    tags: [gold]
    payments: [{id: "acme-1", amount: "10.00"}]
    accounts:
      - {name: acme-login, ident: login, value: acme, password: "PASSWORD"}
  - name: Beta
"""


def _load(ctl: Ctl, tmp_path: Path, credit: str = "0", login_key: str = "s3cret") -> str:
    path = tmp_path / "provisioning.yaml"
    path.write_text(FILE.replace("CREDIT", credit).replace("PASSWORD", login_key))
    return ctl("load", str(path))


def test_audit_log(ctl: Ctl, tmp_path: Path) -> None:
    _load(ctl, tmp_path)
    entries = ctl.json("audit", "list")
    assert [(e["command"], e["entity"], e["name"], e["changes"]) for e in entries] == [
        ("load", "setting", "max_call_length", ["created"]),
        ("load", "rate_table", "retail", ["created"]),
        ("load", "client", "Acme", ["created"]),
        ("load", "transaction", "acme-1", ["created"]),
        ("load", "client", "Beta", ["created"]),
    ]
    assert {e["actor"] for e in entries} == {getpass.getuser()}
    assert entries[1]["after"] == {
        "currency": "USD",
        "rates": 2,
        "rates_added": 2,
        "rates_changed": 0,
    }
    acme = entries[2]["after"]
    assert (acme["credit"], acme["rate_table"], acme["tags"]) == ("0.00", "retail", ["gold"])
    assert acme["accounts"][0]["password"] == "***"
    assert entries[3]["after"]["amount"] == "10.00"

    _load(ctl, tmp_path)  # the same file again changes nothing: no entries
    assert len(ctl.json("audit", "list")) == 5

    _load(ctl, tmp_path, credit="25", login_key="n3w")
    (changed,) = ctl.json("audit", "list")[5:]
    assert (changed["command"], changed["name"], changed["changes"]) == (
        "load",
        "Acme",
        ["accounts", "credit"],
    )
    assert (changed["before"]["credit"], changed["after"]["credit"]) == ("0.00", "25.00")
    assert changed["after"]["accounts"][0]["password"] == "*** (changed)"

    ctl("clients", "edit", "Acme", "--payment-terms", "net30", "--add-tag", "vip")
    ctl("settings", "set", "max_call_length", "120")
    ctl("payments", "add", "Beta", "4", "--note", "top-up")
    entries = ctl.json("audit", "list")
    edit, setting, payment = entries[-3:]
    assert (edit["command"], edit["changes"]) == ("clients edit", ["payment_terms", "tags"])
    assert (edit["before"]["payment_terms"], edit["after"]["payment_terms"]) == (None, "net30")
    assert (edit["before"]["tags"], edit["after"]["tags"]) == (["gold"], ["gold", "vip"])
    assert (setting["before"], setting["after"]) == ({"value": "3600"}, {"value": "120"})
    assert (payment["client"], payment["after"]["note"]) == ("Beta", "top-up")
    text = json.dumps(entries)
    assert "s3cret" not in text and "n3w" not in text and "sha256$" not in text

    # per client, by name or id; the latest N
    by_client = ctl.json("audit", "list", "--client", "Acme")
    assert {e["client"] for e in by_client} == {"Acme"}
    assert [e["entity"] for e in by_client] == ["client", "transaction", "client", "client"]
    assert ctl.json("audit", "list", "--client", "1") == by_client
    assert [e["id"] for e in ctl.json("audit", "list", "--limit", "2")] == [
        entries[-2]["id"],
        entries[-1]["id"],
    ]
    assert ctl.fail("audit", "list", "--client", "Nobody") == (
        "no client named 'Nobody' (nor any audit entry)"
    )
    table = ctl("audit", "list", "--client", "Beta").splitlines()
    assert table[0].split() == [
        "id",
        "at",
        "actor",
        "command",
        "entity",
        "name",
        "client",
        "changes",
    ]
    exported = csv_rows(ctl("audit", "list", "--format", "csv", "--entity", "setting"))
    assert [json.loads(r["after"]) for r in exported] == [{"value": "3600"}, {"value": "120"}]
