"""Rate tables from the command line: bulk import of a rates CSV, listing, the rate now.

An import (run by ``billingctl.services.rates.import_rates``) streams the CSV (CONTRACT §4
columns), validating every row with ``load``'s rules, into a temporary table: with
``COPY ... FROM STDIN`` on PostgreSQL, with chunked ``executemany`` on SQLite. Only when the
whole file is valid (and has no code repeated with the same effective date) does one
statement move it into ``rates``:

- ``replace``: the table's rates become exactly the file's;
- ``merge``: upsert by (code, effective_date); rates the file does not name stay.

All of it is one transaction, with the catalog version bumped and one audit entry for the
table (not one per rate). An error rolls everything back: nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite

from billing_core.adapters.sql.catalog import bump_catalog_version, bump_rates_version
from billing_core.adapters.sql.models import MoneyType, UTCDateTime
from billing_core.adapters.sql.tables import clients_t, rates_t, utcnow
from billing_core.domain.dialled import digits_only, normalize_number
from billing_core.domain.money import display as fmt
from billing_core.domain.money import to_micros
from billing_core.domain.rating import Rate, RateTableIndex
from billing_core.errors import NotFoundError, UserError
from billingctl.progress import Progress
from billingctl.provisioning import (
    RATE_COLUMNS,
    ProvisioningError,
    RateSpec,
    check_code,
    rate_from_csv_row,
    rate_row,
)
from billingctl.provisioning_file import read_rates_csv

from .audit import AuditContext, record
from .client_queries import rate_tables_t

SQLITE_CHUNK = 5000
_CODE_MAX = 32
_NAME_MAX = 128

_VALUE_COLUMNS = RATE_COLUMNS
_UPDATED_COLUMNS = tuple(c for c in _VALUE_COLUMNS if c not in {"code", "effective_date"})

_staging_metadata = MetaData()
staging_t = Table(
    "rates_import",
    _staging_metadata,
    Column("line", Integer, nullable=False),
    Column("code", String(_CODE_MAX), nullable=False),
    Column("name", String(_NAME_MAX), nullable=False),
    Column("rate", MoneyType, nullable=False),
    Column("setup_fee", MoneyType, nullable=False),
    Column("min_volume", Integer, nullable=False),
    Column("interval", Integer, nullable=False),
    Column("grace_volume", Integer, nullable=False),
    Column("effective_date", UTCDateTime, nullable=False),
    Column("end_date", UTCDateTime, nullable=True),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


def _find_table(conn: Connection, name: str) -> Any:
    return conn.execute(select(rate_tables_t).where(rate_tables_t.c.name == name)).one_or_none()


def _require_table(conn: Connection, name: str) -> Any:
    row = _find_table(conn, name)
    if row is None:
        raise NotFoundError(f"no rate table named {name!r}")
    return row


def _count(conn: Connection, table_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(rates_t).where(rates_t.c.rate_table_id == table_id)
        ).scalar_one()
    )


# --- import ------------------------------------------------------------------------------------
def _validated(path: Path, name: str) -> Iterator[tuple[int, RateSpec]]:
    try:
        for line, cells in read_rates_csv(path, name):
            where = f"{name} line {line}"
            rate = rate_from_csv_row(cells, where)
            if len(rate.code) > _CODE_MAX:
                raise ProvisioningError(f"{where}: code", f"must have at most {_CODE_MAX} digits")
            if len(rate.name) > _NAME_MAX:
                raise ProvisioningError(f"{where}: name", f"must be at most {_NAME_MAX} characters")
            yield line, rate
    except OSError as exc:
        raise UserError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: cannot read: not UTF-8 text (byte {exc.start})") from None


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_BLOCK = 10_000


def _stage_postgresql(conn: Connection, rows: Iterator[tuple[int, RateSpec]]) -> int:
    """COPY the rows into the staging table, in text format written in blocks: the raw
    column values (micro-units, naive UTC times), each distinct amount and time formatted
    once."""
    columns = ", ".join(f'"{c.name}"' for c in staging_t.columns)
    driver = conn.connection.driver_connection
    assert driver is not None
    micros: dict[Decimal, str] = {}
    moments: dict[datetime | None, str] = {None: "\\N"}

    def amount(value: Decimal) -> str:
        text = micros.get(value)
        if text is None:
            text = micros[value] = str(to_micros(value))
        return text

    def moment(value: datetime | None) -> str:
        text = moments.get(value)
        if text is None:
            naive = _naive(value)
            assert naive is not None
            text = moments[value] = naive.isoformat(sep=" ")
        return text

    count = 0
    block: list[str] = []
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY rates_import ({columns}) FROM STDIN") as copy,
    ):
        for line, rate in rows:
            block.append(
                f"{line}\t{rate.code}\t{rate.name.translate(_COPY_ESCAPES)}"
                f"\t{amount(rate.rate)}\t{amount(rate.setup_fee)}\t{rate.min_volume}"
                f"\t{rate.interval}\t{rate.grace_volume}\t{moment(rate.effective_date)}"
                f"\t{moment(rate.end_date)}\n"
            )
            if len(block) >= _COPY_BLOCK:
                copy.write("".join(block))
                count += len(block)
                block = []
        if block:
            copy.write("".join(block))
            count += len(block)
    return count


def _stage_sqlite(conn: Connection, rows: Iterator[tuple[int, RateSpec]]) -> int:
    """Chunked executemany through the column types (so stored values match ``rates``)."""
    count = 0
    chunk: list[dict[str, Any]] = []
    for line, rate in rows:
        chunk.append({"line": line, **rate_row(rate)})
        if len(chunk) >= SQLITE_CHUNK:
            conn.execute(insert(staging_t), chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        conn.execute(insert(staging_t), chunk)
        count += len(chunk)
    return count


def _check_repeats(conn: Connection, name: str) -> None:
    """A code repeated with the same effective date is refused, as ``load`` does."""
    groups = list(
        conn.execute(
            select(staging_t.c.code, staging_t.c.effective_date)
            .group_by(staging_t.c.code, staging_t.c.effective_date)
            .having(func.count() > 1)
            .limit(100)
        )
    )
    if not groups:
        return
    collisions = []
    for code, effective in groups:
        lines = sorted(
            conn.execute(
                select(staging_t.c.line).where(
                    staging_t.c.code == code, staging_t.c.effective_date == effective
                )
            ).scalars()
        )
        collisions.append((lines[1], lines[0], code, effective))
    second, first, code, effective = min(collisions)
    raise ProvisioningError(
        f"{name} line {second}: effective_date",
        f"code {code} already has a rate effective {effective.isoformat()} (at line {first})",
    )


@contextmanager
def import_transaction(engine: Engine) -> Iterator[Connection]:
    """The import's one transaction: an error anywhere rolls everything back."""
    with engine.begin() as conn:
        yield conn


def find_table(conn: Connection, name: str) -> Any:
    """The rate table named ``name`` (id, currency), or None."""
    return _find_table(conn, name)


def create_table(conn: Connection, name: str, currency: str) -> Any:
    conn.execute(insert(rate_tables_t).values(name=name, currency=currency))
    return _require_table(conn, name)


def stage(conn: Connection, path: Path, progress: Progress | None = None) -> int:
    """Stream the CSV, every row validated, into the staging table; the number of rows.
    Refused when it has no rows or repeats a code with the same effective date."""
    name = path.name
    staging_t.create(conn)
    rows = _validated(path, name)
    if progress is not None:
        rows = progress.track(rows)
    if conn.dialect.name == "postgresql":
        staged = _stage_postgresql(conn, rows)
    else:
        staged = _stage_sqlite(conn, rows)
    if staged == 0:
        raise UserError(f"{name}: has no rates (a header and no rows)")
    if progress is not None:
        progress.stage("merging into the table")
    _check_repeats(conn, name)
    return staged


def count_rates(conn: Connection, table_id: int) -> int:
    return _count(conn, table_id)


def move_staged(conn: Connection, table_id: int, mode: str) -> None:
    """One statement moves the staged rates into the table: ``replace`` its rates by them,
    or ``merge`` them by (code, effective_date); then the daemon is told (versions)."""
    source = select(literal(table_id, Integer), *(staging_t.c[c] for c in _VALUE_COLUMNS)).where(
        true()
    )  # SQLite needs a WHERE to parse INSERT ... SELECT ... ON CONFLICT
    target = ["rate_table_id", *_VALUE_COLUMNS]
    if mode == "replace":
        conn.execute(delete(rates_t).where(rates_t.c.rate_table_id == table_id))
        conn.execute(insert(rates_t).from_select(target, source))
    else:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(rates_t).from_select(target, source)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["rate_table_id", "code", "effective_date"],
                set_={c: upsert.excluded[c] for c in _UPDATED_COLUMNS},
            )
        )


def finish_import(conn: Connection, table_id: int) -> None:
    """The staging table dropped (SQLite: PostgreSQL drops it at commit) and the versions
    moved, so the daemon reloads the table."""
    if conn.dialect.name == "sqlite":
        staging_t.drop(conn)
    bump_rates_version(conn, table_id)
    bump_catalog_version(conn)


def record_import(
    conn: Connection, audit: AuditContext, row: Any, result: dict[str, Any], *, created: bool
) -> None:
    """One audit entry for the table (not one per rate)."""
    counts = {k: result[k] for k in ("added", "updated", "removed")}
    record(
        conn,
        audit,
        entity_type="rate_table",
        entity_id=row.id,
        entity_name=result["table"],
        before=None if created else {"currency": row.currency, "rates": result["before"]},
        after={
            "currency": row.currency,
            "rates": result["after"],
            "import": {
                "file": result["file"],
                "mode": result["mode"],
                "rows": result["rows"],
                **counts,
            },
        },
    )


# --- reading -----------------------------------------------------------------------------------
def _rate_dict(table: str, row: Any) -> dict[str, Any]:
    return {
        "table": table,
        "code": row.code,
        "name": row.name,
        "rate": fmt(row.rate),
        "setup_fee": fmt(row.setup_fee),
        "min_volume": row.min_volume,
        "interval": row.interval,
        "grace_volume": row.grace_volume,
        "effective_date": row.effective_date.isoformat(),
        "end_date": None if row.end_date is None else row.end_date.isoformat(),
    }


def list_rates(engine: Engine, table: str, code: str | None = None) -> list[dict[str, Any]]:
    """Every rate of the table (past, current and future), by code then effective date."""
    prefix = None if code is None else check_code(code, "code")
    with engine.connect() as conn:
        row = _require_table(conn, table)
        query = (
            select(rates_t)
            .where(rates_t.c.rate_table_id == row.id)
            .order_by(rates_t.c.code, rates_t.c.effective_date)
        )
        if prefix is not None:
            query = query.where(rates_t.c.code.startswith(prefix, autoescape=True))
        return [_rate_dict(table, r) for r in conn.execute(query)]


def show_rate(
    engine: Engine, table: str, number: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The rate that applies to ``number`` now: the longest prefix effective at this moment."""
    digits = digits_only(normalize_number(number))
    if not digits:
        raise UserError(f"code: {number!r} has no digits")
    moment = now or utcnow()
    with engine.connect() as conn:
        row = _require_table(conn, table)
        prefixes = [digits[:i] for i in range(1, min(len(digits), _CODE_MAX) + 1)]
        rows = {
            (r.code, r.effective_date): r
            for r in conn.execute(
                select(rates_t).where(
                    rates_t.c.rate_table_id == row.id, rates_t.c.code.in_(prefixes)
                )
            )
        }
    index = RateTableIndex(
        Rate(
            code=r.code,
            name=r.name,
            rate=r.rate,
            setup_fee=r.setup_fee,
            min_volume=r.min_volume,
            interval=r.interval,
            grace_volume=r.grace_volume,
            effective_date=r.effective_date,
            end_date=r.end_date,
        )
        for r in rows.values()
    )
    found = index.lookup(digits, moment)
    if found is None:
        raise NotFoundError(f"no rate in {table!r} applies to {digits} now")
    shown = _rate_dict(table, rows[(found.code, found.effective_date)])
    shown["number"] = digits
    return shown


def list_rate_tables(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        counts: dict[int, int] = {
            table_id: int(n)
            for table_id, n in conn.execute(
                select(rates_t.c.rate_table_id, func.count()).group_by(rates_t.c.rate_table_id)
            )
        }
        users: dict[int, int] = {
            table_id: int(n)
            for table_id, n in conn.execute(
                select(clients_t.c.rate_table_id, func.count())
                .where(clients_t.c.rate_table_id.is_not(None))
                .group_by(clients_t.c.rate_table_id)
            )
        }
        return [
            {
                "id": r.id,
                "name": r.name,
                "currency": r.currency,
                "rates": counts.get(r.id, 0),
                "clients": users.get(r.id, 0),
            }
            for r in conn.execute(select(rate_tables_t).order_by(rate_tables_t.c.name))
        ]
