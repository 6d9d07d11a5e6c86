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

from .tables import (
    accounts_t,
    catalog_version_t,
    clients_t,
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
    """CatalogSource on one SQLAlchemy engine."""

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
            version = int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )
            clients = {row.id: client_from_row(row) for row in conn.execute(select(clients_t))}
            accounts = [
                Account(
                    id=row.id,
                    client_id=row.client_id,
                    name=row.name,
                    ident=row.ident,
                    value=row.value,
                    tech_prefix=row.tech_prefix,
                    password_hash=row.password_hash,
                    auth_methods=_methods(row.auth_methods),
                    secret_enc=row.secret_enc,
                    secret_version=int(row.secret_version or 0),
                    # a deleted client's accounts stay identifiable, so that its calls are
                    # rejected as a deleted client's (code 1, reason client_deleted)
                    enabled=bool(row.enabled)
                    and (
                        bool(row.originate)
                        or (row.client_id in clients and clients[row.client_id].status == "deleted")
                    ),
                )
                for row in conn.execute(select(accounts_t))
            ]
            versions = {
                row.id: int(row.rates_version)
                for row in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.rates_version))
            }
            kept = {
                table_id: previous.rate_tables[table_id]
                for table_id, version in versions.items()
                if previous is not None
                and previous.rate_versions.get(table_id) == version
                and table_id in previous.rate_tables
            }
            changed = [table_id for table_id in versions if table_id not in kept]
            by_table = {**kept, **(_load_rates(conn, changed) if changed else {})}
            mcl = conn.execute(
                select(settings_t.c.value).where(settings_t.c.name == "max_call_length")
            ).scalar_one_or_none()
        return Catalog(
            version=version,
            clients=clients,
            accounts=AccountIndex(accounts),
            rate_tables=by_table,
            rate_versions=versions,
            max_call_length=int(mcl) if mcl is not None else None,
        )


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
