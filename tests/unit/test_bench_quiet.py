"""bench/procstat.wait_until_quiet: paced measurements start on a quiet machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bench import procstat


def ticks_of(busy_shares: list[float]) -> Callable[[], tuple[int, int]]:
    """Readings of /proc/stat whose successive windows are ``busy_shares`` busy."""

    def readings() -> Iterator[tuple[int, int]]:
        busy = total = 0
        yield busy, total
        for share in busy_shares:
            busy, total = busy + int(share * 200), total + 200
            yield busy, total

    it = readings()
    return lambda: next(it)


def test_it_waits_for_a_window_below_the_bound() -> None:
    slept: list[float] = []
    waited, busy = procstat.wait_until_quiet(
        ticks=ticks_of([0.9, 0.5, 0.1, 0.0]), sleep=slept.append
    )
    assert (waited, busy) == (3.0, 0.1)
    assert slept == [1.0, 1.0, 1.0]


def test_it_gives_up_after_the_timeout() -> None:
    waited, busy = procstat.wait_until_quiet(
        ticks=ticks_of([0.8] * 10), sleep=lambda _s: None, timeout=4.0
    )
    assert (waited, busy) == (4.0, 0.8)


def test_this_machine_s_counters_read() -> None:
    busy, total = procstat.machine_ticks()
    assert 0 <= busy <= total and total > 0
