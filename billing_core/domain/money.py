"""Money: Decimal amounts, the one rounding rule, and integer micro-units.

Amounts are ``Decimal`` built from ``str`` or ``int``, never from ``float``. The ledger keeps
6 decimal places; a call's cost is rounded once, half-up (CONTRACT §3). Live state that must
be changed atomically (Redis) holds integer micro-units (1e-6).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation

MICRO = Decimal("0.000001")
CENT = Decimal("0.01")
ZERO = Decimal("0.000000")
MICROS_PER_UNIT = 1_000_000


def round6(amount: Decimal) -> Decimal:
    """The one rounding rule: half-up to 6 decimal places (and no negative zero)."""
    return amount.quantize(MICRO, rounding=ROUND_HALF_UP) + ZERO


def floor2(amount: Decimal) -> Decimal:
    """Two decimals, toward minus infinity (h323-credit-amount)."""
    return amount.quantize(CENT, rounding=ROUND_FLOOR)


def to_micros(amount: Decimal) -> int:
    """Exact conversion of a 6-decimal amount to integer micro-units."""
    scaled = amount.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"amount {amount} has more than 6 decimal places")
    return int(scaled)


def from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6).quantize(MICRO)


def parse_amount(text: str) -> Decimal:
    """A decimal string with at most 6 decimal places; raises ValueError otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    if value.adjusted() >= 18:
        raise ValueError(f"amount too large: {text!r}")
    if value != round6(value):
        raise ValueError(f"more than 6 decimal places: {text!r}")
    return value.quantize(MICRO)


def fmt(amount: Decimal) -> str:
    """The canonical string form of a ledger amount (6 decimal places)."""
    return str(round6(amount))


def display(amount: Decimal) -> str:
    """For people and JSON: at least 2 decimals, at most 6, no trailing zeros past the cents
    (``0.80``, ``10.00``, ``0.001667``)."""
    text = f"{round6(amount):f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"
