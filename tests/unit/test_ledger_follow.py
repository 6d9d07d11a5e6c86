"""Ledger, then live effect (billing_core.services.ledger): what a committed ledger change
tells the live state, and whether the live state missed it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from billing_core.ports import BalanceMoved, LiveEffect, Released
from billing_core.services.ledger import follow_ledger


class RecordingLive:
    """Records what it is given; ``missed`` as a live state kept outside the database sets it."""

    def __init__(self, *, reachable: bool = True, says_missed: bool = True) -> None:
        self.reachable = reachable
        self.says_missed = says_missed
        self.calls: list[tuple[list[LiveEffect], dict[int, int]]] = []

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        self.calls.append((list(effects), dict(seqs or {})))
        if self.says_missed:
            self.missed = not self.reachable


def test_the_effects_reach_the_live_state_with_the_sequences_after_the_commit() -> None:
    live = RecordingLive()
    effects: list[LiveEffect] = [BalanceMoved(1, Decimal("-0.50")), Released(2, "u1")]
    assert follow_ledger(live, effects, {1: 4, 2: 9}) is False  # type: ignore[arg-type]
    assert live.calls == [(effects, {1: 4, 2: 9})]


def test_an_unreachable_live_state_is_reported_as_missed() -> None:
    live = RecordingLive(reachable=False)
    assert follow_ledger(live, [BalanceMoved(1, Decimal("1"))], {1: 1}) is True  # type: ignore[arg-type]


def test_a_live_state_that_cannot_miss_never_reports_it() -> None:
    """The database as live state applies in the ledger's own transaction: nothing to miss."""
    live = RecordingLive(says_missed=False)
    assert follow_ledger(live, [BalanceMoved(1, Decimal("1"))], {1: 1}) is False  # type: ignore[arg-type]
