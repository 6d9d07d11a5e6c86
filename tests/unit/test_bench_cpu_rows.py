"""Issue 18's rows of the targets table: whole-system CPU per request against rlm_sql's."""

from __future__ import annotations

from bench.loadgen import Result
from bench.procstat import Reading
from bench.report import _cpu_rows, _rounds_table
from bench.results import Measurement, Run


def _m(target: str, scenario: str, requests: int, **cpu: float) -> Measurement:
    return Measurement(target, scenario, Result(requests=requests), Reading(cpu=cpu))


def _run(*measurements: Measurement) -> Run:
    return Run("now", {}, {}, {}, measurements=list(measurements))


def _row(rows: list[list[str]], start: str) -> list[str]:
    [row] = [r for r in rows if r[0].startswith(start)]
    return row


def test_the_whole_system_is_summed_on_both_sides() -> None:
    # ours: 0.2 + 0.1 + 0.05 = 0.35 ms per request; rlm_sql: 0.1 + 0.3 = 0.4 ms
    rows = _cpu_rows(
        _run(
            _m("ours-pg-redis", "acct", 1000, server=0.2, postgresql=0.1, redis=0.05),
            _m("fr-sql", "acct", 2000, server=0.2, postgresql=0.6),
        )
    )
    row = _row(rows, "durable accounting")
    assert row[1] == "0.88 × (0.350 vs 0.400 ms)"
    assert row[-1] == "**pass**"


def test_above_the_bound_fails_and_a_missing_side_is_not_judged() -> None:
    rows = _cpu_rows(
        _run(
            _m("ours-pg-redis", "auth", 1000, server=0.2),
            _m("fr-sql", "auth", 1000, server=0.4),
        )
    )
    assert _row(rows, "authorization, PostgreSQL + Redis")[-1] == "**FAIL**"  # 0.5 > 0.25
    assert _row(rows, "authorization, PostgreSQL alone")[-1] == "not measured"


def test_the_embedded_default_is_judged_on_its_server_cpu() -> None:
    rows = _cpu_rows(_run(_m("ours-sqlite", "auth", 1000, server=0.29)))
    assert _row(rows, "authorization, the embedded default")[-1] == "**pass**"
    rows = _cpu_rows(_run(_m("ours-sqlite", "auth", 1000, server=0.31)))
    assert _row(rows, "authorization, the embedded default")[-1] == "**FAIL**"


def test_the_embedded_half_load_row_needs_a_p99_under_20_ms() -> None:
    run = _run()
    run.half_load_embedded = Measurement(
        "ours-sqlite", "auth", Result(requests=100, latencies=[0.019] * 100), Reading()
    )
    run.half_load_embedded_rate = 1000.0
    assert _row(_cpu_rows(run), "authorization p99 at half load")[-1] == "**pass**"
    run.half_load_embedded.result.latencies = [0.021] * 100
    assert _row(_cpu_rows(run), "authorization p99 at half load")[-1] == "**FAIL**"
    assert _row(_cpu_rows(_run()), "authorization p99 at half load")[-1] == "not measured"


def test_rounds_are_judged_on_the_median_of_their_ratios() -> None:
    # rounds: 1.2 (0.6 vs 0.5), 0.9 (0.45 vs 0.5), 0.95 (0.38 vs 0.4): median 0.95 passes
    run = _run(
        _m("ours-pg-redis", "acct", 1000, server=0.6),
        _m("fr-sql", "acct", 1000, server=0.5),
    )
    run.cpu_rounds = [
        [_m("fr-sql", "acct", 1000, server=0.5), _m("ours-pg-redis", "acct", 1000, server=0.45)],
        [_m("ours-pg-redis", "acct", 1000, server=0.38), _m("fr-sql", "acct", 1000, server=0.4)],
    ]
    row = _row(_cpu_rows(run), "durable accounting")
    assert row[1] == "0.95 × (median of 3 rounds: 1.20, 0.90, 0.95; 0.450 vs 0.500 ms, medians)"
    assert row[-1] == "**pass**"
    # the same rounds with the first one alone would have failed
    run.cpu_rounds = []
    assert _row(_cpu_rows(run), "durable accounting")[-1] == "**FAIL**"


def test_a_round_missing_one_side_is_left_out_of_the_median() -> None:
    run = _run(
        _m("ours-pg-redis", "auth", 1000, server=0.2),
        _m("fr-sql", "auth", 1000, server=0.5),
    )
    run.cpu_rounds = [[_m("ours-pg-redis", "auth", 1000, server=0.9)]]  # rlm_sql failed
    row = _row(_cpu_rows(run), "authorization, PostgreSQL + Redis")
    assert row[1] == "0.40 × (0.200 vs 0.500 ms)"
    assert row[-1] == "**FAIL**"


def test_the_rounds_table_lists_each_round_of_each_pair() -> None:
    run = _run(
        _m("ours-pg-redis", "acct", 1000, server=0.6),
        _m("fr-sql", "acct", 1000, server=0.5),
    )
    run.cpu_rounds = [
        [_m("fr-sql", "acct", 1000, server=0.5), _m("ours-pg-redis", "acct", 1000, server=0.45)]
    ]
    rows = [line for line in _rounds_table(run) if line.startswith("| durable accounting")]
    assert [line.split(" | ")[1:5] for line in rows] == [
        ["1", "0.600", "0.500", "1.20 ×"],
        ["2", "0.450", "0.500", "0.90 ×"],
    ]
