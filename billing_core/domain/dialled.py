"""Normalization of Called-Station-Id and Calling-Station-Id (CONTRACT §3, Numbers)."""

from __future__ import annotations

_URI_SCHEMES = ("sip:", "sips:", "tel:")


def normalize_number(raw: str) -> str:
    """The user part of a sip:/sips:/tel: URI, then a leading '+' dropped.

    >>> normalize_number("sip:+4420771234@example.com;user=phone")
    '4420771234'
    """
    value = raw.strip()
    lowered = value.lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            value = value[len(scheme) :]
            # user part: before '@' (sip) and before any ';' parameters or '?' headers
            value = value.split("@", 1)[0]
            value = value.split(";", 1)[0].split("?", 1)[0]
            break
    if value.startswith("+"):
        value = value[1:]
    return value


def digits_only(number: str) -> str:
    """Non-digits removed, as the number is rated."""
    return "".join(ch for ch in number if "0" <= ch <= "9")
