"""The group committer's linger: under load a batch waits a little for more requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from radiusd.batching import GroupCommitter


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        return [item * 10 for item in items]


def _run(linger: float, scenario: object, max_batch: int = 128) -> Recorder:
    recorder = Recorder()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            committer: GroupCommitter[int, int] = GroupCommitter(
                recorder, pool, max_batch=max_batch, linger=linger
            )
            committer.start()
            await scenario(committer)  # type: ignore[operator]
            await committer.close()

    asyncio.run(main())
    return recorder


async def _load_then_trickle(committer: GroupCommitter[int, int]) -> None:
    # three at once (a batch of three: the server is under load), then two, then one more
    # 50 ms later
    assert await asyncio.gather(*(committer.submit(i) for i in (1, 2, 3))) == [10, 20, 30]
    first = [asyncio.ensure_future(committer.submit(i)) for i in (4, 5)]
    await asyncio.sleep(0.05)
    last = asyncio.ensure_future(committer.submit(6))
    assert await asyncio.gather(*first, last) == [40, 50, 60]


def test_under_load_a_batch_lingers_for_the_requests_that_follow() -> None:
    assert _run(0.5, _load_then_trickle).batches == [[1, 2, 3], [4, 5, 6]]


def test_without_linger_each_batch_takes_what_is_queued() -> None:
    assert _run(0.0, _load_then_trickle).batches == [[1, 2, 3], [4, 5], [6]]


def test_an_idle_server_answers_a_lone_request_at_once() -> None:
    took: list[float] = []

    async def lone(committer: GroupCommitter[int, int]) -> None:
        for i in (1, 2):  # one at a time: each batch holds one request
            started = time.monotonic()
            assert await committer.submit(i) == i * 10
            took.append(time.monotonic() - started)

    assert _run(5.0, lone).batches == [[1], [2]]
    assert max(took) < 1.0, took  # not the 5 s linger


def test_a_lingering_batch_goes_when_full_or_when_the_linger_is_over() -> None:
    took: dict[str, float] = {}

    async def scenario(committer: GroupCommitter[int, int]) -> None:
        await asyncio.gather(*(committer.submit(i) for i in (1, 2)))  # under load
        started = time.monotonic()
        await asyncio.gather(*(committer.submit(i) for i in (3, 4, 5, 6)))  # a full batch
        took["full"] = time.monotonic() - started
        started = time.monotonic()
        await committer.submit(7)  # alone after a batch of four: lingers, then goes
        took["alone"] = time.monotonic() - started

    recorder = _run(0.3, scenario, max_batch=4)
    assert recorder.batches == [[1, 2], [3, 4, 5, 6], [7]]
    assert took["full"] < 0.25, took
    assert 0.25 <= took["alone"] < 2.0, took


def test_closing_sends_a_lingering_batch_at_once() -> None:
    took: list[float] = []

    async def scenario(committer: GroupCommitter[int, int]) -> None:
        await asyncio.gather(*(committer.submit(i) for i in (1, 2)))
        pending = asyncio.ensure_future(committer.submit(3))
        await asyncio.sleep(0.05)  # lingering now, for 10 s
        started = time.monotonic()
        await committer.close()
        took.append(time.monotonic() - started)
        assert await pending == 30

    assert _run(10.0, scenario).batches == [[1, 2], [3]]
    assert took[0] < 2.0, took
