"""Running ``billingctl`` in-process (``billingctl.cli.main``) against a test database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.live import change_balance
from billing_core.adapters.sql.tables import transactions_t
from billingctl.cli import main

RATES_HEADER = "code,name,rate,setup_fee,min_volume,interval,grace_volume,effective_date,end_date\n"


@dataclass
class Ctl:
    """``ctl("clients", "list")`` runs billingctl and returns stdout, asserting exit 0;
    ``ctl.fail(...)`` returns the one-line error, asserting a non-zero exit."""

    config: Path
    url: str
    capsys: pytest.CaptureFixture[str]
    _engine: Engine | None = None

    @classmethod
    def make(
        cls,
        db_url: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> Ctl:
        monkeypatch.delenv("RADIUSD_DATABASE_URL", raising=False)
        config = tmp_path / "radiusd.toml"
        config.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
        return cls(config, db_url, capsys)

    def with_redis(self, redis_url: str) -> Ctl:
        """The same runner, its config naming ``redis_url`` as the live state."""
        self.config.write_text(
            self.config.read_text() + f'[redis]\nurl = "{redis_url}"\n', encoding="utf-8"
        )
        return self

    def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(["--config", str(self.config), *args])
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def __call__(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, f"billingctl {' '.join(args)} failed ({code}): {err}"
        assert err == ""
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json"))

    def fail(self, *args: str, code: int = 1) -> str:
        """The error line of a refused command (one line, no traceback)."""
        got, out, err = self.run(*args)
        assert got == code, f"billingctl {' '.join(args)}: exit {got}, stderr {err!r}"
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("billingctl: ")
        return lines[0].removeprefix("billingctl: ")

    def engine(self) -> Engine:
        """One engine for the test's own checks (disposed by ``close``)."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture
def ctl(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Ctl]:
    """billingctl against the test's database (each engine: SQLite and PostgreSQL)."""
    runner = Ctl.make(db_url, tmp_path, capsys, monkeypatch)
    yield runner
    runner.close()


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def rates_csv(rows: Sequence[Sequence[object]]) -> str:
    """A rates CSV (CONTRACT §4 columns) from tuples of cells."""
    body = "".join(",".join("" if c is None else str(c) for c in row) + "\n" for row in rows)
    return RATES_HEADER + body


def generate_rates(
    count: int,
    *,
    start: int = 0,
    rate: str = "0.0100",
    effective: str = "2026-01-01T00:00:00Z",
) -> list[tuple[object, ...]]:
    """``count`` distinct codes (from ``start``), one rate each. The 1M-row measurement in
    the report used this generator with count=1_000_000; the suite imports a few thousand."""
    return [
        (f"{1000000 + n}", f"Dest {n}", rate, "0", 60, 60, 0, effective, "")
        for n in range(start, start + count)
    ]


def add_call_charge(engine: Engine, client_id: int, amount: str, at: datetime) -> None:
    """A call charge in the ledger at ``at``, with the live balance kept in step."""
    value = Decimal(amount)
    with engine.begin() as conn:
        conn.execute(
            insert(transactions_t).values(
                client_id=client_id, kind="call", amount=value, note="call", created_at=at
            )
        )
        change_balance(conn, client_id, value)
