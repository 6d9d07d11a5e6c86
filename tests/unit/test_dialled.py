"""Normalization of Called-Station-Id and Calling-Station-Id (CONTRACT §3, Numbers)."""

from __future__ import annotations

import pytest

from billing_core.domain.dialled import digits_only, normalize_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("15551234567", "15551234567"),
        ("+15551234567", "15551234567"),  # a leading + dropped
        ("  +15551234567 ", "15551234567"),
        ("sip:15551234567@example.com", "15551234567"),
        ("sip:+15551234567@example.com", "15551234567"),  # user part, then the +
        ("sip:+4420771234@example.com;user=phone", "4420771234"),
        ("sip:+4420771234@example.com:5060;transport=udp", "4420771234"),
        ("sip:+15551234567;npdi;rn=+15550000000@gw.example.com;user=phone", "15551234567"),
        ("sip:15551234567", "15551234567"),  # no host part
        ("sip:15551234567?subject=x", "15551234567"),
        ("SIP:+15551234567@EXAMPLE.COM", "15551234567"),  # the scheme is case-insensitive
        ("sips:+15551234567@example.com:5061", "15551234567"),
        ("Sips:15551234567@example.com", "15551234567"),
        ("tel:+15551234567", "15551234567"),
        ("tel:+1-555-123-4567", "1-555-123-4567"),  # separators are left for digits_only
        ("tel:5551234;phone-context=example.com", "5551234"),
        ("TEL:+44207", "44207"),
        ("123#15551234567", "123#15551234567"),  # a tech prefix is kept for matching
        ("sip:123#15551234567@gw", "123#15551234567"),
        ("1+555", "1+555"),  # only a leading + is dropped
        ("++1555", "+1555"),  # only one
        ("sip:+@example.com", ""),
        ("", ""),
        ("alice", "alice"),
        ("sip:alice@example.com", "alice"),
    ],
)
def test_normalize_number(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("15551234567", "15551234567"),
        ("1-555-123-4567", "15551234567"),
        ("(44) 20 7123 4567", "442071234567"),
        ("123#4567", "1234567"),
        ("*67#555", "67555"),
        ("abc", ""),
        ("", ""),
        ("１２３", ""),  # full-width digits are not ASCII digits
        ("٣٤5", "5"),  # neither are Arabic-Indic ones
    ],
)
def test_digits_only(number: str, expected: str) -> None:
    assert digits_only(number) == expected


@pytest.mark.parametrize(
    ("raw", "rated"),
    [
        ("sip:+1-555-123-4567@example.com;user=phone", "15551234567"),
        ("tel:+44-20-7123-4567", "442071234567"),
        ("+49 30 1234", "49301234"),
    ],
)
def test_normalized_then_digits_only(raw: str, rated: str) -> None:
    assert digits_only(normalize_number(raw)) == rated
