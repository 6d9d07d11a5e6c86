"""The ledger on SQL (``Ledger``): each accounting transaction is a ``SqlAccountingTx``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from billing_core.ports import LedgerConflict

from .accounting import SqlAccountingTx
from .db import database_reachable

_RETRYABLE = frozenset(("40P01", "40001"))  # deadlock detected, serialization failure


class SqlLedger:
    """Ledger on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def reachable(self) -> bool:
        return database_reachable(self.engine)

    @contextmanager
    def accounting(self) -> Iterator[SqlAccountingTx]:
        try:
            with self.engine.begin() as conn:
                tx = SqlAccountingTx(conn)
                yield tx
                tx.finish()
        except DBAPIError as exc:
            # PostgreSQL gave up one of two transactions waiting on each other: run it again
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE:
                raise LedgerConflict(str(exc.orig).strip()) from exc
            raise
