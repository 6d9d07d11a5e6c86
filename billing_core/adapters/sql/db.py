"""Engines and migrations for PostgreSQL and the embedded SQLite default."""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from billing_core.errors import UserError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and serialized writers.

    ``pre_ping`` tests a PostgreSQL connection at every checkout (a round trip). The daemon
    goes without: a statement on a connection that died fails, SQLAlchemy then drops the
    whole pool, and the work is retried on new connections (accounting one request at a
    time; an Access-Request is retransmitted by its NAS)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"database.url: not a database URL: {_masked(url)}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30, "isolation_level": None})
        _sqlite_pragmas(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
        )
    raise UserError(f"database.url: unsupported database {backend!r} (sqlite or postgresql)")


def track_commits(engine: Engine) -> Callable[[], bool]:
    """A probe for the calling thread: after a transaction on ``engine`` raised, True when it
    got as far as COMMIT. Its outcome is then unknown (the server may have committed and the
    answer been lost with the connection), so whatever mirrors the database must be rebuilt
    from it rather than trusted."""
    state = threading.local()

    @event.listens_for(engine, "begin")
    def _on_begin(_conn: Any) -> None:
        state.committing = False

    @event.listens_for(engine, "commit")
    def _on_commit(_conn: Any) -> None:
        state.committing = True

    return lambda: bool(getattr(state, "committing", False))


def _masked(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _sqlite_pragmas(engine: Engine) -> None:
    """The pysqlite recipe: let SQLAlchemy's BEGIN be ours, and make every write transaction
    BEGIN IMMEDIATE so that check-then-write sequences of two processes serialize."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config() -> AlembicConfig:
    # imported here: Alembic (and Mako) cost every billingctl command and every worker
    # about 70 ms of start, and only db upgrade and the version checks need them
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    location = resources.files("billing_core.adapters.migrations")
    cfg.set_main_option("script_location", str(location))
    return cfg


_UPGRADE_LOCK = 0x72616469757370  # the transaction lock that serializes schema upgrades


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations in one transaction. Upgrades run from several hosts at once take
    turns: on PostgreSQL each first takes a transaction-level advisory lock, so the second
    waits for the first to commit and then finds the schema current (on SQLite the write
    transaction is BEGIN IMMEDIATE, which serializes them already)."""
    cfg = _alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
        cfg.attributes["connection"] = connection
        from alembic import command

        command.upgrade(cfg, revision)


def head_revision() -> str | None:
    """The schema revision this version of the code writes."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def autogenerate(engine: Engine, message: str) -> None:  # pragma: no cover - developer tool
    cfg = _alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        from alembic import command

        command.revision(cfg, message=message, autogenerate=True)


def database_reachable(engine: Engine) -> bool:
    """True when the database answers a trivial query; never raises."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means unreachable
        return False
    return True
