"""SIP legs: the dialog's tags in a leg's identity; a CDR unique per leg and Start

A leg's identity gains the unordered pair of Sip-From-Tag and Sip-To-Tag (calls.tags,
cdrs.tags). The CDR's unique key was the identity plus the duration; it is now the identity
plus ``once``: the leg's Start, then the duration when the Stop carried its own, or "t" when
the duration was timed from the Start (such a leg is stopped once per Start, whatever the
arrival time of a re-sent Stop). Existing CDRs keep their old meaning: once = "/" + duration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tags", sa.String(length=255), server_default="", nullable=False)
        )
    with op.batch_alter_table("cdrs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tags", sa.String(length=255), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("once", sa.String(length=64), server_default="", nullable=False)
        )
    op.execute("UPDATE cdrs SET once = '/' || CAST(duration AS VARCHAR)")
    with op.batch_alter_table("cdrs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_cdrs_leg_identity", type_="unique")
        batch_op.create_unique_constraint(
            "uq_cdrs_leg_once",
            ["nas_key", "epoch", "acct_session_id", "conf_id", "origin", "tags", "once"],
        )


def downgrade() -> None:
    with op.batch_alter_table("cdrs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_cdrs_leg_once", type_="unique")
        batch_op.create_unique_constraint(
            "uq_cdrs_leg_identity",
            ["nas_key", "epoch", "acct_session_id", "conf_id", "origin", "duration"],
        )
        batch_op.drop_column("once")
        batch_op.drop_column("tags")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("tags")
