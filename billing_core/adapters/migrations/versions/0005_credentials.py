"""login credentials: methods per account, encrypted secrets, failed-login counts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("auth_methods", sa.String(length=32), server_default="pap", nullable=False)
        )
        batch_op.add_column(sa.Column("secret_enc", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("secret_version", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "auth_failures",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("account_id"),
    )


def downgrade() -> None:
    op.drop_table("auth_failures")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("secret_version")
        batch_op.drop_column("secret_enc")
        batch_op.drop_column("auth_methods")
