"""The daemon's side of notifications: background jobs, never the request path.

- ``Notifier``: the request path only adds a client id to a set (``nudge``) when an
  Access-Accept held funds or accounting charged a call; a job checks those clients every
  second, and every client with a threshold every ``sweep_seconds`` (what billingctl or
  another node changed, a stale call's charge). The check is decided in the database (the
  ``NotificationLog`` port), so nodes doing it at once fire a crossing once.
- ``MailJob``: sends the mail queue through [smtp] (claimed rows only).
- ``EventCounter``: counts the events this process wrote in ``radiusd_events_total``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from billing_core.ports import LiveState, NotificationLog, Outbox

from .logging import get_logger
from .metrics import Metrics


class Notifier:
    REWATCH_SECONDS = 5.0

    def __init__(
        self,
        log: NotificationLog,
        live: LiveState,
        *,
        mail_enabled: bool,
        sweep_seconds: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._log = log
        self._live = live
        self._mail_enabled = mail_enabled
        self._sweep_seconds = sweep_seconds
        self._clock = clock
        self._watched: frozenset[int] = frozenset()  # clients with a threshold
        self._pending: set[int] = set()
        self._swept: float | None = None
        self._rewatched = 0.0

    def nudge(self, client_id: int) -> None:
        """From the request path: a set insertion, nothing else."""
        if client_id in self._watched:
            self._pending.add(client_id)

    def run_once(self, *, sweep: bool, rewatch: bool = False) -> int:
        """In a thread: check the nudged clients (all watched ones on a sweep). Returns how
        many notifications fired."""
        if sweep or rewatch:
            self._watched = frozenset(self._log.clients_with_notifications())
        ids = set(self._watched) if sweep else set()
        pending, self._pending = self._pending, set()
        ids |= pending & self._watched
        if not ids:
            return 0
        views = self._live.view(sorted(ids), self._clock())
        fired = self._log.check(views, mail_enabled=self._mail_enabled)
        return len(fired)

    async def job(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        sweep = self._swept is None or now - self._swept >= self._sweep_seconds
        if sweep:
            self._swept = now
        # which clients have a threshold: read again every few seconds (a cheap query), so
        # a threshold set by billingctl is watched soon after
        rewatch = now - self._rewatched >= self.REWATCH_SECONDS
        if rewatch:
            self._rewatched = now
        fired = await loop.run_in_executor(
            None, lambda: self.run_once(sweep=sweep, rewatch=rewatch)
        )
        if fired:
            get_logger("radiusd").info("notifications_fired", count=fired)


class MailJob:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def job(self) -> None:
        counts = await asyncio.get_running_loop().run_in_executor(
            None, self._outbox.deliver_due, datetime.now(UTC)
        )
        if any(counts.values()):
            get_logger("radiusd").info("mail_queue", **counts)


class EventCounter:
    """``radiusd_events_total{kind}``: the events written by this process, read back from
    the log after they committed (an event rolled back with its cause is never counted)."""

    def __init__(self, log: NotificationLog, source: str, metrics: Metrics) -> None:
        self._log = log
        self._source = source
        self._metrics = metrics
        self._last: int | None = None

    def run_once(self) -> None:
        counts, self._last = self._log.events_written_since(self._source, self._last)
        for kind, count in counts.items():
            self._metrics.events.labels(kind).inc(count)

    async def job(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.run_once)
