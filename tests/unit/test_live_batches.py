"""The embedded default's check-and-holds reach the database thread in batches
(``BatchedLiveInThread``): the requests that arrive while one batch is in the thread go
together as the next one, each answered with its own decision, in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from billing_core.domain.money import ZERO
from billing_core.domain.policy import Accept, Decision, GrantTerms
from billing_core.ports import HoldRequest, LockoutProbe
from billing_core.services.live_threads import BatchedLiveInThread

from .test_authorization import client


def _request(n: int) -> HoldRequest:
    return HoldRequest(
        terms=GrantTerms(client(), None, 3600),
        nas_key="nas",
        account_id=n,
        called="1555",
        identifiers=(f"c{n}",),
        acct_session_id=f"c{n}",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hold_seconds=180,
    )


class Recorder:
    """``authorize_many`` that records its batches; the first one waits for ``release``,
    so that the requests sent meanwhile pile up behind it."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.fail_batch = fail_batch

    def __call__(self, requests: Sequence[HoldRequest]) -> list[Decision]:
        self.batches.append([r.account_id for r in requests])
        if len(self.batches) == 1:
            assert self.release.wait(5)
        if len(self.batches) - 1 == self.fail_batch:
            raise RuntimeError("the batch failed")
        # a decision that names its request: the answers must not be crossed
        return [Accept(r.account_id, ZERO, None) for r in requests]


def _never(_probe: LockoutProbe) -> bool:
    return False


async def _send(live: BatchedLiveInThread, recorder: Recorder, count: int) -> list[object]:
    first = asyncio.ensure_future(live.authorize(_request(0)))
    await asyncio.sleep(0.05)  # the first batch is in the thread, waiting
    rest = [asyncio.ensure_future(live.authorize(_request(n))) for n in range(1, count)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


def test_requests_sent_during_a_batch_go_together_as_the_next_and_get_their_own_answers() -> None:
    recorder = Recorder()
    with ThreadPoolExecutor(1) as executor:
        live = BatchedLiveInThread(recorder, _never, executor)
        answers = asyncio.run(_send(live, recorder, 6))
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
    assert answers == [Accept(n, ZERO, None) for n in range(6)]


def test_a_batch_is_at_most_max_batch_requests() -> None:
    recorder = Recorder()
    with ThreadPoolExecutor(1) as executor:
        live = BatchedLiveInThread(recorder, _never, executor, max_batch=2)
        answers = asyncio.run(_send(live, recorder, 6))
    assert recorder.batches == [[0], [1, 2], [3, 4], [5]]
    assert answers == [Accept(n, ZERO, None) for n in range(6)]


def test_a_failed_batch_fails_its_requests_only() -> None:
    recorder = Recorder(fail_batch=1)
    with ThreadPoolExecutor(1) as executor:
        live = BatchedLiveInThread(recorder, _never, executor, max_batch=2)
        answers = asyncio.run(_send(live, recorder, 5))
    assert recorder.batches == [[0], [1, 2], [3, 4]]
    assert answers[0] == Accept(0, ZERO, None)
    assert [type(a) for a in answers[1:3]] == [RuntimeError, RuntimeError]
    assert answers[3:] == [Accept(3, ZERO, None), Accept(4, ZERO, None)]
