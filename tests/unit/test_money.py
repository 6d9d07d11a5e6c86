"""Money: the one rounding rule, cents toward minus infinity, micro-units, parsing, display."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.domain.money import (
    MICRO,
    ZERO,
    display,
    floor2,
    fmt,
    from_micros,
    parse_amount,
    round6,
    to_micros,
)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.0000005", "0.000001"),  # half-up, not half-even
        ("0.0000015", "0.000002"),
        ("0.0000025", "0.000003"),  # half-even would give 0.000002
        ("0.00000049", "0.000000"),
        ("0.00000049999", "0.000000"),
        ("0.00000050001", "0.000001"),
        ("1.2345674", "1.234567"),
        ("1.2345675", "1.234568"),
        ("-0.0000005", "-0.000001"),  # half away from zero for negatives
        ("-0.00000049", "0.000000"),
        ("0.001666666666", "0.001667"),
        ("10", "10.000000"),
        ("0", "0.000000"),
    ],
)
def test_round6_is_half_up_to_six_places(amount: str, expected: str) -> None:
    result = round6(Decimal(amount))
    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -6


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.809", "0.80"),
        ("0.801", "0.80"),
        ("0.80", "0.80"),
        ("0.009999", "0.00"),
        ("10", "10.00"),
        ("-0.001", "-0.01"),  # toward minus infinity, not toward zero
        ("-0.01", "-0.01"),
        ("-0.011", "-0.02"),
        ("-5", "-5.00"),
        ("-4.999999", "-5.00"),
        ("1.999999", "1.99"),
    ],
)
def test_floor2_rounds_toward_minus_infinity(amount: str, expected: str) -> None:
    result = floor2(Decimal(amount))
    assert result == Decimal(expected)
    assert str(result) == expected


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        ("0", 0),
        ("0.000001", 1),
        ("1", 1_000_000),
        ("1.5", 1_500_000),
        ("1.500000", 1_500_000),
        ("1.5000000", 1_500_000),  # 7 places written, but only a trailing zero: exact
        ("-0.000001", -1),
        ("-12.345678", -12_345_678),
        ("999999999.999999", 999_999_999_999_999),
    ],
)
def test_to_micros_and_back_is_exact(amount: str, micros: int) -> None:
    assert to_micros(Decimal(amount)) == micros
    back = from_micros(micros)
    assert back == Decimal(amount)
    assert back.as_tuple().exponent == -6


@pytest.mark.parametrize("amount", ["0.0000001", "1.0000005", "-0.0000001", "0.1234567"])
def test_to_micros_refuses_a_seventh_decimal(amount: str) -> None:
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        to_micros(Decimal(amount))


def test_from_micros_formats_with_six_places() -> None:
    assert str(from_micros(1)) == "0.000001"
    assert str(from_micros(-2_500_000)) == "-2.500000"
    assert str(from_micros(0)) == "0.000000"


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_micros_round_trip_property(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


@given(
    st.decimals(
        min_value="-1000000000",
        max_value="1000000000",
        places=6,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_amount_round_trip_property(amount: Decimal) -> None:
    assert from_micros(to_micros(amount)) == amount


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", "0.000000"),
        ("10", "10.000000"),
        ("0.10", "0.100000"),
        (" 1.5 ", "1.500000"),
        ("-5.00", "-5.000000"),
        ("0.000001", "0.000001"),
        ("1.2300000", "1.230000"),  # a trailing zero past 6 places changes nothing
        ("1E+2", "100.000000"),
    ],
)
def test_parse_amount_accepts_up_to_six_places(text: str, expected: str) -> None:
    result = parse_amount(text)
    assert result == Decimal(expected)
    assert str(result) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "1,5", "0.0000001", "1.2345671", "NaN", "sNaN", "Infinity", "-inf"]
)
def test_parse_amount_refuses_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


@pytest.mark.parametrize("text", ["1e22", "12345678901234567890123"])
def test_parse_amount_refuses_huge_amounts_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.8", "0.80"),
        ("0.80", "0.80"),
        ("0.800000", "0.80"),
        ("10", "10.00"),
        ("10.000000", "10.00"),
        ("0.001667", "0.001667"),
        ("0.0016670", "0.001667"),
        ("0.000001", "0.000001"),
        ("0.1", "0.10"),
        ("0.123", "0.123"),
        ("-5", "-5.00"),
        ("-5.000000", "-5.00"),
        ("-0.05", "-0.05"),
        ("-0.000001", "-0.000001"),
        ("0", "0.00"),
        ("1234567.5", "1234567.50"),
        ("1E+3", "1000.00"),  # never scientific notation
    ],
)
def test_display(amount: str, expected: str) -> None:
    assert display(Decimal(amount)) == expected


def test_display_and_fmt_use_the_one_rounding_rule() -> None:
    assert display(Decimal("0.0000025")) == "0.000003"
    assert fmt(Decimal("0.0000025")) == "0.000003"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("0", "0.000000"), ("1.5", "1.500000"), ("-0.000001", "-0.000001"), ("1E+2", "100.000000")],
)
def test_fmt_is_six_places(amount: str, expected: str) -> None:
    assert fmt(Decimal(amount)) == expected


def test_constants() -> None:
    assert Decimal("0.000001") == MICRO
    assert ZERO == 0
    assert ZERO.as_tuple().exponent == -6
