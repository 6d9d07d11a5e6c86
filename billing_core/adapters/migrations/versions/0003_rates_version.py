"""a version per rate table, so that a catalog reload rebuilds only changed rate indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rate_tables", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rates_version", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("rate_tables", schema=None) as batch_op:
        batch_op.drop_column("rates_version")
