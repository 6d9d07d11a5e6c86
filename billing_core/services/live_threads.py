"""The database's own live state reached from the event loop: its calls block, so each runs
in a database thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from billing_core.domain.policy import Decision
from billing_core.ports import HoldRequest, LockoutProbe


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
    """``LiveAuthorizer`` whose check-and-holds of one loop turn go to a database thread
    together, as one call of ``authorize_many`` (on PostgreSQL one statement, one round
    trip and one commit for the batch): the thread hand-off, the pool's checkout and the
    commit are paid once per batch, not per request. Several batches may be in flight."""

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
    waiting = [(n, answer) for n, (_request, answer) in enumerate(batch) if not answer.done()]
    if result.cancelled():  # the loop is closing
        for _n, answer in waiting:
            answer.cancel()
        return
    error = result.exception()
    for n, answer in waiting:
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(result.result()[n])
