"""`billingctl explain` on a loaded database: each main reply, the steps, JSON, nothing held."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.domain.identification import CallerFacts
from billing_core.services.authorization import AuthorizationService, AuthorizeCall
from billingctl.adapters.live_admin import open_live

from .billingctl_support import Ctl

PROVISIONING = """
rate_tables:
  - name: retail
    currency: USD
    rates:
      - {code: "1", name: "USA", rate: "0.0100", setup_fee: "0", min_volume: 60, interval: 60,
         grace_volume: 0, effective_date: "2026-01-01T00:00:00Z", end_date: null}
clients:
  - name: Rich
    rate_table: retail
    capacity: 1
    payments: [{id: "rich-1", amount: "10.00"}]
    accounts:
      - {name: rich-login, ident: login, value: "rich", password: "s3cret"}
      - {name: rich-ani, ident: ani, value: "15557770000"}
  - name: Broke
    rate_table: retail
    accounts: [{name: broke-ani, ident: ani, value: "15558880000"}]
  - name: Poor
    rate_table: retail
    payments: [{id: "poor-1", amount: "0.005"}]
    accounts: [{name: poor-ani, ident: ani, value: "15559990000"}]
"""

CALLED = "15550001111"


def _ctl(
    url: str,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Ctl:
    for name in ("RADIUSD_DATABASE_URL", "RADIUSD_REDIS_URL", "RADIUSD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "radiusd.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[redis]\nurl = "{redis_url}"\n'
        '[[nas]]\naddress = "10.0.0.0/24"\nsecret = "s"\nname = "gw"\n'
        '[[nas]]\naddress = "10.0.0.7"\nsecret = "s"\nname = "gw7"\n',
        encoding="utf-8",
    )
    ctl = Ctl(config, url, capsys)
    ctl("db", "upgrade")
    (tmp_path / "p.yaml").write_text(PROVISIONING, encoding="utf-8")
    ctl("load", str(tmp_path / "p.yaml"))
    return ctl


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis"])
def ectl(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Ctl, str]]:
    if request.param == "sqlite":
        url, redis_url = str(request.getfixturevalue("sqlite_url")), ""
    else:
        url = str(request.getfixturevalue("pg_url"))
        redis_url = str(request.getfixturevalue("redis_url")) if "redis" in request.param else ""
    ctl = _ctl(url, redis_url, tmp_path, capsys, monkeypatch)
    yield ctl, redis_url
    ctl.close()


def explain(ctl: Ctl, *args: str) -> dict[str, Any]:
    out = ctl("explain", "--nas", "10.0.0.9", *args, "--format", "json")
    return dict(json.loads(out))


def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in doc["steps"]}


def hold_one_call(ctl: Ctl, redis_url: str, calling: str) -> None:
    """An authorization by the daemon's own service, holding funds and capacity."""
    engine = make_engine(ctl.url)
    try:
        store = SqlStore(engine)
        catalog = store.load_catalog()
        live = open_live(engine, redis_url)
        service = AuthorizationService(
            lambda: catalog, live, max_call_length=7200, auth_hold_seconds=180
        )
        outcome = asyncio.run(
            service.authorize(
                AuthorizeCall(
                    nas_key="gw|10.0.0.9",
                    caller=CallerFacts(calling=calling, called=CALLED),
                    password=None,
                    chap=None,
                    identifiers=("conf-1",),
                    arrived=datetime.now(UTC),
                )
            )
        )
        assert outcome.decision.__class__.__name__ == "Accept", outcome
    finally:
        engine.dispose()


def test_accept_names_every_step_and_holds_nothing(ectl: tuple[Ctl, str]) -> None:
    ctl, redis_url = ectl
    doc = explain(ctl, "--user", "rich", "--called", f"sip:+{CALLED}@x", "--password-check", "skip")
    assert (doc["result"], doc["code"], doc["grant_seconds"]) == ("accept", 0, 7200)
    s = steps(doc)
    assert list(s) == [
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
    assert (s["nas"]["entry"], s["nas"]["nas_key"]) == ("gw", "gw|10.0.0.9")
    assert (s["account"]["account"], s["account"]["matched_by"]) == ("rich-login", "User-Name")
    assert s["account"]["client"] == "Rich"
    assert s["number"]["rated"] == CALLED
    assert (s["rate"]["prefix"], s["rate"]["rate"]) == ("1", "0.01")
    assert (s["balance"]["live_balance"], s["balance"]["available"]) == ("10.00", "10.00")
    assert s["balance"]["read_from"] == ("redis" if redis_url else "database")
    assert (s["capacity"]["in_use"], s["capacity"]["capacity"]) == (0, 1)
    assert s["decision"]["hold"] == "1.20"  # 7200 s at 0.01/min
    # the most specific [[nas]] entry wins, as in the daemon
    other = ctl("explain", "--nas", "10.0.0.7", "--user", "rich", "--password-check", "skip")
    assert "[[nas]] 'gw7' (10.0.0.7/32); NAS key gw7|10.0.0.7" in other
    # nothing was held: no call in progress, and the balance untouched
    assert json.loads(ctl("sessions", "list", "--format", "json")) == []
    assert ctl.json("clients", "show", "Rich")["held"] in ("0", "0.00")


def test_each_main_reject(ectl: tuple[Ctl, str], monkeypatch: pytest.MonkeyPatch) -> None:
    ctl, redis_url = ectl
    unknown = explain(ctl, "--user", "nobody", "--called", CALLED)
    assert (unknown["result"], unknown["code"], unknown["reason"]) == (
        "reject",
        1,
        "unknown_account",
    )
    assert unknown["reply_message"] == "Unknown account"
    assert steps(unknown)["account"]["matched"] is False

    # code 2: a login account with a password, and no password or a wrong one
    missing = explain(ctl, "--user", "rich", "--called", CALLED)
    assert (missing["code"], steps(missing)["password"]["check"]) == (2, "missing")
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong\n"))
    wrong = explain(ctl, "--user", "rich", "--called", CALLED, "--password-check", "stdin")
    assert (wrong["code"], steps(wrong)["password"]["check"]) == (2, "wrong")
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    right = explain(ctl, "--user", "rich", "--called", CALLED, "--password-check", "stdin")
    assert (right["code"], steps(right)["password"]["check"]) == (0, "right")

    no_rate = explain(ctl, "--user", "x", "--calling", "15557770000", "--called", "4420001")
    assert (no_rate["code"], no_rate["reason"]) == (9, "no_rate")
    assert "rate" in steps(no_rate) and "balance" not in steps(no_rate)

    zero = explain(ctl, "--user", "x", "--calling", "15558880000", "--called", CALLED)
    assert (zero["code"], zero["reason"]) == (4, "zero_balance")

    poor = explain(ctl, "--user", "x", "--calling", "15559990000", "--called", CALLED)
    assert (poor["code"], poor["reason"]) == (12, "insufficient_funds")
    assert steps(poor)["rate"]["first_grid_cost"] == "0.01"

    # code 3: one call of Rich (capacity 1) holds; explain sees it and holds nothing more
    hold_one_call(ctl, redis_url, "15557770000")
    full = explain(ctl, "--user", "x", "--calling", "15557770000", "--called", CALLED)
    assert (full["code"], full["reason"]) == (3, "capacity")
    s = steps(full)
    assert (s["capacity"]["in_use"], s["holds"]["held"]) == (1, "1.20")
    assert len(json.loads(ctl("sessions", "list", "--format", "json"))) == 1


def test_unknown_nas_and_table_output(ectl: tuple[Ctl, str]) -> None:
    ctl, _redis = ectl
    out = ctl("explain", "--nas", "192.0.2.1", "--user", "rich")
    assert out == "nas  192.0.2.1: no [[nas]] entry matches: the request is dropped\n"
    table = ctl("explain", "--nas", "10.0.0.1", "--user", "rich", "--password-check", "skip")
    assert "decision" in table and "authentication only" in table
    assert ctl.fail("explain", "--nas", "not-an-ip", "--user", "rich", code=1).startswith("--nas")
