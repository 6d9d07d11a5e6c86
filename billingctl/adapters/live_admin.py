"""billingctl's view of the live state: the same one the daemon uses (Redis or the database).

``open_live`` builds it (for ``billingctl.context``, the one place the console does);
``rebuild`` reloads Redis from the database; ``ledger_balances`` is what
``billingctl.services.live.verify`` compares the live balances with.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, func, select

from billing_core.adapters.redis_live import ResyncingLive
from billing_core.adapters.sql.notify import record_event
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import clients_t
from billing_core.bootstrap import live_state
from billing_core.ports import LiveState
from billingctl.progress import Progress


def open_live(engine: Engine, redis_url: str, *, cluster: bool = False) -> LiveState:
    return live_state(SqlStore(engine), redis_url, cluster=cluster)


def rebuild(engine: Engine, live: LiveState, progress: Progress | None = None) -> int:
    """Reload every client's live state in Redis from the database; the number of clients
    (0 when ``live`` is the database itself: nothing to rebuild)."""
    if not isinstance(live, ResyncingLive):
        return 0
    if progress is not None and progress.enabled:
        with engine.connect() as conn:
            progress.total = conn.execute(select(func.count()).select_from(clients_t)).scalar()
        return live.rebuild(progress.advance)
    return live.rebuild()


def record_rebuilt(engine: Engine, clients: int) -> None:
    """The events log's ``live_rebuilt``, by billingctl."""
    record_event(engine, "live_rebuilt", detail={"clients": clients, "by": "billingctl"})


def ledger_balances(engine: Engine) -> dict[int, Decimal]:
    """Each client's balance as the ledger sums it."""
    return dict(SqlStore(engine).ledger_balances())
