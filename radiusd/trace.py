"""`radiusd serve --trace USER_OR_NAS`: the steps of `billingctl explain`, logged for the live
Access-Requests of one caller (README: Explain a decision, trace).

Off, it costs the hot path one attribute check (``Handler.trace is not None``). SIGUSR1
turns it on and off at run time; without ``--trace`` the toggle traces every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime

from billing_core.config import NasConfig
from billing_core.domain.model import Client
from billing_core.explain import Explanation, LivePeek, decision_step, explain, nas_step
from billing_core.services.authorization import AuthorizationService, AuthorizeCall, AuthOutcome

from .logging import get_logger


class Tracer:
    def __init__(
        self,
        target: str | None,
        service: AuthorizationService,
        peek: Callable[[Client, datetime], LivePeek],
        executor: Executor,
    ) -> None:
        self.target = target.strip() if target else None
        self._service = service
        self._peek = peek
        self._executor = executor
        self.log = get_logger("radiusd.trace")

    def matches(self, nas: NasConfig, source_ip: str, key: str, command: AuthorizeCall) -> bool:
        """The target is the request's User-Name or Calling-Station-Id, its [[nas]] entry's
        name, its source address, or the NAS's own identity in the NAS key."""
        target = self.target
        if target is None:
            return True
        caller = command.caller
        return target in (
            caller.user_name,
            caller.calling,
            nas.name,
            source_ip,
            key.partition("|")[2],
        )

    async def explain(
        self, command: AuthorizeCall, nas: NasConfig, source_ip: str, key: str
    ) -> Explanation:
        """The steps up to the decision, on a read of the live state (in a database thread;
        traced requests only)."""
        explanation = Explanation()
        nas_step(explanation, source_ip, (nas.name, str(nas.address)), key)

        def run() -> None:
            explain(
                self._service,
                command,
                self._peek,
                explanation=explanation,
                with_decision=False,
            )

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except Exception as exc:  # noqa: BLE001 - a trace never costs the request its answer
            explanation.add("trace", f"could not read the live state: {type(exc).__name__}")
        return explanation

    def done(self, explanation: Explanation, outcome: AuthOutcome, command: AuthorizeCall) -> None:
        """Log the steps with the daemon's own decision at the end."""
        decision_step(explanation, outcome.decision, outcome.client)
        self.log.info(
            "auth_trace",
            target=self.target,
            nas=command.nas_key,
            user=command.caller.user_name,
            called=command.caller.called,
            result=explanation.result,
            code=explanation.code,
            reason=explanation.reason,
            steps=explanation.steps,
        )
