"""The two-node scenario's ledger check judges what the generator sent against the CDRs."""

from __future__ import annotations

from decimal import Decimal

from bench.ledger import ACCOUNTING_RESPONSE, judge
from bench.loadgen import TIMED_OUT

ANSWERED = ACCOUNTING_RESPONSE
COST = Decimal("0.25")


def _sid(job: int) -> str:
    return f"s{job}"


def _stop(step: int) -> bool:
    return step >= 2


def _call(job: int, *stops: int) -> list[tuple[int, int, int]]:
    """Access-Request and Start answered, then the Stops' outcomes."""
    return [(job, 0, 2), (job, 1, ANSWERED)] + [(job, 2 + i, c) for i, c in enumerate(stops)]


def test_each_answered_stop_charged_once_passes() -> None:
    answers = _call(0, ANSWERED) + _call(1, ANSWERED, ANSWERED) + _call(2)
    cdrs = {"s0": [(COST, [-COST])], "s1": [(COST, [-COST])]}
    check = judge(answers, _stop, _sid, cdrs, 0)
    check.drifts = 0
    assert check.ok, check.summary()
    assert (check.calls, check.stops_answered, check.charged) == (3, 2, 2)
    assert check.resent_answered == 1
    assert check.stops_not_sent == 1
    assert check.charged_total == 2 * COST


def test_a_lost_stop_fails() -> None:
    check = judge(_call(0, ANSWERED), _stop, _sid, {}, 0)
    check.drifts = 0
    assert check.lost == 1 and not check.ok


def test_a_stop_charged_twice_fails() -> None:
    two_cdrs = {"s0": [(COST, [-COST]), (COST, [-COST])]}
    two_charges = {"s0": [(COST, [-COST, -COST])]}
    for cdrs in (two_cdrs, two_charges):
        check = judge(_call(0, ANSWERED, ANSWERED), _stop, _sid, cdrs, 0)
        check.drifts = 0
        assert check.twice == 1 and not check.ok


def test_wrong_amounts_unsent_stops_with_cdrs_and_strays_fail() -> None:
    wrong = judge(_call(0, ANSWERED), _stop, _sid, {"s0": [(COST, [-COST / 2])]}, 0)
    invented = judge(_call(0), _stop, _sid, {"s0": [(COST, [-COST])]}, 0)
    foreign = judge(
        _call(0, ANSWERED), _stop, _sid, {"s0": [(COST, [-COST])], "x": [(COST, [])]}, 0
    )
    stray = judge(_call(0, ANSWERED), _stop, _sid, {"s0": [(COST, [-COST])]}, 1)
    for check in (wrong, invented, foreign, stray):
        check.drifts = 0
        assert not check.ok
    assert (wrong.wrong_amount, invented.unexpected, foreign.unexpected) == (1, 1, 1)


def test_a_timed_out_stop_may_be_charged_once_but_not_twice() -> None:
    for cdrs in ({}, {"s0": [(COST, [-COST])]}):
        check = judge(_call(0, TIMED_OUT), _stop, _sid, cdrs, 0)
        check.drifts = 0
        assert check.ok and check.stops_unanswered == 1
    check = judge(_call(0, TIMED_OUT), _stop, _sid, {"s0": [(COST, [-COST])] * 2}, 0)
    check.drifts = 0
    assert not check.ok


def test_a_free_call_has_a_cdr_and_no_charge() -> None:
    check = judge(_call(0, ANSWERED), _stop, _sid, {"s0": [(Decimal(0), [])]}, 0)
    check.drifts = 0
    assert check.ok and check.charged == 1


def test_a_live_drift_or_no_verify_fails() -> None:
    check = judge(_call(0, ANSWERED), _stop, _sid, {"s0": [(COST, [-COST])]}, 0)
    assert not check.ok  # live verify never ran
    check.drifts = 1
    assert not check.ok
