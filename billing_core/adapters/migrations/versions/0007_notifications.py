"""low-balance notifications, the events log, the mail queue, Disconnect-Requests

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Adds ``clients`` and ``client_templates`` ``notify_client_below`` / ``notify_admin_below``
(money, null: off) and the tables ``notify_state``, ``events``, ``mail_queue`` and
``disconnect_queue``. Written by hand; plain ADD COLUMN works on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    for table in ("clients", "client_templates"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("notify_client_below", sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column("notify_admin_below", sa.BigInteger(), nullable=True))
    op.create_table(
        "notify_state",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("armed", sa.Boolean(), nullable=False),
        sa.Column("fired_at", sa.DateTime(), nullable=True),
        sa.Column("rearmed_at", sa.DateTime(), nullable=True),
        sa.Column("low_available", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_notify_state_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "kind", name=op.f("pk_notify_state")),
    )
    op.create_table(
        "events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("client_name", sa.String(length=128), nullable=True),
        sa.Column("nas_key", sa.String(length=160), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("dedupe", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("dedupe", name=op.f("uq_events_dedupe")),
    )
    op.create_index(op.f("ix_events_at"), "events", ["at"])
    op.create_index(op.f("ix_events_kind"), "events", ["kind"])
    op.create_index(op.f("ix_events_client_id"), "events", ["client_id"])
    op.create_index("ix_events_source_id", "events", ["source", "id"])
    op.create_table(
        "mail_queue",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("client_name", sa.String(length=128), nullable=True),
        sa.Column("to_addr", sa.String(length=256), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_queue")),
    )
    op.create_index(op.f("ix_mail_queue_client_id"), "mail_queue", ["client_id"])
    op.create_index("ix_mail_queue_status_next", "mail_queue", ["status", "next_attempt_at"])
    op.create_table(
        "disconnect_queue",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("nas_key", sa.String(length=160), nullable=False),
        sa.Column("acct_session_id", sa.String(length=255), nullable=False),
        sa.Column("conf_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("error_cause", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disconnect_queue")),
        sa.UniqueConstraint("call_id", "reason", name="uq_disconnect_queue_call_reason"),
    )
    op.create_index("ix_disconnect_queue_status", "disconnect_queue", ["status"])


def downgrade() -> None:
    op.drop_table("disconnect_queue")
    op.drop_table("mail_queue")
    op.drop_table("events")
    op.drop_table("notify_state")
    for table in ("client_templates", "clients"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("notify_admin_below")
            batch_op.drop_column("notify_client_below")
