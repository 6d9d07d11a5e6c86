"""The bench's flow (bench/cli.py): the CPU targets' rounds, the latency runs in turn, the
embedded default's half load when it is the only deployment, the numbers of rounds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench import cli, procstat
from bench.loadgen import LoadSpec, Result
from bench.procstat import Reading
from bench.results import Measurement, Run
from bench.targets import OurServer


class _Server(OurServer):
    """An OurServer that is never started: it records being stopped."""

    def __init__(self) -> None:
        self.name = "ours-sqlite"
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1

    def cleanup(self) -> None:
        pass


def test_the_embedded_default_alone_is_measured_at_half_load_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _Server()
    closed = Measurement("ours-sqlite", "auth", Result(requests=1000, window=1.0), Reading())
    run = Run("now", {}, {}, {}, measurements=[closed])
    run.production = "ours-sqlite"
    half = Measurement("ours-sqlite", "auth", Result(requests=500), Reading())

    def half_load(_bench: Any, run_: Run, *_args: Any) -> None:
        run_.half_load, run_.half_load_rate = half, 500.0

    def measure(*_args: Any) -> Measurement:  # only the embedded block would measure again
        raise AssertionError("the embedded default was measured after it was stopped")

    monkeypatch.setattr(cli, "_half_load", half_load)
    monkeypatch.setattr(cli, "measure", measure)
    bench = SimpleNamespace(
        targets={"ours-sqlite": server},
        seconds=lambda: 1.0,
        args=SimpleNamespace(extras="half", no_profile=True),
    )
    cli.extras(bench, run, None, None)  # type: ignore[arg-type]
    assert run.half_load_embedded is half
    assert run.half_load_embedded_rate == 500.0
    assert server.stopped == 1


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_cpu_rounds_measure_the_targets_pairs_in_turn_with_new_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[int, str, str]] = []  # (pool, target, scenario)
    pools = iter(range(100))

    def measure(target: Any, scenario: str, pool: Any, *_args: Any) -> Measurement:
        sent.append((pool, target.name, scenario))
        return Measurement(target.name, scenario, Result(requests=1), Reading())

    monkeypatch.setattr(cli, "measure", measure)
    monkeypatch.setattr("bench.cli.time.sleep", lambda _s: None)
    bench = SimpleNamespace(
        seconds=lambda: 1.0,
        pool=lambda *_a, **_k: next(pools),
        load=None,
        checker=None,
    )
    running = [
        _Named(n) for n in ("ours-sqlite", "ours-pg", "ours-pg-redis", "fr-static", "fr-sql")
    ]
    run = Run("now", {}, {}, {})
    args = SimpleNamespace(cpu_rounds=3, max_rate=100.0)
    cli._cpu_rounds(bench, run, args, ["auth", "acct", "mix"], running, None)  # type: ignore[arg-type]
    assert len(run.cpu_rounds) == 2
    # round 2: rlm_sql first; ours-pg only where a target names it (authorization)
    assert sent[:5] == [
        (0, "fr-sql", "auth"),
        (0, "ours-pg-redis", "auth"),
        (0, "ours-pg", "auth"),
        (1, "fr-sql", "acct"),
        (1, "ours-pg-redis", "acct"),
    ]
    # round 3: our server first, on pools of its own
    assert sent[5:] == [
        (2, "ours-pg", "auth"),
        (2, "ours-pg-redis", "auth"),
        (2, "fr-sql", "auth"),
        (3, "ours-pg-redis", "acct"),
        (3, "fr-sql", "acct"),
    ]
    assert run.rounds("ours-pg-redis", "acct")[1:] == [
        m
        for extra in run.cpu_rounds
        for m in extra
        if m.target == "ours-pg-redis" and m.scenario == "acct"
    ]


def test_no_cpu_rounds_without_rlm_sql_or_with_one_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "measure", lambda *_a: pytest.fail("measured"))
    bench = SimpleNamespace(seconds=lambda: 1.0, pool=lambda *_a, **_k: 0, load=None, checker=None)
    run = Run("now", {}, {}, {})
    ours = [_Named("ours-pg-redis")]
    cli._cpu_rounds(bench, run, SimpleNamespace(cpu_rounds=3, max_rate=1.0), ["acct"], ours, None)  # type: ignore[arg-type]
    both = [*ours, _Named("fr-sql")]
    cli._cpu_rounds(bench, run, SimpleNamespace(cpu_rounds=1, max_rate=1.0), ["acct"], both, None)  # type: ignore[arg-type]
    assert run.cpu_rounds == []


@pytest.mark.parametrize("option", ["--cpu-rounds", "--two-node-rounds"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_number_of_rounds_below_one_is_refused_in_one_line(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args([option, value])
    assert exit_.value.code == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert line.endswith(f"argument {option}: {value!r} is not a number of rounds (1 or more)")


def test_latency_big_and_small_runs_each_twice_in_turn_and_pools_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[str] = []
    sizes = {"big": 0.002, "small": 0.001}

    def fresh(_bench: Any, _prod: Any, _data: Any, size: str) -> Any:
        return SimpleNamespace(name=size, stop=lambda: None, cleanup=lambda: None)

    def measure(target: Any, *_args: Any) -> Measurement:
        runs.append(target.name)
        latency = sizes[target.name] * (1 + len(runs))  # the machine slows down run by run
        return Measurement(target.name, "auth", Result(latencies=[latency] * 10), Reading())

    monkeypatch.setattr(cli, "_fresh_server", fresh)
    monkeypatch.setattr(cli, "measure", measure)
    monkeypatch.setattr(procstat, "wait_until_quiet", lambda: (0.0, 0.0))
    bench = SimpleNamespace(
        load=LoadSpec(duration=1.0, warmup=0.1, timeout=1.0, sockets=1, lanes=1),
        start=lambda _t, _r: True,
        targets={},
        pool=lambda *_a: [],
        checker=None,
    )
    prod = _Server()
    compare = cli._latency_big_and_small(bench, Run("now", {}, {}, {}), prod, None, None, 800.0)  # type: ignore[arg-type]
    assert runs == ["big", "small", "small", "big"]
    assert compare is not None
    assert sorted(set(compare.big.latencies)) == [0.002 * 2, 0.002 * 5]
    assert sorted(set(compare.small.latencies)) == [0.001 * 3, 0.001 * 4]
    assert prod.stopped == 1
