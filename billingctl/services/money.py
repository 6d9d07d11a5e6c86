"""Money in the console: the live state follows the ledger's payments and charges, and an
invoice covers the period after the last one (the rules; the SQL is in adapters)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from billing_core.ports import BalanceMoved, LiveState
from billing_core.services.ledger import follow_ledger


def follow_payments(live: LiveState | None, moved: Sequence[tuple[int, Decimal, int]]) -> bool:
    """After the ledger committed payments or manual charges ((client id, amount, the
    client's live sequence after it), in commit order): move the live balances kept outside
    the database too, each on top of its own sequence. True when the live state missed the
    last of them (unreachable); None is the database itself, which has them already."""
    missed = False
    if live is None:
        return missed
    for client_id, amount, seq in moved:
        missed = follow_ledger(live, [BalanceMoved(client_id, amount)], {client_id: seq})
    return missed
