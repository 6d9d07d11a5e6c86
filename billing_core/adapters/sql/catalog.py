"""The catalog on SQL (``CatalogSource``): clients, accounts and rate indexes, read whole
into memory so authorization reads no SQL; the versions that tell a reader it changed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from billing_core.domain.credentials import AuthMethod, parse_auth_methods
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Account, Client
from billing_core.domain.money import from_micros
from billing_core.domain.rating import RateIndexBuilder, RateTableIndex
from billing_core.ports import Catalog

from . import rate_snapshots
from .tables import (
    accounts_t,
    catalog_version_t,
    clients_t,
    rate_snapshots_t,
    rate_tables_t,
    settings_t,
)

_METHODS: dict[str, frozenset[AuthMethod]] = {}


def _methods(text: str | None) -> frozenset[AuthMethod]:
    """The stored ``pap,chap`` as a set, shared between accounts with the same methods."""
    key = text or "pap"
    found = _METHODS.get(key)
    if found is None:
        try:
            found = parse_auth_methods(key)
        except ValueError:
            found = frozenset()  # unreadable: no method is allowed
        _METHODS[key] = found
    return found


def bump_rates_version(conn: Connection, table_id: int) -> None:
    """After a change to a rate table's rates (same transaction as the change)."""
    conn.execute(
        update(rate_tables_t)
        .where(rate_tables_t.c.id == table_id)
        .values(rates_version=rate_tables_t.c.rates_version + 1)
    )


def bump_catalog_version(conn: Connection) -> None:
    conn.execute(
        update(catalog_version_t)
        .where(catalog_version_t.c.id == 1)
        .values(version=catalog_version_t.c.version + 1)
    )


def client_from_row(row: Any) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        status=row.status,
        currency=row.currency,
        locale=row.locale,
        postpaid=bool(row.postpaid),
        credit=row.credit,
        rate_table_id=row.rate_table_id,
        capacity=row.capacity,
        low_balance_threshold=row.low_balance_threshold,
        low_balance_capacity=row.low_balance_capacity,
        bill_events_by=row.bill_events_by,
    )


class SqlCatalog:
    """CatalogSource on one SQLAlchemy engine. A rate table's index comes from its snapshot
    when one of the table's current version exists (``rate_snapshots``), else from its rows,
    and then its snapshot is written for the next start. ``rate_snapshots = False`` (a class
    attribute, for the benchmark) always reads the rows and writes nothing."""

    rate_snapshots = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def catalog_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )

    def load_catalog(self, previous: Catalog | None = None) -> Catalog:
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # one snapshot of the database for the whole read: the versions read first
                # are those of the rows read after (a snapshot is written under its version)
                conn.execution_options(isolation_level="REPEATABLE READ")  # in place
            version = int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )
            clients = {row.id: client_from_row(row) for row in conn.execute(select(clients_t))}
            accounts = _accounts(conn, clients)
            versions = {
                row.id: int(row.rates_version)
                for row in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.rates_version))
            }
            by_table, built = self._rate_indexes(conn, versions, previous)
            mcl = conn.execute(
                select(settings_t.c.value).where(settings_t.c.name == "max_call_length")
            ).scalar_one_or_none()
        if built and self.rate_snapshots:
            rate_snapshots.write(
                self.engine, [(table_id, versions[table_id], built[table_id]) for table_id in built]
            )
        return Catalog(
            version=version,
            clients=clients,
            accounts=AccountIndex(accounts),
            rate_tables=by_table,
            rate_versions=versions,
            max_call_length=int(mcl) if mcl is not None else None,
        )

    def write_missing_snapshots(self) -> int:
        """Build from the rows, and store, the snapshot of every rate table that has none
        at its current version (what ``billingctl`` runs after changing rates, so that the
        first start after it reads snapshots too); the number written."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")  # as load_catalog
            versions = {
                int(row.id): int(row.rates_version)
                for row in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.rates_version))
            }
            stored = {
                (int(table_id), int(version))
                for table_id, version in conn.execute(
                    select(rate_snapshots_t.c.rate_table_id, rate_snapshots_t.c.rates_version)
                )
            }
            missing = [t for t, v in versions.items() if (t, v) not in stored]
            built = _load_rates(conn, missing) if missing else {}
        return rate_snapshots.write(
            self.engine, [(table_id, versions[table_id], built[table_id]) for table_id in built]
        )

    def _rate_indexes(
        self, conn: Connection, versions: dict[int, int], previous: Catalog | None
    ) -> tuple[dict[int, RateTableIndex], dict[int, RateTableIndex]]:
        """Every rate table's index (those of ``previous`` whose version did not move, then
        snapshots, then rows) and, apart, those built from rows."""
        kept = {
            table_id: previous.rate_tables[table_id]
            for table_id, version in versions.items()
            if previous is not None
            and previous.rate_versions.get(table_id) == version
            and table_id in previous.rate_tables
        }
        changed = {t: v for t, v in versions.items() if t not in kept}
        snapped = rate_snapshots.read(conn, changed) if changed and self.rate_snapshots else {}
        missing = [table_id for table_id in changed if table_id not in snapped]
        built = _load_rates(conn, missing) if missing else {}
        return {**kept, **snapped, **built}, built


def _accounts(conn: Connection, clients: dict[int, Client]) -> list[Account]:
    """Every account, read as plain tuples (a hundred thousand rows at start)."""
    a = accounts_t.c
    deleted = {client.id for client in clients.values() if client.status == "deleted"}
    rows = conn.execute(
        select(
            a.id,
            a.client_id,
            a.name,
            a.ident,
            a.value,
            a.tech_prefix,
            a.password_hash,
            a.auth_methods,
            a.secret_enc,
            a.secret_version,
            a.enabled,
            a.originate,
        )
    )
    return [
        Account(
            account_id,
            client_id,
            name,
            ident,
            value,
            tech_prefix,
            password_hash,
            # a deleted client's accounts stay identifiable, so that its calls are
            # rejected as a deleted client's (code 1, reason client_deleted)
            bool(enabled) and (bool(originate) or client_id in deleted),
            _methods(methods),
            secret_enc,
            int(secret_version or 0),
        )
        for (
            account_id,
            client_id,
            name,
            ident,
            value,
            tech_prefix,
            password_hash,
            methods,
            secret_enc,
            secret_version,
            enabled,
            originate,
        ) in rows
    ]


def _load_rates(conn: Connection, table_ids: Sequence[int]) -> dict[int, RateTableIndex]:
    """Every rate table's index, read with a plain cursor and built row by row (a million
    rows in seconds), equal values shared: a table has few distinct prices, grids and dates."""
    shared: dict[object, object] = {}

    def money(micros: int) -> Decimal:
        key = ("m", micros)
        found = shared.get(key)
        if found is None:
            found = shared.setdefault(key, from_micros(int(micros)))
        return found  # type: ignore[return-value]

    def moment(value: datetime | str | None) -> datetime | None:
        if value is None:
            return None
        key = ("t", value)
        found = shared.get(key)
        if found is None:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
            found = shared.setdefault(key, parsed.replace(tzinfo=UTC))
        return found  # type: ignore[return-value]

    builders: dict[int, RateIndexBuilder] = {}
    # names are left out: rating does not need them (the CDR records the code), and a deck
    # of a million prefixes often has a name per prefix
    # streamed (a server-side cursor on PostgreSQL): a million rows are never held at once
    ids = ",".join(str(int(table_id)) for table_id in table_ids)
    result = conn.execution_options(stream_results=True, max_row_buffer=20000).exec_driver_sql(
        "SELECT rate_table_id, code, rate, setup_fee, min_volume, interval, "
        f"grace_volume, effective_date, end_date FROM rates WHERE rate_table_id IN ({ids})"
    )
    for table_id, code, rate, setup, min_volume, interval, grace, start, end in result:
        builder = builders.get(table_id)
        if builder is None:
            builder = builders[table_id] = RateIndexBuilder()
        effective = moment(start)
        assert effective is not None
        builder.add(
            code,
            ("", money(rate), money(setup), min_volume, interval, grace, effective, moment(end)),
        )
    return {table_id: builder.build() for table_id, builder in builders.items()}
