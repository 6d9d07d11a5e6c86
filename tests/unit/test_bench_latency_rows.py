"""The big-vs-small latency verdict (issue 19): size may not cost more than 20%."""

from __future__ import annotations

from bench.loadgen import Result
from bench.report import _latency_rows
from bench.results import LatencyCompare, pooled


def _result(ms: float) -> Result:
    return Result(latencies=[ms / 1000] * 100)


def _verdicts(big_ms: float, small_ms: float) -> list[str]:
    rows = _latency_rows(LatencyCompare(200.0, _result(big_ms), _result(small_ms)), "x")
    return [row[-1] for row in rows]


def test_a_big_figure_more_than_a_fifth_above_the_small_one_fails() -> None:
    assert _verdicts(1.25, 1.0) == ["**FAIL**", "**FAIL**"]


def test_a_big_figure_up_to_a_fifth_above_passes() -> None:
    assert _verdicts(1.19, 1.0) == ["**pass**", "**pass**"]


def test_a_big_figure_below_the_small_one_is_no_cost_of_size() -> None:
    assert _verdicts(0.5, 1.0) == ["**pass**", "**pass**"]


def test_no_measurement_is_no_verdict() -> None:
    [row] = _latency_rows(None, "x")
    assert row[1] == "–" and "pass" not in row[-1] and "FAIL" not in row[-1]


def test_pooled_runs_give_percentiles_over_all_their_latencies() -> None:
    early = Result(window=10.0, requests=4, latencies=[0.001, 0.002, 0.003, 0.004], timeouts=1)
    late = Result(window=10.0, requests=4, latencies=[0.005, 0.006, 0.007, 0.008], unsent=2)
    both = pooled([early, late])
    assert both.percentile(50) == 0.004
    assert both.percentile(99) == 0.008
    assert (both.requests, both.window, both.timeouts, both.unsent) == (8, 20.0, 1, 2)
    assert both.rate == 0.4
