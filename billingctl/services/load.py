"""``billingctl load``: a provisioning file applied in one transaction, upserted by natural
key (names, payment ids), with the status rules of :mod:`billingctl.services.clients`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from billing_core.adapters.secretbox import NoKeyCipher
from billing_core.adapters.sql.catalog import bump_catalog_version
from billingctl.adapters import admin, provision_bulk
from billingctl.adapters.audit import AuditContext
from billingctl.services.clients import accounts_in_service, status_changed

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from billing_core.ports import SecretCipher
    from billingctl.adapters.admin import LiveMove
    from billingctl.progress import Progress
    from billingctl.provisioning import ProvisioningSpec


def apply_provisioning(
    engine: Engine,
    spec: ProvisioningSpec,
    audit: AuditContext | None = None,
    *,
    payments_applied: list[LiveMove] | None = None,
    cipher: SecretCipher | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Upsert by natural key (names, payment ids) in one transaction.

    The audit log gets one entry per changed setting, rate table and client (not per rate
    row), and one per payment applied. ``payments_applied`` (if given) receives
    (client id, amount, live sequence) of each payment applied, for a live state kept
    outside the database (Redis) to follow once the transaction has committed."""
    audit = audit or AuditContext("load")
    cipher = cipher if cipher is not None else NoKeyCipher()
    counts = {"rate_tables": 0, "rates": 0, "clients": 0, "accounts": 0, "payments": 0}
    applied: list[LiveMove] = []
    with engine.begin() as conn:
        if spec.max_call_length is not None:
            admin.set_setting(conn, "max_call_length", str(spec.max_call_length), audit)
        table_ids: dict[str, int] = {}
        for table in spec.rate_tables:
            table_ids[table.name] = admin.upsert_rate_table(conn, table, audit)
            counts["rate_tables"] += 1
            counts["rates"] += len(table.rates)
            if progress is not None:
                progress.advance(len(table.rates))
        applied += _load_clients(conn, spec, table_ids, audit, cipher, progress, counts)
        bump_catalog_version(conn)
    if payments_applied is not None:
        payments_applied.extend(applied)
    return counts


#: Clients written per round of set-based statements (``provision_bulk``): a few
#: statements per table each round, the progress line moved once per round.
BATCH_CLIENTS = 500


def _load_clients(
    conn: Connection,
    spec: ProvisioningSpec,
    table_ids: dict[str, int],
    audit: AuditContext,
    cipher: SecretCipher,
    progress: Progress | None,
    counts: dict[str, int],
) -> list[LiveMove]:
    """The file's clients with their accounts and payments, a batch at a time, in file
    order; the payments applied."""
    clients = spec.clients
    ids = provision_bulk.rate_table_ids(conn, clients, table_ids)
    applied: list[LiveMove] = []
    for first in range(0, len(clients), BATCH_CLIENTS):
        batch = clients[first : first + BATCH_CLIENTS]
        result = provision_bulk.write_batch(
            conn,
            provision_bulk.ClientBatch(
                batch, first, ids, cipher, audit, accounts_in_service, status_changed
            ),
        )
        applied += result.applied
        counts["clients"] += len(batch)
        counts["accounts"] += sum(len(c.accounts) for c in batch)
        counts["payments"] += len(result.applied)
        if progress is not None:
            progress.advance(len(batch))
    return applied
