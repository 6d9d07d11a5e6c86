"""rate index snapshots: a daemon starts from a compact copy of each rate table's index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Adds ``rate_index_snapshots``: per rate table, the index a daemon built from its rows, for
the ``rates_version`` it was built from (README: how long a start takes). A cache, never the
truth: a missing or older snapshot only means the rows are read again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_index_snapshots",
        sa.Column("rate_table_id", sa.Integer(), nullable=False),
        sa.Column("rates_version", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("plans", sa.Text(), nullable=False),
        sa.Column("codes", sa.LargeBinary(), nullable=False),
        sa.Column("plan_ids", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["rate_table_id"], ["rate_tables.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rate_table_id"),
    )


def downgrade() -> None:
    op.drop_table("rate_index_snapshots")
