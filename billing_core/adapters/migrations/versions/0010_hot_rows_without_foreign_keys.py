"""the rows accounting writes for every call carry no foreign keys

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Drops the foreign keys of ``calls.client_id``, ``call_keys.call_id``, ``cdrs.client_id`` and
``transactions.client_id``. Each was checked for every row written (a locking read of the
client's row, which PostgreSQL writes to the WAL) and ``call_keys``' cascade ran one more
query for every ended call: about a tenth of PostgreSQL's CPU per Accounting-Request
(README: Accounting; BENCHMARKS.md: What the profiles changed). The writers never needed
them: every row is written for a client read in the same process, a call's ``call_keys``
are deleted with it in one statement, and a client's full delete, refused while it has
calls in progress, deletes its rows by name. The authorization function of 0009 deletes a
refused call's keys itself now.
"""

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint, column, referred table, referred column)
_KEYS = (
    ("call_keys", "fk_call_keys_call_id_calls", "call_id", "calls", "id"),
    ("calls", "fk_calls_client_id_clients", "client_id", "clients", "id"),
    ("cdrs", "fk_cdrs_client_id_clients", "client_id", "clients", "id"),
    ("transactions", "fk_transactions_client_id_clients", "client_id", "clients", "id"),
)
_DELETE_OWN = "DELETE FROM calls WHERE id = v_own;"
_DELETE_OWN_WITH_KEYS = "DELETE FROM call_keys WHERE call_id = v_own; " + _DELETE_OWN


def _authorize_ddl() -> str:
    earlier = importlib.import_module(
        "billing_core.adapters.migrations.versions.0009_pg_authorize_function"
    )
    ddl: str = earlier._AUTHORIZE
    if ddl.count(_DELETE_OWN) != 1:
        raise RuntimeError("0010: billing_authorize's delete of a refused call not found")
    return ddl


def upgrade() -> None:
    for table, name, _column, _referred, _key in _KEYS:
        with op.batch_alter_table(table) as batch:  # SQLite: the table copied without it
            batch.drop_constraint(name, type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_authorize_ddl().replace(_DELETE_OWN, _DELETE_OWN_WITH_KEYS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_authorize_ddl())
    for table, name, column, referred, key in reversed(_KEYS):
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(name, referred, [column], [key], ondelete="CASCADE")
