"""A client's live balance: the ledger's sum, kept beside it, moved with every ledger write.

Every write with a live effect moves the client's live sequence by one, so that a live
state kept outside the database (Redis) applies a client's effects in order and knows when
one went missing (README: live sequence). A client with no live balance yet starts from
zero at sequence 0. Every adapter that adds to a live balance follows ``moved``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing_core.domain.money import ZERO


@dataclass(frozen=True, slots=True)
class LiveBalance:
    balance: Decimal
    seq: int

    def moved(self, amount: Decimal) -> LiveBalance:
        """After adding ``amount`` (negative for a charge): the balance and the sequence."""
        return LiveBalance(self.balance + amount, self.seq + 1)


#: A client's live balance before its first ledger write.
NO_BALANCE = LiveBalance(ZERO, 0)


def moved(current: LiveBalance | None, amount: Decimal) -> LiveBalance:
    """``current`` (None: the client has none yet) after adding ``amount``."""
    return (current or NO_BALANCE).moved(amount)
