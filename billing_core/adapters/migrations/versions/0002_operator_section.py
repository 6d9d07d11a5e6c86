"""billingctl's operator section: templates, invoices, audit log, account flags

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Adds ``client_templates``, ``invoices`` and ``audit_log``; ``accounts.originate`` and
``accounts.terminate`` (true for existing rows); ``transactions.invoice_id``.
Written by hand; plain ADD COLUMN works on SQLite without a table rebuild.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _money(name: str, *, nullable: bool) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "client_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("bill_events_by", sa.String(length=10), nullable=True),
        sa.Column("postpaid", sa.Boolean(), nullable=True),
        _money("credit", nullable=True),
        sa.Column("rate_table_id", sa.Integer(), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        _money("low_balance_threshold", nullable=True),
        sa.Column("low_balance_capacity", sa.Integer(), nullable=True),
        sa.Column("reseller", sa.String(length=128), nullable=True),
        sa.Column("tax_profile", sa.String(length=128), nullable=True),
        sa.Column("payment_terms", sa.String(length=64), nullable=True),
        sa.Column("hidden_numbers", sa.Boolean(), nullable=True),
        sa.Column("autoinvoicing", sa.Boolean(), nullable=True),
        sa.Column("company_name", sa.String(length=256), nullable=True),
        sa.Column("main_email", sa.String(length=256), nullable=True),
        sa.Column("billing_email", sa.String(length=256), nullable=True),
        sa.Column("rates_email", sa.String(length=256), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("zip_code", sa.String(length=32), nullable=True),
        sa.Column("tax_id", sa.String(length=64), nullable=True),
        sa.Column("registration_id", sa.String(length=64), nullable=True),
        sa.Column("account_details", sa.Text(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rate_table_id"],
            ["rate_tables.id"],
            name=op.f("fk_client_templates_rate_table_id_rate_tables"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_client_templates_name")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=False),
        _money("total", nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_invoices_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    op.create_index(op.f("ix_invoices_client_id"), "invoices", ["client_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column("entity_name", sa.String(length=256), nullable=True),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("client_name", sa.String(length=128), nullable=True),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_client_id"), "audit_log", ["client_id"])
    op.create_index(op.f("ix_audit_log_client_name"), "audit_log", ["client_name"])

    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("originate", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch.add_column(
            sa.Column("terminate", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("invoice_id", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_transactions_invoice_id"), "transactions", ["invoice_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_transactions_invoice_id"), table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("invoice_id")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("terminate")
        batch.drop_column("originate")
    op.drop_index(op.f("ix_audit_log_client_name"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_client_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_invoices_client_id"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_table("client_templates")
