"""billingctl money on SQLite and PostgreSQL: payments, the ledger and its CSV export,
invoices moving the fixed balance and the last-invoiced date."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from .billingctl_support import Ctl, add_call_charge, csv_rows, ctl

__all__ = ["ctl"]  # the fixture


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def test_payments_and_transactions_export(ctl: Ctl, tmp_path: Path) -> None:
    ctl("clients", "add", "Acme")
    ctl("clients", "add", "Beta")
    ctl("payments", "add", "Acme", "10", "--note", "opening")
    out = ctl("payments", "add", "Acme", "--", "-2.5")
    assert out.startswith("charge of -2.5")
    assert out.endswith("recorded for Acme; live balance 7.50\n")
    ctl("payments", "add", "Beta", "3")
    today = datetime.now(UTC).date()
    add_call_charge(ctl.engine(), 1, "-0.20", _at(today - timedelta(days=3), 12))
    assert ctl.fail("payments", "add", "Nobody", "1") == "no client named 'Nobody'"

    payments = ctl.json("payments", "list")
    assert [(p["client"], p["kind"], p["amount"], p["note"]) for p in payments] == [
        ("Acme", "payment", "10.00", "opening"),
        ("Acme", "charge", "-2.50", ""),
        ("Beta", "payment", "3.00", ""),
    ]
    assert len(ctl.json("payments", "list", "--client", "Beta")) == 1
    calls = ctl.json("transactions", "list", "--kind", "call")
    assert [(c["client"], c["amount"]) for c in calls] == [("Acme", "-0.20")]

    target = tmp_path / "ledger.csv"
    assert ctl("transactions", "export", str(target), "--client", "Acme") == (
        f"exported 3 transactions to {target}\n"
    )
    rows = csv_rows(target.read_text())
    assert list(rows[0]) == [
        "id",
        "created_at",
        "client",
        "kind",
        "amount",
        "note",
        "external_id",
        "cdr_id",
        "invoice_id",
    ]
    assert [(r["kind"], r["amount"]) for r in rows] == [
        ("payment", "10.00"),
        ("charge", "-2.50"),
        ("call", "-0.20"),
    ]
    day = (today - timedelta(days=3)).isoformat()
    ctl("transactions", "export", str(target), "--since", day, "--until", day)
    assert [r["kind"] for r in csv_rows(target.read_text())] == ["call"]
    ctl("transactions", "export", str(target), "--kind", "payment", "--kind", "charge")
    assert [r["client"] for r in csv_rows(target.read_text())] == ["Acme", "Acme", "Beta"]
    shown = ctl.json("clients", "show", "Acme")
    assert (shown["live_balance"], shown["fixed_balance"]) == ("7.30", "7.50")


def test_invoices_move_the_fixed_balance_and_last_invoiced(ctl: Ctl) -> None:
    ctl("clients", "add", "Acme", "--credit", "5")
    ctl("clients", "add", "York", "--timezone", "America/New_York")
    ctl("payments", "add", "Acme", "10")
    engine = ctl.engine()
    today = datetime.now(UTC).date()
    for days, amount in ((10, "-1.00"), (5, "-0.50"), (1, "-0.25")):
        add_call_charge(engine, 1, amount, _at(today - timedelta(days=days), 12))
    before = ctl.json("clients", "show", "Acme")
    assert (before["live_balance"], before["fixed_balance"], before["available_balance"]) == (
        "8.25",
        "10.00",
        "13.25",
    )

    first_until = today - timedelta(days=7)
    out = ctl("invoices", "generate", "--client", "Acme", "--until", first_until.isoformat())
    assert out == (
        f"invoice 1 for Acme (start..{first_until}): 1 call charges, total 1.00 USD;"
        f" last invoiced {first_until}; fixed balance 9.00\n"
    )
    shown = ctl.json("clients", "show", "Acme")
    assert (shown["live_balance"], shown["fixed_balance"], shown["last_invoiced"]) == (
        "8.25",
        "9.00",
        first_until.isoformat(),
    )
    assert ctl.fail("invoices", "generate", "--client", "Acme", "--until", str(first_until)) == (
        f"until: Acme is invoiced through {first_until} already; give a later day"
    )
    assert ctl.fail("invoices", "generate", "--client", "Acme", "--until", str(today)).startswith(
        f"until: {today} has not ended yet in the client's time zone (UTC"
    )
    yesterday = today - timedelta(days=1)
    ctl("invoices", "generate", "--client", "Acme", "--until", yesterday.isoformat())
    shown = ctl.json("clients", "show", "Acme")
    assert (shown["fixed_balance"], shown["live_balance"], shown["last_invoiced"]) == (
        "8.25",
        "8.25",
        yesterday.isoformat(),
    )
    invoices = ctl.json("invoices", "list", "--client", "Acme")
    assert [(i["period_start"], i["period_end"], i["charges"], i["total"]) for i in invoices] == [
        (None, first_until.isoformat(), 1, "1.00"),
        ((first_until + timedelta(days=1)).isoformat(), yesterday.isoformat(), 2, "0.75"),
    ]
    calls = ctl.json("transactions", "list", "--kind", "call")
    assert [c["invoice_id"] for c in calls] == [1, 2, 2]

    # days are the client's: 02:00 UTC is still the previous day in New York
    two_days_ago = today - timedelta(days=2)
    add_call_charge(engine, 2, "-0.40", _at(yesterday, 2))
    ctl("invoices", "generate", "--client", "York", "--until", two_days_ago.isoformat())
    (york,) = ctl.json("invoices", "list", "--client", "York")
    assert (york["charges"], york["total"]) == (1, "0.40")
    assert ctl.json("clients", "show", "York")["fixed_balance"] == "-0.40"

    entries = ctl.json("audit", "list", "--entity", "invoice")
    assert [(e["client"], e["after"]["total"]) for e in entries] == [
        ("Acme", "1.00"),
        ("Acme", "0.75"),
        ("York", "0.40"),
    ]
    assert entries[1]["after"]["previous_last_invoiced"] == first_until.isoformat()
    code, _out, err = ctl.run("invoices", "generate", "--client", "Acme", "--until", "soon")
    assert code == 2
    assert "not a date like 2026-01-31: 'soon'" in err


def test_with_redis_payments_and_balances_follow_the_live_state(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With [redis] url set, billingctl moves and shows the daemon's live state (CONTRACT §2)."""
    import redis

    runner = Ctl.make(pg_url, tmp_path, capsys, monkeypatch).with_redis(redis_url)
    try:
        runner("clients", "add", "Acme")
        runner("payments", "add", "Acme", "2.50")
        store = redis.Redis.from_url(redis_url)
        assert int(store.get("{c:1}:bal") or 0) == 2_500_000  # the live state followed
        store.set("{c:1}:bal", 1_000_000)  # what the daemon's live state says wins in the view
        assert runner.json("clients", "show", "Acme")["live_balance"] == "1.00"
        assert runner.json("clients", "list")[0]["available_balance"] == "1.00"
        store.close()
    finally:
        runner.close()


def test_with_redis_a_load_with_several_payments_moves_the_live_balance_once_each(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new client loaded with a payment and a charge: the first live effect finds the
    client missing from Redis and loads it from the ledger, which already holds both; the
    second must not be added on top (it was: 5.00 - 2.00 shown as 1.00)."""
    runner = Ctl.make(pg_url, tmp_path, capsys, monkeypatch).with_redis(redis_url)
    spec = tmp_path / "clients.yaml"
    spec.write_text(
        "clients:\n"
        "  - name: Acme\n"
        "    payments:\n"
        '      - {id: "open", amount: "5.00"}\n'
        '      - {id: "fee", amount: "-2.00"}\n',
        encoding="utf-8",
    )
    try:
        runner("load", str(spec))
        assert runner.json("clients", "show", "Acme")["live_balance"] == "3.00"
        runner("load", str(spec))  # applied already: nothing moves
        runner("payments", "add", "Acme", "1.50")
        assert runner.json("clients", "show", "Acme")["live_balance"] == "4.50"
        assert json.loads(runner("live", "verify", "--format", "json"))["drifts"] == []
    finally:
        runner.close()
