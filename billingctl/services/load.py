"""``billingctl load``: a provisioning file applied in one transaction, upserted by natural
key (names, payment ids), with the status rules of :mod:`billingctl.services.clients`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from billing_core.adapters.secretbox import NoKeyCipher
from billing_core.adapters.sql.catalog import bump_catalog_version
from billingctl.adapters import admin
from billingctl.adapters.audit import AuditContext
from billingctl.services.clients import accounts_in_service, status_changed

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from billing_core.ports import SecretCipher
    from billingctl.adapters.admin import LiveMove
    from billingctl.progress import Progress
    from billingctl.provisioning import ClientSpec, ProvisioningSpec


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
        for index, client in enumerate(spec.clients):
            moved = _load_client(conn, client, index, table_ids, audit, cipher)
            counts["clients"] += 1
            counts["accounts"] += len(client.accounts)
            counts["payments"] += len(moved)
            applied += moved
            if progress is not None:
                progress.advance()
        bump_catalog_version(conn)
    if payments_applied is not None:
        payments_applied.extend(applied)
    return counts


def _load_client(
    conn: Connection,
    spec: ClientSpec,
    index: int,
    table_ids: dict[str, int],
    audit: AuditContext,
    cipher: SecretCipher,
) -> list[LiveMove]:
    """One client of the file with its accounts and payments; the payments applied."""
    upserted = admin.upsert_client(conn, spec, index, table_ids)
    changed_passwords = admin.upsert_accounts(
        conn,
        upserted.client_id,
        spec,
        index,
        cipher=cipher,
        in_service=accounts_in_service(spec.status),
    )
    if upserted.old_status is not None:
        status_changed(conn, upserted.client_id, spec.name, upserted.old_status, spec.status)
    admin.record_client(
        conn, audit, upserted.client_id, spec.name, upserted.before, changed_passwords
    )
    return admin.post_payments(conn, audit, upserted.client_id, spec)
