"""a sequence and an applied mark per client's live balance: the live state heals itself

Every ledger write that has a live effect moves ``seq`` in its own transaction; the live
state in Redis records the last sequence it applied. ``applied`` is the highest sequence
known to have reached Redis, so the clients whose effects may have been lost are those
with ``seq <> applied``: any node finds them through the partial index and repairs them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("live_balances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("applied", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_index(
        "ix_live_balances_unapplied",
        "live_balances",
        ["client_id"],
        postgresql_where=sa.text("seq <> applied"),
        sqlite_where=sa.text("seq <> applied"),
    )


def downgrade() -> None:
    op.drop_index("ix_live_balances_unapplied", table_name="live_balances")
    with op.batch_alter_table("live_balances", schema=None) as batch_op:
        batch_op.drop_column("applied")
        batch_op.drop_column("seq")
