"""Accounting rules of CONTRACT §3 (Legs, Stop, Times) as pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing_core.domain.accounting_packets import (
    AccountingEvent,
    AcctStatus,
    is_billable,
    normalize_conf_id,
    parse_h323_time,
    rating_moment,
    stop_duration,
)
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import BillEventsBy, BillLeg

ARRIVED = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
MAX_DELAY = 86_400

BASE_EVENT = AccountingEvent(
    nas_key="nas-a|10.0.0.1",
    bill_leg="originate",
    status=AcctStatus.STOP,
    acct_session_id="sess-1",
    conf_id=None,
    avpair_call_id=None,
    origin=None,
    session_time=None,
    delay=None,
    arrived=ARRIVED,
    caller=CallerFacts(),
)


def event(**changes: Any) -> AccountingEvent:
    return replace(BASE_EVENT, **changes)


def test_acct_status_values() -> None:
    assert [int(s) for s in AcctStatus] == [1, 2, 3, 7, 8, 15]


# --- h323 times -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("*12:00:01.123 UTC Mon Nov 27 2026", datetime(2026, 11, 27, 12, 0, 1, 123_000)),
        (".12:00:01.000 UTC Mon Nov 27 2026", datetime(2026, 11, 27, 12, 0, 1)),
        ("12:00:01.000 UTC Mon Nov 27 2026", datetime(2026, 11, 27, 12, 0, 1)),
        ("12:00:01 PST Fri Jan 02 2026", datetime(2026, 1, 2, 12, 0, 1)),  # no milliseconds
        ("  9:05:07.5 CET Tue Mar 3 2026 ", datetime(2026, 3, 3, 9, 5, 7, 500_000)),
        ("23:59:59.999 GMT Thu dec 31 2026", datetime(2026, 12, 31, 23, 59, 59, 999_000)),
        ("00:00:00.000 EST Sun Feb 29 2032", datetime(2032, 2, 29, 0, 0, 0)),  # a leap day
        ("12:00:01.123456 UTC Mon Nov 27 2026", datetime(2026, 11, 27, 12, 0, 1, 123_456)),
    ],
)
def test_parse_h323_time(raw: str, expected: datetime) -> None:
    assert parse_h323_time(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage",
        "*",
        "12:00:01.123",  # no date
        "12:00:01.123 UTC Mon Foo 27 2026",  # no such month
        "25:00:00.000 UTC Mon Nov 27 2026",  # no such hour
        "12:60:00.000 UTC Mon Nov 27 2026",
        "12:00:01.123 UTC Mon Feb 30 2026",  # no such day
        "12:00:01.123 UTC Mon Feb 29 2026",  # not a leap year
        "**12:00:01.123 UTC Mon Nov 27 2026",
        "12:00:01.1234567 UTC Mon Nov 27 2026",
        "2026-11-27T12:00:01Z",
        "12:00:01.123 UTC Mon Nov 27 2026 extra",
    ],
)
def test_parse_h323_time_refuses_garbage(raw: str) -> None:
    assert parse_h323_time(raw) is None


# --- event time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "max_delay", "expected"),
    [
        (None, MAX_DELAY, ARRIVED),
        (0, MAX_DELAY, ARRIVED),
        (5, MAX_DELAY, ARRIVED - timedelta(seconds=5)),
        (86_400, MAX_DELAY, ARRIVED - timedelta(days=1)),  # at the limit: used
        (86_401, MAX_DELAY, ARRIVED),  # over it: ignored as bogus
        (1_764_244_800, MAX_DELAY, ARRIVED),  # Sippy's wall-clock timestamp
        (-5, MAX_DELAY, ARRIVED),
        (60, 60, ARRIVED - timedelta(seconds=60)),
        (61, 60, ARRIVED),
        (1, 0, ARRIVED),
    ],
)
def test_event_time(delay: int | None, max_delay: int, expected: datetime) -> None:
    assert event(delay=delay).event_time(max_delay) == expected


# --- a Stop's duration ----------------------------------------------------------------------

CONNECT = "*12:00:00.000 UTC Fri Nov 27 2026"
DISCONNECT_90 = "*12:01:30.000 UTC Fri Nov 27 2026"


@pytest.mark.parametrize(
    ("changes", "start_before", "expected"),
    [
        # Acct-Session-Time first, whatever else there is
        ({"session_time": 42}, None, 42),
        (
            {"session_time": 42, "connect_time": CONNECT, "disconnect_time": DISCONNECT_90},
            timedelta(seconds=100),
            42,
        ),
        ({"session_time": 0, "connect_time": CONNECT, "disconnect_time": DISCONNECT_90}, None, 0),
        ({"session_time": 0}, timedelta(seconds=100), 0),
        ({"session_time": -5}, None, 0),  # never negative
        # else h323-disconnect-time - h323-connect-time
        ({"connect_time": CONNECT, "disconnect_time": DISCONNECT_90}, None, 90),
        (
            {"connect_time": CONNECT, "disconnect_time": DISCONNECT_90},
            timedelta(seconds=100),
            90,
        ),
        (
            {
                "connect_time": ".23:59:59.000 UTC Fri Nov 27 2026",
                "disconnect_time": "00:00:09.000 UTC Sat Nov 28 2026",
            },
            None,
            10,
        ),  # across midnight
        (
            {
                "connect_time": "12:00:00.000 UTC Fri Nov 27 2026",
                "disconnect_time": "12:00:02.400 UTC Fri Nov 27 2026",
            },
            None,
            2,
        ),
        (
            {
                "connect_time": "12:00:00.000 UTC Fri Nov 27 2026",
                "disconnect_time": "12:00:02.600 UTC Fri Nov 27 2026",
            },
            None,
            3,
        ),
        (
            {"connect_time": DISCONNECT_90, "disconnect_time": CONNECT},
            None,
            0,
        ),  # never negative
        # else the time between the Start's and the Stop's event times
        ({}, timedelta(seconds=30), 30),
        ({"connect_time": CONNECT}, timedelta(seconds=30), 30),  # one h323 time is not enough
        ({"disconnect_time": DISCONNECT_90}, timedelta(seconds=30), 30),
        ({"connect_time": "garbage", "disconnect_time": DISCONNECT_90}, timedelta(seconds=30), 30),
        ({"connect_time": CONNECT, "disconnect_time": "garbage"}, timedelta(seconds=30), 30),
        ({"delay": 5}, timedelta(seconds=65), 60),  # the Stop's event time, not its arrival
        ({"delay": 1_764_244_800}, timedelta(seconds=60), 60),  # a bogus delay is ignored
        ({}, timedelta(seconds=-30), 0),  # a Start after the Stop: never negative
        ({}, timedelta(milliseconds=30_600), 31),
        # else 0
        ({}, None, 0),
        ({"connect_time": "garbage", "disconnect_time": "garbage"}, None, 0),
        ({"connect_time": CONNECT}, None, 0),
    ],
)
def test_stop_duration(
    changes: dict[str, Any], start_before: timedelta | None, expected: int
) -> None:
    start = None if start_before is None else ARRIVED - start_before
    assert stop_duration(event(**changes), start, MAX_DELAY) == expected


def test_stop_duration_uses_the_given_max_delay() -> None:
    stop = event(delay=120)
    start = ARRIVED - timedelta(seconds=180)
    assert stop_duration(stop, start, 86_400) == 60  # delay honoured
    assert stop_duration(stop, start, 100) == 180  # delay over the limit: ignored


# --- the rating moment ----------------------------------------------------------------------

AUTH = datetime(2026, 11, 27, 11, 59, 0, tzinfo=UTC)
START = datetime(2026, 11, 27, 11, 59, 30, tzinfo=UTC)
STOP = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
STOP_MINUS_20 = STOP - timedelta(seconds=20)


@pytest.mark.parametrize(
    ("bill_events_by", "authorized_at", "started_at", "expected"),
    [
        ("setup", AUTH, START, AUTH),
        ("setup", AUTH, None, AUTH),
        ("setup", None, START, STOP_MINUS_20),  # no authorization: Stop - duration
        ("setup", None, None, STOP_MINUS_20),
        ("connect", AUTH, START, START),
        ("connect", None, START, START),
        ("connect", AUTH, None, STOP_MINUS_20),  # no Start: Stop - duration
        ("connect", None, None, STOP_MINUS_20),
        ("disconnect", AUTH, START, STOP),
        ("disconnect", None, None, STOP),
    ],
)
def test_rating_moment(
    bill_events_by: BillEventsBy,
    authorized_at: datetime | None,
    started_at: datetime | None,
    expected: datetime,
) -> None:
    moment = rating_moment(
        bill_events_by,
        authorized_at=authorized_at,
        started_at=started_at,
        stopped_at=STOP,
        duration=20,
    )
    assert moment == expected


def test_rating_moment_with_zero_duration() -> None:
    moment = rating_moment(
        "connect", authorized_at=AUTH, started_at=None, stopped_at=STOP, duration=0
    )
    assert moment == STOP


# --- billable legs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "bill_leg", "expected"),
    [
        (None, "originate", True),  # no h323-call-origin: always billable
        (None, "answer", True),
        (None, "any", True),
        ("", "originate", True),
        ("", "answer", True),
        ("originate", "originate", True),
        ("answer", "originate", False),
        ("answer", "answer", True),
        ("originate", "answer", False),
        ("originate", "any", True),
        ("answer", "any", True),
        ("callback", "originate", False),
        ("callback", "answer", False),
        ("callback", "any", True),
    ],
)
def test_is_billable(origin: str | None, bill_leg: BillLeg, expected: bool) -> None:
    assert is_billable(origin, bill_leg) is expected
    assert event(origin=origin, bill_leg=bill_leg).billable is expected


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3A1B2C3D 4E5F6071 8293A4B5 C6D7E8F9", "3a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ("3a1b2c3d4e5f60718293a4b5c6d7e8f9", "3a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ("  AB CD  ", "abcd"),
        ("", ""),
    ],
)
def test_normalize_conf_id(raw: str, expected: str) -> None:
    assert normalize_conf_id(raw) == expected


@pytest.mark.parametrize(
    ("conf_id", "avpair_call_id", "expected"),
    [
        (None, None, ("sess-1",)),
        ("conf-1", None, ("sess-1", "conf-1")),
        (None, "call-1", ("sess-1", "call-1")),
        ("conf-1", "call-1", ("sess-1", "conf-1", "call-1")),
        ("sess-1", None, ("sess-1",)),  # duplicates once, first place kept
        ("sess-1", "sess-1", ("sess-1",)),
        ("conf-1", "conf-1", ("sess-1", "conf-1")),
        ("conf-1", "sess-1", ("sess-1", "conf-1")),
        ("", "", ("sess-1",)),  # empty values are not identifiers
    ],
)
def test_identifiers(
    conf_id: str | None, avpair_call_id: str | None, expected: tuple[str, ...]
) -> None:
    assert event(conf_id=conf_id, avpair_call_id=avpair_call_id).identifiers() == expected


def test_identifiers_follow_a_copy_with_other_values() -> None:
    """They are computed once, when the event is made: a copy (``dataclasses.replace``)
    computes its own, and they take no part in equality."""
    import dataclasses

    original = event(conf_id="conf-1", avpair_call_id=None)
    copy = dataclasses.replace(original, acct_session_id="sess-2", avpair_call_id="call-2")
    assert copy.identifiers() == ("sess-2", "conf-1", "call-2")
    assert original.identifiers() == ("sess-1", "conf-1")
    assert dataclasses.replace(original) == original
