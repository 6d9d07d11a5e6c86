"""Rating: billed duration, cost, the grant (CONTRACT §3, Rating and Access-Request) and the
longest-prefix rate index."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.rating import Rate, RateTableIndex, billed, cost, first_grid_point, grant

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_rate(
    rate: str = "0.10",
    *,
    setup_fee: str = "0",
    min_volume: int = 60,
    interval: int = 60,
    grace_volume: int = 0,
    code: str = "1",
    name: str = "",
    effective_date: datetime = T0,
    end_date: datetime | None = None,
) -> Rate:
    return Rate(
        code=code,
        name=name or code,
        rate=Decimal(rate),
        setup_fee=Decimal(setup_fee),
        min_volume=min_volume,
        interval=interval,
        grace_volume=grace_volume,
        effective_date=effective_date,
        end_date=end_date,
    )


# --- the rate's own validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_volume", "interval", "grace_volume"), [(60, 0, 0), (60, -1, 0), (-1, 60, 0), (0, 1, -1)]
)
def test_rate_refuses_an_impossible_grid(min_volume: int, interval: int, grace_volume: int) -> None:
    with pytest.raises(ValueError, match="interval >= 1"):
        make_rate(min_volume=min_volume, interval=interval, grace_volume=grace_volume)


def test_rate_accepts_the_smallest_grid() -> None:
    rate = make_rate(min_volume=0, interval=1, grace_volume=0)
    assert (rate.min_volume, rate.interval, rate.grace_volume) == (0, 1, 0)


# --- billed ---------------------------------------------------------------------------------

# (min_volume, interval, grace_volume, duration, billed seconds)
BILLED = [
    (60, 60, 0, -5, 0),
    (60, 60, 0, 0, 0),
    (60, 60, 0, 1, 60),
    (60, 60, 0, 59, 60),
    (60, 60, 0, 60, 60),
    (60, 60, 0, 61, 120),
    (60, 60, 0, 120, 120),
    (60, 60, 0, 121, 180),
    (0, 1, 0, 1, 1),
    (0, 1, 0, 59, 59),
    (0, 1, 0, 3601, 3601),
    (0, 6, 0, 1, 6),
    (0, 6, 0, 6, 6),
    (0, 6, 0, 7, 12),
    (30, 6, 0, 1, 30),
    (30, 6, 0, 30, 30),
    (30, 6, 0, 31, 36),
    (30, 6, 0, 36, 36),
    (30, 6, 0, 37, 42),
    (30, 60, 0, 31, 90),  # the grid is min_volume + k x interval, not multiples of interval
    (60, 60, 5, 5, 0),  # within the grace volume: nothing
    (60, 60, 5, 6, 60),
    (0, 6, 10, 10, 0),
    (0, 6, 10, 11, 12),
    (60, 60, 90, 90, 0),  # grace above min_volume
    (60, 60, 90, 91, 120),
    (0, 60, 0, 1, 60),
]


@pytest.mark.parametrize(("min_volume", "interval", "grace", "duration", "expected"), BILLED)
def test_billed(min_volume: int, interval: int, grace: int, duration: int, expected: int) -> None:
    rate = make_rate(min_volume=min_volume, interval=interval, grace_volume=grace)
    assert billed(rate, duration) == expected


# --- cost -----------------------------------------------------------------------------------

# (rate, setup_fee, min_volume, interval, grace_volume, duration, cost)
COST = [
    ("0.10", "0", 60, 60, 0, 0, "0"),
    ("0.10", "0", 60, 60, 0, 1, "0.10"),
    ("0.10", "0", 60, 60, 0, 60, "0.10"),
    ("0.10", "0", 60, 60, 0, 61, "0.20"),  # the contract's example
    ("0.10", "0", 60, 60, 0, 600, "1.00"),
    ("0.10", "0", 0, 1, 0, 1, "0.001667"),  # 0.0016666... half-up
    ("0.10", "0", 0, 1, 0, 3, "0.005"),
    ("0.05", "0", 0, 1, 0, 60, "0.05"),  # rounded once: not 60 x 0.000833 = 0.04998
    ("0.05", "0", 0, 1, 0, 59, "0.049167"),
    ("0.000003", "0", 0, 1, 0, 10, "0.000001"),  # exactly 0.0000005: half-up
    ("0.000003", "0", 0, 1, 0, 9, "0"),  # 0.00000045 rounds down
    ("0.10", "0.05", 60, 60, 0, 0, "0"),  # no setup fee without a billed second
    ("0.10", "0.05", 60, 60, 0, 1, "0.15"),
    ("0.10", "0.05", 60, 60, 0, 61, "0.25"),
    ("0.10", "0.05", 60, 60, 5, 5, "0"),  # within grace: no setup fee either
    ("0.10", "0.05", 60, 60, 5, 6, "0.15"),
    ("0", "0.25", 60, 60, 0, 1, "0.25"),
    ("0", "0.25", 60, 60, 0, 3600, "0.25"),
    ("0", "0", 60, 60, 0, 3600, "0"),
    ("0.60", "0", 30, 60, 0, 31, "0.90"),
    ("1.234567", "0.000001", 0, 7, 0, 8, "0.288067"),  # 0.000001 + 1.234567 x 14 / 60
    ("0.10", "0", 0, 6, 0, 7, "0.02"),
]


@pytest.mark.parametrize(
    ("per_minute", "setup", "min_volume", "interval", "grace", "duration", "expected"), COST
)
def test_cost(
    per_minute: str,
    setup: str,
    min_volume: int,
    interval: int,
    grace: int,
    duration: int,
    expected: str,
) -> None:
    rate = make_rate(
        per_minute, setup_fee=setup, min_volume=min_volume, interval=interval, grace_volume=grace
    )
    result = cost(rate, duration)
    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -6  # a ledger amount


@pytest.mark.parametrize(
    ("min_volume", "interval", "g1"),
    [(60, 60, 60), (0, 1, 1), (0, 6, 6), (30, 6, 30), (30, 60, 60)],
)
def test_first_grid_point(min_volume: int, interval: int, g1: int) -> None:
    assert first_grid_point(make_rate(min_volume=min_volume, interval=interval)) == g1


# --- grant ----------------------------------------------------------------------------------

# (rate, setup_fee, min_volume, interval, grace_volume, funds, max_call_length, grant)
GRANT = [
    ("0.10", "0", 60, 60, 0, "1.00", 3600, 600),  # contract: 1.00 at 0.10/min 60/60
    ("0.20", "0", 60, 60, 0, "8.00", 1800, 1800),  # contract: capped by max_call_length
    ("0.20", "0", 60, 60, 0, "2.00", 1800, 600),
    ("0.20", "0", 60, 60, 0, "3.60", 1800, 1080),
    ("0.20", "0", 60, 60, 0, "3.59", 1800, 1020),
    ("0.20", "0", 60, 60, 0, "6.00", 1800, 1800),
    ("0", "0", 60, 60, 0, "0", 3600, 3600),  # a free rate grants max_call_length
    ("0", "0", 60, 60, 0, "0.01", 7200, 7200),
    ("0", "0.10", 60, 60, 0, "0.10", 3600, 3600),  # only the setup fee to pay
    ("0", "0.10", 60, 60, 0, "0.09", 3600, 0),
    ("0.10", "0", 60, 60, 0, "0.09", 3600, 0),  # cost(g1) > funds
    ("0.10", "0", 60, 60, 0, "0.10", 3600, 60),
    ("0.10", "0", 60, 60, 0, "-1.00", 3600, 0),
    ("0.10", "0", 60, 60, 0, "1.00", 630, 600),  # cost(630) = cost(660) = 1.10 > 1.00
    ("0.10", "0", 60, 60, 0, "1.10", 630, 630),  # max_call_length itself, off the grid
    ("0.10", "0", 60, 6, 0, "0.10", 30, 30),  # max_call_length below min_volume, affordable
    ("0.10", "0", 60, 6, 0, "0.09", 30, 0),  # ... and not affordable
    ("0.10", "0", 0, 6, 0, "0.01", 3600, 6),
    ("0.10", "0", 0, 6, 0, "0.019999", 3600, 6),
    ("0.10", "0", 0, 6, 0, "0.02", 3600, 12),
    ("0.10", "0", 0, 1, 0, "0.001667", 3600, 1),
    ("0.10", "0", 0, 1, 0, "0.001666", 3600, 0),
    ("0.60", "0", 30, 60, 0, "1.00", 3600, 90),  # g1 = 60: the grid points are 90, 150, ...
    ("0.60", "0", 30, 60, 0, "0.89", 3600, 0),  # 30 is on the grid but below g1
    ("0.60", "0", 30, 60, 0, "1.50", 3600, 150),
    ("0.10", "0.50", 60, 60, 0, "1.00", 3600, 300),  # the setup fee comes off first
    ("0.10", "0.50", 60, 60, 0, "0.59", 3600, 0),
    ("0.10", "0", 60, 60, 10, "0", 10, 10),  # max_call_length within the grace volume
]


@pytest.mark.parametrize(
    ("per_minute", "setup", "min_volume", "interval", "grace", "funds", "mcl", "expected"), GRANT
)
def test_grant(
    per_minute: str,
    setup: str,
    min_volume: int,
    interval: int,
    grace: int,
    funds: str,
    mcl: int,
    expected: int,
) -> None:
    rate = make_rate(
        per_minute, setup_fee=setup, min_volume=min_volume, interval=interval, grace_volume=grace
    )
    assert grant(rate, Decimal(funds), mcl) == expected


def test_grant_contract_example_8_00_at_0_20() -> None:
    rate = make_rate("0.20")
    seconds = grant(rate, Decimal("8.00"), 1800)
    assert seconds == 1800
    assert cost(rate, seconds) == Decimal("6.00")
    assert grant(rate, Decimal("2.00"), 1800) == 600
    assert cost(rate, 600) == Decimal("2.00")
    assert grant(rate, Decimal("3.60"), 1800) == 1080
    assert cost(rate, 1080) == Decimal("3.60")


# --- properties -----------------------------------------------------------------------------


def _amounts(max_value: str, min_value: str = "0") -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=min_value, max_value=max_value, places=6, allow_nan=False, allow_infinity=False
    )


@st.composite
def rates(draw: st.DrawFn) -> Rate:
    return make_rate(
        str(draw(_amounts("5"))),
        setup_fee=str(draw(st.sampled_from(["0", "0", "0.01", "0.25"]) | _amounts("1"))),
        min_volume=draw(st.integers(min_value=0, max_value=120)),
        interval=draw(st.integers(min_value=1, max_value=120)),
        grace_volume=draw(st.integers(min_value=0, max_value=30)),
    )


def _exact_cost(rate: Rate, duration: int) -> Decimal:
    """An oracle from exact fractions: setup + rate x billed / 60, half-up to 6 places."""
    seconds = billed(rate, duration)
    if seconds == 0:
        return Decimal(0)
    exact = Fraction(rate.setup_fee) + Fraction(rate.rate) * seconds / 60
    micros = math.floor(exact * 1_000_000 + Fraction(1, 2))
    return Decimal(micros).scaleb(-6)


def _next_grid_point(rate: Rate, above: int) -> int:
    """The smallest grid point min_volume + k x interval that is >= g1 and > above."""
    g1 = first_grid_point(rate)
    target = max(g1, above + 1)
    k = max(0, -(-(target - rate.min_volume) // rate.interval))
    return rate.min_volume + k * rate.interval


def _on_grid(rate: Rate, seconds: int) -> bool:
    return (
        seconds >= first_grid_point(rate)
        and seconds >= rate.min_volume
        and (seconds - rate.min_volume) % rate.interval == 0
    )


@given(rates(), st.integers(min_value=-10, max_value=10_000))
def test_cost_matches_the_exact_oracle(rate: Rate, duration: int) -> None:
    assert cost(rate, duration) == _exact_cost(rate, duration)


@given(rates(), st.integers(min_value=0, max_value=10_000), st.integers(0, 10_000))
def test_cost_never_decreases_as_duration_grows(rate: Rate, duration: int, extra: int) -> None:
    assert cost(rate, duration) <= cost(rate, duration + extra)


@given(rates())
def test_cost_of_zero_is_zero(rate: Rate) -> None:
    assert cost(rate, 0) == 0
    assert billed(rate, 0) == 0


@given(rates(), st.integers(min_value=1, max_value=10_000))
def test_billed_covers_the_call_on_the_grid(rate: Rate, duration: int) -> None:
    seconds = billed(rate, duration)
    if duration <= rate.grace_volume:
        assert seconds == 0
        return
    assert seconds >= duration
    assert seconds == rate.min_volume or (seconds - rate.min_volume) % rate.interval == 0
    if duration > rate.min_volume:
        assert seconds - duration < rate.interval


@given(rates(), _amounts("50", "-1"), st.integers(min_value=1, max_value=7200))
def test_grant_never_costs_more_than_the_funds(rate: Rate, funds: Decimal, mcl: int) -> None:
    seconds = grant(rate, funds, mcl)
    assert 0 <= seconds <= mcl
    if seconds > 0:
        assert cost(rate, seconds) <= funds


@given(rates(), _amounts("50", "-1"), st.integers(min_value=1, max_value=7200))
def test_grant_is_max_call_length_or_a_grid_point(rate: Rate, funds: Decimal, mcl: int) -> None:
    seconds = grant(rate, funds, mcl)
    assert seconds in (0, mcl) or _on_grid(rate, seconds)


@given(rates(), _amounts("50", "-1"), st.integers(min_value=1, max_value=7200))
def test_grant_is_maximal(rate: Rate, funds: Decimal, mcl: int) -> None:
    seconds = grant(rate, funds, mcl)
    if seconds == mcl:
        return
    assert cost(rate, mcl) > funds
    following = _next_grid_point(rate, seconds)
    if following <= mcl:
        assert cost(rate, following) > funds


@given(rates(), _amounts("3", "-0.1"), st.integers(min_value=1, max_value=400))
def test_grant_equals_the_brute_force_answer(rate: Rate, funds: Decimal, mcl: int) -> None:
    candidates = [d for d in range(1, mcl + 1) if d == mcl or _on_grid(rate, d)]
    affordable = [d for d in candidates if cost(rate, d) <= funds]
    assert grant(rate, funds, mcl) == max(affordable, default=0)


# --- the rate table index -------------------------------------------------------------------

T_JAN = datetime(2026, 1, 1, tzinfo=UTC)
T_FEB = datetime(2026, 2, 1, tzinfo=UTC)
T_MAR = datetime(2026, 3, 1, tzinfo=UTC)

INDEX = RateTableIndex(
    [
        make_rate(code="1", name="usa", effective_date=T_JAN),
        make_rate(code="1555", name="usa-555", effective_date=T_JAN),
        make_rate(code="15551", name="usa-5551-jan", effective_date=T_JAN, end_date=T_FEB),
        make_rate(code="44", name="uk-old", effective_date=T_JAN),
        make_rate(code="44", name="uk-new", effective_date=T_FEB),  # overlaps uk-old
        make_rate(code="447", name="uk-mobile-from-mar", effective_date=T_MAR),
        make_rate(code="49", name="de-feb", effective_date=T_FEB, end_date=T_MAR),
        make_rate(code="49", name="de-jan", effective_date=T_JAN),  # older, open-ended
        make_rate(code="33", name="fr-jan-only", effective_date=T_JAN, end_date=T_FEB),
        make_rate(code="712", name="ru-712", effective_date=T_JAN),
    ]
)


@pytest.mark.parametrize(
    ("number", "moment", "expected"),
    [
        ("15551234567", T_JAN, "usa-5551-jan"),  # longest prefix wins
        ("15551234567", T_FEB - timedelta(microseconds=1), "usa-5551-jan"),
        ("15551234567", T_FEB, "usa-555"),  # end_date is exclusive: falls back to a shorter one
        ("15559999999", T_JAN, "usa-555"),
        ("12125551234", T_JAN, "usa"),
        ("1", T_JAN, "usa"),  # a 1-digit number against longer codes
        ("15", T_JAN, "usa"),
        ("7", T_JAN, None),  # only a longer code starts with 7
        ("71", T_JAN, None),
        ("7123", T_JAN, "ru-712"),
        ("441234", T_JAN, "uk-old"),
        ("441234", T_FEB, "uk-new"),  # the newest effective rate wins among overlapping
        ("447700900", T_FEB, "uk-new"),  # 447 not yet effective
        ("447700900", T_MAR, "uk-mobile-from-mar"),
        ("4930", T_JAN, "de-jan"),
        ("4930", T_FEB, "de-feb"),
        ("4930", T_MAR, "de-jan"),  # the newer one ended: the older open-ended one again
        ("331", T_JAN, "fr-jan-only"),
        ("331", T_FEB, None),  # ended, nothing shorter
        ("331", T_JAN - timedelta(microseconds=1), None),  # not yet effective
        ("999", T_MAR, None),  # unknown number
        ("", T_MAR, None),
    ],
)
def test_rate_table_lookup(number: str, moment: datetime, expected: str | None) -> None:
    found = INDEX.lookup(number, moment)
    assert (found.name if found else None) == expected


def test_rate_table_index_size_and_empty_index() -> None:
    assert INDEX.size == 10
    empty = RateTableIndex([])
    assert empty.size == 0
    assert empty.lookup("15551234567", T_MAR) is None


@pytest.mark.parametrize(
    ("moment", "effective"),
    [
        (T_JAN - timedelta(seconds=1), False),
        (T_JAN, True),  # effective_date <= moment
        (T_FEB - timedelta(seconds=1), True),
        (T_FEB, False),  # moment < end_date
    ],
)
def test_effective_at_is_half_open(moment: datetime, effective: bool) -> None:
    rate = make_rate(effective_date=T_JAN, end_date=T_FEB)
    assert rate.effective_at(moment) is effective
