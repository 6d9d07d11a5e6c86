"""Rating: billed duration, cost, the grant, and the longest-prefix rate index (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing_core.domain.money import ZERO, round6


@dataclass(frozen=True, slots=True)
class Rate:
    """One rate of a rate table: price per minute and the billing grid, in seconds."""

    code: str
    name: str
    rate: Decimal
    setup_fee: Decimal
    min_volume: int
    interval: int
    grace_volume: int
    effective_date: datetime
    end_date: datetime | None = None

    def __post_init__(self) -> None:
        if self.interval < 1 or self.min_volume < 0 or self.grace_volume < 0:
            raise ValueError(f"rate {self.code}: interval >= 1, min_volume and grace_volume >= 0")

    def effective_at(self, moment: datetime) -> bool:
        return self.effective_date <= moment and (self.end_date is None or moment < self.end_date)


def billed(rate: Rate, duration: int) -> int:
    """Billed seconds for a call of ``duration`` seconds (CONTRACT §3)."""
    if duration <= 0 or duration <= rate.grace_volume:
        return 0
    if duration <= rate.min_volume:
        return rate.min_volume
    over = duration - rate.min_volume
    return rate.min_volume + -(-over // rate.interval) * rate.interval


def cost(rate: Rate, duration: int) -> Decimal:
    """setup_fee + rate x billed / 60, rounded once, half-up, to 6 places; 0 if nothing billed."""
    seconds = billed(rate, duration)
    if seconds == 0:
        return ZERO
    return round6(rate.setup_fee + rate.rate * seconds / 60)


def first_grid_point(rate: Rate) -> int:
    """g1 = max(min_volume, interval): the first billable grid point."""
    return max(rate.min_volume, rate.interval)


def grant(rate: Rate, funds: Decimal, max_call_length: int) -> int:
    """The largest d <= max_call_length with cost(d) <= funds, where d is max_call_length itself
    or a grid point min_volume + k x interval >= g1. 0 when no such d exists."""
    if cost(rate, max_call_length) <= funds:
        return max_call_length
    g1 = first_grid_point(rate)
    # smallest grid point >= g1
    k_min = max(0, -(-(g1 - rate.min_volume) // rate.interval))
    k_max = (max_call_length - rate.min_volume) // rate.interval
    if k_max < k_min:
        return 0

    def point(k: int) -> int:
        return rate.min_volume + k * rate.interval

    if cost(rate, point(k_min)) > funds:
        return 0
    # cost is non-decreasing in k: binary search the last affordable grid point
    lo, hi = k_min, k_max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(rate, point(mid)) <= funds:
            lo = mid
        else:
            hi = mid - 1
    return point(lo)


_Plan = tuple[str, Decimal, Decimal, int, int, int, datetime, "datetime | None"]


class RateTableIndex:
    """Longest-prefix lookup among the rates effective at a moment.

    Compact for a million prefixes: a rate table has few distinct price plans (price, setup
    fee, grid, dates), so each prefix maps to the number of its plan (or a tuple of them,
    newest effective_date first, when it has several periods), and the Rate is built on
    lookup. A lookup costs one dict probe per digit of the number.
    """

    __slots__ = ("_by_code", "_max_len", "_plans", "size")
    _by_code: dict[str, int | tuple[int, ...]]
    _max_len: int
    _plans: list[_Plan]
    size: int

    def __init__(self, rates: Iterable[Rate] = ()) -> None:
        builder = RateIndexBuilder()
        for rate in rates:
            builder.add(
                rate.code,
                (
                    rate.name,
                    rate.rate,
                    rate.setup_fee,
                    rate.min_volume,
                    rate.interval,
                    rate.grace_volume,
                    rate.effective_date,
                    rate.end_date,
                ),
            )
        builder.fill(self)

    def lookup(self, number: str, moment: datetime) -> Rate | None:
        by_code = self._by_code
        plans = self._plans
        for length in range(min(len(number), self._max_len), 0, -1):
            found = by_code.get(number[:length])
            if found is None:
                continue
            for plan_id in (found,) if isinstance(found, int) else found:
                name, price, setup, min_volume, interval, grace, start, end = plans[plan_id]
                if start <= moment and (end is None or moment < end):
                    return Rate(
                        number[:length], name, price, setup, min_volume, interval, grace, start, end
                    )
        return None

    def parts(self) -> tuple[dict[str, int | tuple[int, ...]], list[_Plan], int]:
        """What the index is made of (prefix -> plan number or numbers, newest first; the
        plans; the number of rates), for a snapshot (``restore`` builds it back)."""
        return self._by_code, self._plans, self.size

    @classmethod
    def restore(
        cls, by_code: dict[str, int | tuple[int, ...]], plans: list[_Plan], size: int
    ) -> RateTableIndex:
        """The index ``parts`` described; the caller vouches that every plan number exists."""
        index = cls.__new__(cls)
        index._by_code = by_code
        index._plans = plans
        index._max_len = max(map(len, by_code), default=0)
        index.size = size
        return index


class RateIndexBuilder:
    """Builds a RateTableIndex row by row, without a Rate object per row (a million rows)."""

    def __init__(self) -> None:
        self.plans: list[_Plan] = []
        self.plan_ids: dict[_Plan, int] = {}
        self.grouped: dict[str, int | list[tuple[datetime, int]]] = {}
        self.size = 0

    def add(self, code: str, plan: _Plan) -> None:
        plan_id = self.plan_ids.get(plan)
        if plan_id is None:
            plan_id = self.plan_ids[plan] = len(self.plans)
            self.plans.append(plan)
        self.size += 1
        found = self.grouped.get(code)
        if found is None:
            self.grouped[code] = plan_id
            return
        if isinstance(found, int):
            found = [(self.plans[found][6], found)]
            self.grouped[code] = found
        found.append((plan[6], plan_id))

    def fill(self, index: RateTableIndex) -> None:
        by_code: dict[str, int | tuple[int, ...]] = {}
        for code, periods in self.grouped.items():
            if isinstance(periods, int):
                by_code[code] = periods
            else:
                periods.sort(key=lambda p: p[0], reverse=True)
                by_code[code] = tuple(plan_id for _start, plan_id in periods)
        index._plans = self.plans
        index._by_code = by_code
        index._max_len = max((len(code) for code in by_code), default=0)
        index.size = self.size

    def build(self) -> RateTableIndex:
        index = RateTableIndex.__new__(RateTableIndex)
        self.fill(index)
        return index
