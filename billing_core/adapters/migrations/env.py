"""Alembic environment: migrations run against the connection billingctl hands over."""

from __future__ import annotations

from alembic import context

from billing_core.adapters.sql.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only billingctl runs migrations
    raise RuntimeError("run migrations through `billingctl db upgrade`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
