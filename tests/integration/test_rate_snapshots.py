"""Rate index snapshots on SQLite and PostgreSQL: the first catalog load builds each rate
table's index from its rows and stores a snapshot under the table's rates version; the next
load (a restart, another node) builds the index from the snapshot; a change to the table's
rates moves its version, so the rows are read again and the snapshot replaced; a snapshot
that does not check is ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update

from billing_core.adapters.sql.catalog import bump_rates_version
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import rate_snapshots_t, rate_tables_t, rates_t
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

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
