"""The database's own live state reached from the event loop: its calls block, so each runs
in a database thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from billing_core.domain.policy import Decision
from billing_core.ports import HoldRequest, LockoutProbe

MAX_BATCH = 128  # check-and-holds in one transaction at most


class LiveInThread:
    """``LiveAuthorizer`` on blocking calls: each in a thread of ``executor``."""

    def __init__(
        self,
        authorize: Callable[[HoldRequest], Decision],
        auth_lockout: Callable[[LockoutProbe], bool],
        executor: Executor | None = None,
    ) -> None:
        self._authorize = authorize
        self._auth_lockout = auth_lockout
        self._executor = executor

    async def authorize(self, request: HoldRequest) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._authorize, request)

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._auth_lockout, probe)


class BatchedLiveInThread(LiveInThread):
    """``LiveInThread`` whose check-and-holds are batched: the requests that arrive while a
    batch is in the database thread go together as the next one (``authorize_many``: one
    transaction, one commit), so the commit's cost is shared and no request waits for more
    than the batch before it and its own."""

    def __init__(
        self,
        authorize_many: Callable[[Sequence[HoldRequest]], list[Decision]],
        auth_lockout: Callable[[LockoutProbe], bool],
        executor: Executor | None = None,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__(lambda request: authorize_many([request])[0], auth_lockout, executor)
        self._authorize_many = authorize_many
        self._max_batch = max_batch
        self._pending: list[tuple[HoldRequest, asyncio.Future[Decision]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def authorize(self, request: HoldRequest) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[tuple[HoldRequest, asyncio.Future[Decision]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                requests = [request for request, _ in batch]
                try:
                    decisions = await loop.run_in_executor(
                        self._executor, self._authorize_many, requests
                    )
                except Exception as exc:  # noqa: BLE001 - every request of the batch gets it
                    _answer(batch, [], exc)
                    continue
                _answer(batch, decisions, None)
                batch = []
        finally:
            self._draining = None
            for _, future in batch + self._pending:  # cancelled: nobody answers them
                future.cancel()
            self._pending = []


class LoopTurnBatches(LiveInThread):
    """``LiveAuthorizer`` for PostgreSQL's live state: the check-and-holds of one loop turn
    go to a database thread together, as one call of ``authorize_many`` (one statement, one
    round trip and one commit for the batch): the thread hand-off, the pool's checkout and
    the commit are paid once per batch, not per request. Several batches may be in flight
    (PostgreSQL takes them concurrently; SQLite, one writer, has ``BatchedLiveInThread``)."""

    def __init__(
        self,
        authorize_many: Callable[[list[HoldRequest]], list[Decision]],
        auth_lockout: Callable[[LockoutProbe], bool],
        executor: Executor | None = None,
    ) -> None:
        super().__init__(lambda request: authorize_many([request])[0], auth_lockout, executor)
        self._many = authorize_many
        self._pending: list[tuple[HoldRequest, asyncio.Future[Decision]]] = []

    async def authorize(self, request: HoldRequest) -> Decision:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Decision] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send, loop)
        self._pending.append((request, answer))
        return await answer

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        done = loop.run_in_executor(self._executor, self._many, [r for r, _ in batch])
        done.add_done_callback(lambda result: _settle(batch, result))


def _settle(
    batch: list[tuple[HoldRequest, asyncio.Future[Decision]]],
    result: asyncio.Future[list[Decision]],
) -> None:
    """Each request's decision, or the batch's error, to each waiting request."""
    if result.cancelled():  # the loop is closing
        for _request, answer in batch:
            answer.cancel()
        return
    error = result.exception()
    _answer(batch, [] if error is not None else result.result(), error)


def _answer(
    batch: list[tuple[HoldRequest, asyncio.Future[Decision]]],
    decisions: list[Decision],
    error: BaseException | None,
) -> None:
    """To each request of ``batch`` still waiting: its decision, or the batch's ``error``."""
    for n, (_request, answer) in enumerate(batch):
        if answer.done():
            continue
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(decisions[n])
