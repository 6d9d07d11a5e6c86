"""Rates in the console: which table a rates CSV goes into, and what an import counts
(the SQL, streaming and staging: ``billingctl.adapters.rates_import``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from billing_core.errors import NotFoundError, UserError
from billingctl.adapters import rates_import
from billingctl.provisioning import check_currency

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from billingctl.adapters.audit import AuditContext
    from billingctl.progress import Progress

MODES = ("replace", "merge")


def creates_table(table: str, existing_currency: str | None, currency: str | None) -> bool:
    """Whether the import creates ``table``: only when it does not exist and ``currency``
    is given; a table that exists is refused in another currency than the one given."""
    if existing_currency is None:
        if currency is None:
            raise NotFoundError(f"no rate table named {table!r} (give --currency to create it)")
        return True
    if currency is not None and currency != existing_currency:
        raise UserError(f"currency: rate table {table!r} is in {existing_currency}, not {currency}")
    return False


def import_counts(mode: str, staged: int, before: int, after: int) -> dict[str, int]:
    """Rates added, updated and removed by an import of ``staged`` rows into a table that
    had ``before`` rates and has ``after``: ``replace`` removes them all and adds the file's;
    ``merge`` adds the new (code, effective date) pairs and updates the others."""
    if mode == "replace":
        return {"added": after, "updated": 0, "removed": before}
    return {"added": after - before, "updated": staged - (after - before), "removed": 0}


def write_index_snapshots(engine: Engine) -> int:
    """After rates changed: store the rate index snapshot of every table lacking one at its
    current version, so that the first start after the change reads snapshots, not rows
    (a million prefixes: seconds saved on every node's start); the number written."""
    from billing_core.adapters.sql.catalog import SqlCatalog

    return SqlCatalog(engine).write_missing_snapshots()


def import_rates(
    engine: Engine,
    table: str,
    path: Path,
    *,
    mode: str = "merge",
    currency: str | None = None,
    audit: AuditContext,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Import ``path`` into rate table ``table`` (created when ``currency`` is given and the
    table does not exist), in one transaction. Returns counts: rows, before, after, added,
    updated, removed."""
    if mode not in MODES:
        raise UserError(f"mode: must be one of {', '.join(MODES)}")
    if currency is not None:
        currency = check_currency(currency)
    if not path.is_file():
        raise UserError(f"{path.name}: cannot read: no such file")
    with rates_import.import_transaction(engine) as conn:
        row = rates_import.find_table(conn, table)
        created = creates_table(table, None if row is None else row.currency, currency)
        if created:
            assert currency is not None
            row = rates_import.create_table(conn, table, currency)
        staged = rates_import.stage(conn, path, progress)
        before = rates_import.count_rates(conn, row.id)
        rates_import.move_staged(conn, row.id, mode)
        after = rates_import.count_rates(conn, row.id)
        rates_import.finish_import(conn, row.id)
        result = {
            "table": table,
            "currency": row.currency,
            "file": path.name,
            "mode": mode,
            "rows": staged,
            "before": before,
            "after": after,
            **import_counts(mode, staged, before, after),
        }
        rates_import.record_import(conn, audit, row, result, created=created)
    return result
