"""``SqlStore``: the SQL side's ports on one SQLAlchemy engine, the embedded default's whole
outside world (CatalogSource + LiveState + Ledger), and the truth a live state kept in
Redis rebuilds from. Each port is its own class in its own module; this joins them."""

from __future__ import annotations

from sqlalchemy import Engine

from .catalog import SqlCatalog
from .ledger import SqlLedger
from .live import SqlLiveState
from .live_truth import SqlLiveTruth


class SqlStore(SqlCatalog, SqlLiveState, SqlLedger, SqlLiveTruth):
    """CatalogSource + LiveState + Ledger (+ the live truth) on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"
