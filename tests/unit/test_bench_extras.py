"""The extras' flow (bench/cli.py): the embedded default's half load when it is the only
deployment measured."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench import cli
from bench.loadgen import Result
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
