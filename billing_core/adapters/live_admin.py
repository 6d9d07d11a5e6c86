"""billingctl's view of the live state: the same one the daemon uses (Redis or the database).

``open_live`` picks it from the config; ``rebuild`` reloads Redis from the database;
``verify`` compares each client's live balance with its ledger sum.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine

from billing_core.ports import BalanceMoved, LiveState

from .redis_live import ResyncingLive
from .sql_store import SqlStore


def open_live(engine: Engine, redis_url: str, *, cluster: bool = False) -> LiveState:
    store = SqlStore(engine)
    if not redis_url:
        return store
    return ResyncingLive.from_url(
        redis_url,
        store.live_client,
        cluster=cluster,
        clients=lambda: list(store.ledger_balances()),
        guard=lambda: store.live_guard(exclusive=True),
    )


def payment_made(live: LiveState, client_id: int, amount: Decimal) -> None:
    """After a payment or manual charge committed: move the live balance too."""
    live.apply([BalanceMoved(client_id, amount)])


def ledger_writer(engine: Engine, redis_url: str) -> AbstractContextManager[None]:
    """Held around a ledger write and its live effect when the live state is in Redis, so
    that no rebuild reads the ledger in between (SqlStore.live_guard)."""
    if not redis_url:
        return nullcontext()
    return SqlStore(engine).live_guard(exclusive=False)


def rebuild(engine: Engine, redis_url: str, *, cluster: bool = False) -> int:
    """Reload every client's live state from the database; the number of clients."""
    live = open_live(engine, redis_url, cluster=cluster)
    if isinstance(live, ResyncingLive):
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
