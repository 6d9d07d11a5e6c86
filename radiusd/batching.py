"""Group commit: accounting requests wait a moment to share one database transaction.

Each request is answered when the transaction holding it commits, so throughput rises with
load instead of falling with every fsync. Under load a batch lingers a few milliseconds for
more requests (as PostgreSQL's commit_delay does): a batch's statements, round trips and
commit cost the same for 10 requests as for 30. A batch that fails is retried one request at a
time, so one bad packet never holds back the others (its own request gets no answer).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GroupCommitter(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], list[Out]],
        executor: Executor,
        *,
        max_batch: int = 128,
        linger: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self._max_batch = max_batch
        self._linger = linger
        self._last = 0  # the size of the last batch
        self._full: asyncio.Future[None] | None = None  # set while a batch lingers
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        if self._full is not None and len(self._queue) >= self._max_batch:
            _settle(self._full)
        return await future

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._full is not None:
            _settle(self._full)
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._gather()
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._last = len(batch)
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(self._executor, self._run_batch, items)
                except Exception:  # noqa: BLE001 - isolate the failing request
                    await self._one_by_one(batch)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            if self._closing:
                return

    async def _gather(self) -> None:
        """Under load (the last batch held more than one request), wait up to ``linger``
        for a full batch: a batch costs its statements, round trips and commit whatever it
        holds, so a larger one costs less per request. A request waits at most ``linger``
        more; none when the server is idle, the queue is full already, or it is closing."""
        if (
            self._linger <= 0
            or self._last <= 1
            or self._closing
            or len(self._queue) >= self._max_batch
        ):
            return
        loop = asyncio.get_running_loop()
        full = self._full = loop.create_future()
        timer = loop.call_later(self._linger, _settle, full)
        try:
            await full
        finally:
            timer.cancel()
            self._full = None

    async def _one_by_one(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        loop = asyncio.get_running_loop()
        for item, future in batch:
            try:
                result = await loop.run_in_executor(self._executor, self._run_batch, [item])
            except Exception as exc:  # noqa: BLE001 - handed to the request's own task
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(result[0])


class LanedCommitter(Generic[In, Out]):
    """Several group committers side by side, so that one batch's database round trips and
    commit overlap another's (PostgreSQL). A request's lane comes from ``key``: requests of
    one call always share a lane, so they are applied in the order they arrived."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], list[Out]],
        executor: Executor,
        key: Callable[[In], str],
        *,
        lanes: int,
        max_batch: int = 128,
        linger: float = 0.0,
    ) -> None:
        self._key = key
        self._lanes = [
            GroupCommitter(run_batch, executor, max_batch=max_batch, linger=linger)
            for _ in range(lanes)
        ]

    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    async def submit(self, item: In) -> Out:
        lane = self._lanes[zlib.crc32(self._key(item).encode()) % len(self._lanes)]
        return await lane.submit(item)

    @property
    def pending(self) -> int:
        return sum(lane.pending for lane in self._lanes)

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self._lanes))
