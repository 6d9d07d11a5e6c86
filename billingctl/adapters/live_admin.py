"""billingctl's view of the live state: the same one the daemon uses (Redis or the database).

``open_live`` picks it from the config; ``rebuild`` reloads Redis from the database;
``verify`` compares each client's live balance with its ledger sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, func, select

from billing_core.adapters.redis_live import ResyncingLive
from billing_core.adapters.sql_store import SqlStore, clients_t
from billing_core.ports import BalanceMoved, LiveState
from billingctl.progress import Progress


def open_live(engine: Engine, redis_url: str, *, cluster: bool = False) -> LiveState:
    store = SqlStore(engine)
    if not redis_url:
        return store
    return ResyncingLive.from_url(
        redis_url,
        store.live_client,
        cluster=cluster,
        ended=store.ended_legs,
        clients=lambda: list(store.ledger_balances()),
        marks=store,
    )


def payment_made(live: LiveState, client_id: int, amount: Decimal, seq: int) -> None:
    """After a payment or manual charge committed (moving the client's live sequence to
    ``seq``): move the live balance too, unless a load already read it."""
    live.apply([BalanceMoved(client_id, amount)], {client_id: seq})


def rebuild(
    engine: Engine, redis_url: str, *, cluster: bool = False, progress: Progress | None = None
) -> int:
    """Reload every client's live state from the database; the number of clients."""
    live = open_live(engine, redis_url, cluster=cluster)
    if isinstance(live, ResyncingLive):
        if progress is not None and progress.enabled:
            with engine.connect() as conn:
                progress.total = conn.execute(select(func.count()).select_from(clients_t)).scalar()
            return live.rebuild(progress.advance)
        return live.rebuild()
    return 0  # the database is the live state: nothing to rebuild


@dataclass(frozen=True, slots=True)
class Drift:
    client_id: int
    live: Decimal
    ledger: Decimal

    @property
    def difference(self) -> Decimal:
        return self.live - self.ledger


def verify(engine: Engine, redis_url: str, *, cluster: bool = False) -> tuple[int, list[Drift]]:
    """(clients checked, those whose live balance differs from the ledger sum)."""
    store = SqlStore(engine)
    ledger = store.ledger_balances()
    live = open_live(engine, redis_url, cluster=cluster)
    ids = sorted(ledger)
    views = live.view(ids, datetime.now(UTC))
    drifts = [
        Drift(cid, views[cid].balance, ledger[cid])
        for cid in ids
        if views[cid].balance != ledger[cid]
    ]
    return len(ids), drifts
