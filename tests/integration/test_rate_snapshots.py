"""Rate index snapshots on SQLite and PostgreSQL: the first catalog load builds each rate
table's index from its rows and stores a snapshot under the table's rates version; the next
load (a restart, another node) builds the index from the snapshot; a change to the table's
rates moves its version, so the rows are read again and the snapshot replaced; a snapshot
that does not check is ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from billing_core.adapters.sql.catalog import bump_rates_version
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import rate_snapshots_t, rate_tables_t, rates_t
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

from .billingctl_support import Ctl, ctl, generate_rates, rates_csv

__all__ = ["ctl"]  # the fixture

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def provision(url: str) -> SqlStore:
    rates = [
        {
            "code": code,
            "rate": price,
            "min_volume": 60,
            "interval": 60,
            "effective_date": "2026-01-01T00:00:00Z",
        }
        for code, price in (("1", "0.10"), ("44", "0.20"), ("4420", "0.30"))
    ]
    document: dict[str, Any] = {
        "rate_tables": [{"name": "retail", "currency": "USD", "rates": rates}],
        "clients": [{"name": "Acme", "rate_table": "retail"}],
    }
    engine = make_engine(url)
    load.apply_provisioning(engine, parse_provisioning(document, lambda _path: iter(())))
    return SqlStore(engine)


def price(store: SqlStore, number: str) -> Decimal | None:
    (index,) = store.load_catalog().rate_tables.values()
    found = index.lookup(number, NOW)
    return found.rate if found is not None else None


def snapshots(store: SqlStore) -> list[tuple[int, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(rate_snapshots_t.c.rate_table_id, rate_snapshots_t.c.rates_version)
        )
        return [(int(table_id), int(version)) for table_id, version in rows]


def table_version(store: SqlStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        table_id, version = conn.execute(
            select(rate_tables_t.c.id, rate_tables_t.c.rates_version)
        ).one()
        return int(table_id), int(version)


def test_a_restart_builds_the_index_from_the_snapshot_of_the_current_version(
    db_url: str,
) -> None:
    store = provision(db_url)
    assert snapshots(store) == []
    assert price(store, "442071") == Decimal("0.30")  # from the rows: the snapshot written
    assert snapshots(store) == [table_version(store)]
    # proof that the next load reads the snapshot: the rows gone (behind the version's
    # back, as nothing but a broken tool would do), the index is still there
    with store.engine.begin() as conn:
        conn.execute(delete(rates_t))
    assert price(store, "442071") == Decimal("0.30")
    assert price(store, "15550001111") == Decimal("0.10")


def test_a_change_of_rates_moves_the_version_and_the_rows_are_read_again(db_url: str) -> None:
    store = provision(db_url)
    assert price(store, "4420") == Decimal("0.30")
    table_id, before = table_version(store)
    with store.engine.begin() as conn:  # what rates import and load do: change, then bump
        conn.execute(update(rates_t).where(rates_t.c.code == "4420").values(rate=Decimal("0.5")))
        bump_rates_version(conn, table_id)
    assert price(store, "4420") == Decimal("0.50")
    assert snapshots(store) == [(table_id, before + 1)]  # replaced, not added
    assert price(store, "4420") == Decimal("0.50")  # and the new one is read back


def test_a_snapshot_that_does_not_check_is_ignored(db_url: str) -> None:
    store = provision(db_url)
    assert price(store, "44") == Decimal("0.20")
    with store.engine.begin() as conn:
        conn.execute(update(rate_snapshots_t).values(plan_ids=b"\x01\x02"))
    assert price(store, "44") == Decimal("0.20")  # from the rows


def test_without_snapshots_the_rows_are_read_and_nothing_is_written(db_url: str) -> None:
    store = provision(db_url)
    store.rate_snapshots = False
    assert price(store, "44") == Decimal("0.20")
    assert snapshots(store) == []


def test_billingctl_writes_the_snapshots_so_a_first_start_reads_no_rows(
    ctl: Ctl, tmp_path: Path
) -> None:
    """After ``load`` and ``rates import`` every rate table has the snapshot of its current
    version, so the first start after them builds no index from rows (seconds for a million
    prefixes on every node)."""
    document = tmp_path / "p.yaml"
    document.write_text(
        "rate_tables:\n  - name: retail\n    currency: USD\n    rates:\n"
        "      - {code: '44', rate: '0.20', effective_date: '2026-01-01T00:00:00Z'}\n",
        encoding="utf-8",
    )
    ctl("load", str(document))
    wholesale = tmp_path / "w.csv"
    wholesale.write_text(rates_csv(generate_rates(300)), encoding="utf-8")
    ctl("rates", "import", "wholesale", str(wholesale), "--currency", "USD")
    store = SqlStore(make_engine(ctl.url))
    with store.engine.connect() as conn:
        tables = {
            name: (int(table_id), int(version))
            for name, table_id, version in conn.execute(
                select(rate_tables_t.c.name, rate_tables_t.c.id, rate_tables_t.c.rates_version)
            )
        }
    versions = set(tables.values())
    assert len(versions) == 2 and set(snapshots(store)) == versions
    with store.engine.begin() as conn:  # the rows gone: only the snapshots can answer
        conn.execute(delete(rates_t))
    catalog = store.load_catalog()
    retail = catalog.rate_tables[tables["retail"][0]].lookup("4420", NOW)
    wholesale_rate = catalog.rate_tables[tables["wholesale"][0]].lookup("10001234", NOW)
    assert retail is not None and retail.rate == Decimal("0.20")
    assert wholesale_rate is not None and wholesale_rate.rate == Decimal("0.0100")
    assert set(snapshots(store)) == versions  # nothing built, nothing written at the start

    # a second import changes rates: the version moves and its snapshot follows
    wholesale.write_text(rates_csv(generate_rates(10, rate="0.0300")), encoding="utf-8")
    ctl("rates", "import", "wholesale", str(wholesale), "--mode", "replace")
    assert len(snapshots(store)) == 2 and set(snapshots(store)) != versions
