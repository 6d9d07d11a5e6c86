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
