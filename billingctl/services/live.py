"""The live state in the console: rebuilt from the database, or checked against the ledger
(a client drifts when its live balance is not its ledger sum)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from billingctl.adapters import live_admin

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from billing_core.ports import LiveState, LiveView
    from billingctl.progress import Progress


@dataclass(frozen=True, slots=True)
class Drift:
    client_id: int
    live: Decimal
    ledger: Decimal

    @property
    def difference(self) -> Decimal:
        return self.live - self.ledger


def drifts(ledger: Mapping[int, Decimal], views: Mapping[int, LiveView]) -> list[Drift]:
    """The clients whose live balance is not their ledger sum, by client id."""
    return [
        Drift(cid, views[cid].balance, ledger[cid])
        for cid in sorted(ledger)
        if views[cid].balance != ledger[cid]
    ]


def verify(engine: Engine, live: LiveState) -> tuple[int, list[Drift]]:
    """(clients checked, those whose live balance differs from the ledger sum)."""
    ledger = live_admin.ledger_balances(engine)
    ids = sorted(ledger)
    return len(ids), drifts(ledger, live.view(ids, datetime.now(UTC)))


def rebuild(engine: Engine, live: LiveState | None, progress: Progress | None = None) -> int | None:
    """Reload the live state kept in Redis from the database, recorded in the events log:
    the number of clients; None when the database is the live state (nothing to rebuild)."""
    if live is None:
        return None
    count = live_admin.rebuild(engine, live, progress)
    live_admin.record_rebuilt(engine, count)
    return count
