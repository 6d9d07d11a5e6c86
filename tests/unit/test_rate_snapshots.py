"""Rate index snapshots: an index read back from its snapshot rates every number at every
moment as the index built from the rates did; a snapshot that does not check is refused
(None: the reader reads the rows instead), never half used."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.adapters.sql.rate_snapshots import Snapshot, decode, encode
from billing_core.domain.rating import Rate, RateTableIndex

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)


def rate(code: str, price: str, start: datetime = JAN, end: datetime | None = None) -> Rate:
    return Rate(code, "", Decimal(price), Decimal("0.05"), 30, 6, 2, start, end)


def sample() -> RateTableIndex:
    return RateTableIndex(
        [
            rate("1", "0.010000"),
            rate("44", "0.020000"),
            rate("4420", "0.030000", JAN, JUN),
            rate("4420", "0.035000", JUN),  # two periods: newest first in the index
            rate("442071", "0.040000", JUN),  # not yet effective in May
            rate("7", "0.000001"),
        ]
    )


NUMBERS = ["1555", "44", "4420123", "442071234", "4471", "7", "8", "", "442"]
MOMENTS = [JAN - timedelta(seconds=1), JAN, datetime(2026, 5, 1, tzinfo=UTC), JUN]


def test_a_snapshot_rates_as_the_index_it_was_made_from() -> None:
    index = sample()
    snapshot = encode(index)
    assert snapshot is not None
    back = decode(snapshot)
    assert back is not None
    assert back.size == index.size == 6
    for number in NUMBERS:
        for moment in MOMENTS:
            assert back.lookup(number, moment) == index.lookup(number, moment), (number, moment)
    # the two periods of 4420 survive, newest first
    assert back.lookup("4420", datetime(2026, 5, 1, tzinfo=UTC)).rate == Decimal("0.03")  # type: ignore[union-attr]
    assert back.lookup("4420", JUN).rate == Decimal("0.035")  # type: ignore[union-attr]


def test_an_empty_table_round_trips() -> None:
    snapshot = encode(RateTableIndex([]))
    assert snapshot is not None
    back = decode(snapshot)
    assert back is not None and back.size == 0 and back.lookup("1", JAN) is None


codes = st.text(alphabet="0123456789", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(codes, st.integers(0, 999_999), st.sampled_from([JAN, JUN])),
        max_size=40,
    ),
    st.lists(st.text(alphabet="0123456789", max_size=8), min_size=1, max_size=10),
)
def test_any_index_round_trips(rows: list[tuple[str, int, datetime]], numbers: list[str]) -> None:
    seen: set[tuple[str, datetime]] = set()
    rates = []
    for code, micros, start in rows:
        if (code, start) not in seen:
            seen.add((code, start))
            rates.append(rate(code, str(Decimal(micros).scaleb(-6)), start))
    index = RateTableIndex(rates)
    snapshot = encode(index)
    assert snapshot is not None
    back = decode(snapshot)
    assert back is not None and back.size == index.size
    for number in numbers:
        for moment in MOMENTS:
            assert back.lookup(number, moment) == index.lookup(number, moment)


def test_a_prefix_with_a_newline_is_not_snapshotted() -> None:
    assert encode(RateTableIndex([rate("1\n2", "0.01")])) is None


def _broken(snapshot: Snapshot) -> list[tuple[str, Snapshot]]:
    head = json.loads(snapshot.plans)
    ids = snapshot.plan_ids

    def with_head(**changes: object) -> Snapshot:
        return snapshot._replace(plans=json.dumps({**head, **changes}))

    naive = [[*plan[:6], plan[6].replace("+00:00", ""), plan[7]] for plan in head["plans"]]
    no_interval = [[*plan[:4], 0, *plan[5:]] for plan in head["plans"]]
    return [
        ("not JSON", snapshot._replace(plans="{")),
        ("a plan id cut short", snapshot._replace(plan_ids=ids[:-1])),
        ("a plan id missing", snapshot._replace(plan_ids=ids[:-4])),
        ("a plan that does not exist", snapshot._replace(plan_ids=ids[:-4] + b"\x63\0\0\0")),
        ("a prefix too few", snapshot._replace(codes=snapshot.codes.rsplit(b"\n", 1)[0])),
        ("a prefix twice", snapshot._replace(codes=snapshot.codes.replace(b"44\n", b"1\n", 1))),
        ("more prefixes counted", with_head(count=head["count"] + 1)),
        ("several periods not listed", with_head(multi={})),
        ("several periods of no plan", with_head(multi={"4420": [0, 99]})),
        ("a naive moment", with_head(plans=naive)),
        ("an interval of 0", with_head(plans=no_interval)),
        ("a plan missing a field", with_head(plans=[plan[:7] for plan in head["plans"]])),
        ("prefixes not UTF-8", snapshot._replace(codes=b"\xff" + snapshot.codes[1:])),
    ]


@pytest.mark.parametrize("case", range(13))
def test_a_snapshot_that_does_not_check_is_refused(case: int) -> None:
    snapshot = encode(sample())
    assert snapshot is not None and decode(snapshot) is not None
    why, broken = _broken(snapshot)[case]
    assert decode(broken) is None, why
