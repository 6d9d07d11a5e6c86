"""Ledger, then live effect: the one way a committed ledger change reaches the live state.

The database is the truth; the live state follows it *after* the commit, so a failure to
reach Redis never loses money: the ledger has the change and the live client's sequence
says Redis lacks it, so healing (or ``billingctl live rebuild``) brings it. Accounting
(:mod:`billing_core.services.accounting`) and the console's payments and manual charges
both go through :func:`follow_ledger`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from billing_core.ports import LiveEffect, LiveState

__all__ = ["follow_ledger"]


def follow_ledger(
    live: LiveState, effects: Sequence[LiveEffect], live_seqs: Mapping[int, int]
) -> bool:
    """Apply the live effects of a committed ledger change; ``live_seqs`` is each client's
    live sequence after it (``AccountingTx.live_seqs``). True when the live state missed
    them: kept outside the database and unreachable (it records that as ``missed``)."""
    live.apply(effects, live_seqs)
    return bool(getattr(live, "missed", False))
