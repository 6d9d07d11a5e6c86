"""live balances updated in place: no partial index on the live sequence, room in each page

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Every accounting batch moves the live sequence (``seq``) of each client it touches, and the
healer marks it ``applied`` a second later. ``ix_live_balances_unapplied`` (0004, a partial
index on ``seq <> applied``) made each of those updates a new row version with new index
entries in both indexes; without it, and with room left in each page (``fillfactor`` 70 on
PostgreSQL), PostgreSQL updates the row in its page (a HOT update) and no index is written:
half the statement's time per row (12.3 to 6.0 µs; BENCHMARKS.md: What the profiles
changed). The healer's read
of the clients not yet applied becomes a scan of the table, about a millisecond a second for
10,000 clients, done by one node at a time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_live_balances_unapplied", table_name="live_balances")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE live_balances SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE live_balances RESET (fillfactor)")
    op.create_index(
        "ix_live_balances_unapplied",
        "live_balances",
        ["client_id"],
        postgresql_where=sa.text("seq <> applied"),
        sqlite_where=sa.text("seq <> applied"),
    )
