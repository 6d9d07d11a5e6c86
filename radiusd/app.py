"""The composition root: builds every part from the config, runs, drains, exits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine

from billing_core.adapters.errors import unavailable
from billing_core.adapters.live_peek import peek
from billing_core.adapters.redis_connect import authorizer
from billing_core.adapters.redis_live import (
    CHORES_LEASE_KEY,
    CHORES_LEASE_MS,
    RedisLiveState,
    ResyncingLive,
)
from billing_core.adapters.secretbox import cipher_for
from billing_core.adapters.sql.db import current_revision, head_revision, make_engine
from billing_core.adapters.sql.notify import daemon_source, record_event, set_event_source
from billing_core.adapters.sql.store import SqlStore
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.errors import UserError
from billing_core.ports import LiveState
from billing_core.services.accounting import AccountingService, AcctOutcome
from billing_core.services.authorization import AuthorizationService, CatalogCache, SecretCache

from . import steering
from .batching import LanedCommitter
from .codec import DIALECT_DICTIONARIES, Codec, load_dictionary
from .config import Config, ConfigError, ListenAddress, SecurityConfig, load_config
from .disconnect import Disconnector
from .handler import Handler
from .httpd import start_http
from .logging import get_logger
from .metrics import Metrics
from .notify import EventCounter, MailJob, smtp_settings
from .notify import Notifier as BalanceNotifier
from .sdnotify import Notifier
from .trace import Tracer
from .transport import NasTable, RadiusProtocol, RadiusServer

HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1})

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Running:
    server: RadiusServer
    transports: list[asyncio.DatagramTransport]
    http: asyncio.Server | None
    executor: ThreadPoolExecutor
    catalog: CatalogCache
    metrics: Metrics
    committer: LanedCommitter[AccountingEvent, AcctOutcome]
    accounting: AccountingService
    redis_live: ResyncingLive | None
    store: SqlStore
    primary: bool
    close_stale: Callable[[datetime], int]
    handler: Handler
    tracer: Tracer
    health: Callable[[], Awaitable[list[str]]]
    authorization: AuthorizationService | None = None
    notifier: BalanceNotifier | None = None
    events: EventCounter | None = None
    mailer: MailJob | None = None
    disconnector: Disconnector | None = None


def _socket(listen: ListenAddress, *, workers: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if workers > 1:  # workers share the port; a request's Identifier picks one (steering)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        # "[::]" is dual stack: IPv4 switches reach it too, as ::ffff:a.b.c.d (which the NAS
        # table and the NAS key read as a.b.c.d); a v4-mapped address can only be bound with
        # V6ONLY off. Any other IPv6 address serves IPv6 only.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if listen.dual_stack else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((listen.host, listen.port))
    if workers > 1:
        try:
            steering.attach(sock, workers)
        except OSError as exc:  # not Linux, or an old kernel: the kernel's 4-tuple hash
            get_logger("radiusd").warning("steering_unavailable", error=str(exc))
    sock.setblocking(False)
    return sock


async def start(
    config: Config,
    *,
    metrics: Metrics | None = None,
    serve_http: bool = True,
    primary: bool = True,
) -> Running:
    """Build and bind everything. With several workers, only the primary heals the live
    state and runs the stale reaper; the supervisor serves HTTP for all of them."""
    log = get_logger("radiusd")
    metrics = metrics or Metrics()
    engine = make_engine(
        config.database.url.reveal(), pool_size=config.database.pool_size, pre_ping=False
    )
    store = SqlStore(engine)
    sqlite = engine.dialect.name == "sqlite"
    executor = ThreadPoolExecutor(
        max_workers=1 if sqlite else config.database.pool_size, thread_name_prefix="db"
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, require_current_schema, engine)
    catalog = await loop.run_in_executor(executor, CatalogCache, store)
    gc.freeze()  # the catalog lives long: the collector need not walk its objects again
    source = daemon_source()
    set_event_source(source)
    events = EventCounter(engine, source, metrics)
    await loop.run_in_executor(executor, events.run_once)  # from here on, ours are counted
    live: LiveState = store
    redis_live: ResyncingLive | None = None
    if config.redis.url.reveal():
        # no rebuild at start: a client missing from Redis is loaded on first use, and one
        # whose effects did not all reach it is healed in the background (background_jobs)
        redis_live = ResyncingLive.from_url(
            config.redis.url.reveal(),
            store.live_client,
            cluster=config.redis.cluster,
            ended=store.ended_legs,
            clients=lambda: list(catalog.current.clients),
            marks=store,
        )
        live = redis_live
    authorization = AuthorizationService(
        lambda: catalog.current,
        live,
        max_call_length=config.billing.max_call_length,
        auth_hold_seconds=config.billing.auth_hold_seconds,
        secrets=SecretCache(
            server_cipher(config.security),
            lambda account, problem: log.error(
                "account_secret_unusable", account=account.name, problem=problem
            ),
        ),
        max_auth_failures=config.security.max_auth_failures,
        auth_lockout_seconds=config.security.auth_lockout_seconds,
    )
    accounting = AccountingService(
        lambda: catalog.current,
        store,
        live,
        auth_hold_seconds=config.billing.auth_hold_seconds,
        max_acct_delay_seconds=config.billing.max_acct_delay_seconds,
        stale_grace_seconds=config.billing.stale_grace_seconds,
        max_call_length=config.billing.max_call_length,
        sequenced_live=redis_live is not None,
    )
    committer: LanedCommitter[AccountingEvent, AcctOutcome] = LanedCommitter(
        timed_batches(accounting.record_many, metrics),
        executor,
        call_lane,
        lanes=accounting_lanes(sqlite=sqlite, redis=redis_live is not None),
    )
    committer.start()
    codec = Codec(load_dictionary(config.server.dictionary))
    # the other dialects' packaged dictionaries ([[nas]] dialect; all of them, so that a
    # SIGHUP may bring a NAS of any dialect); [server] dictionary replaces cisco's only
    codecs = {
        dialect: Codec(load_dictionary(dialect=dialect))
        for dialect in DIALECT_DICTIONARIES
        if dialect != "cisco"
    }
    fast_live = None
    if redis_live is not None:
        loaded = redis_live
        fast_live = authorizer(
            config.redis.url.reveal(),
            lambda cid: loaded.load_client(cid, replace=False),
            cluster=config.redis.cluster,
        )
    handler = Handler(
        codec,
        authorization,
        committer.submit,
        executor,
        metrics,
        live_authorize=fast_live.authorize if fast_live else None,
        live_lockout=fast_live.auth_lockout if fast_live else None,
        codecs=codecs,
    )
    notifier = BalanceNotifier(engine, live, mail_enabled=bool(config.smtp.host))
    handler.notify = notifier.nudge
    server = RadiusServer(
        codec,
        NasTable(config.nas),
        handler.handle,
        metrics,
        max_in_flight=config.server.max_in_flight,
        duplicate_ttl=config.server.duplicate_cache_seconds,
        duplicate_size=config.server.duplicate_cache_size,
        codecs=codecs,
    )
    transports: list[asyncio.DatagramTransport] = []
    for listen, accounting_port in (
        (config.server.auth_listen, False),
        (config.server.acct_listen, True),
    ):
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda ap=accounting_port: RadiusProtocol(server, ap),  # type: ignore[misc]
            sock=_socket(listen, workers=config.server.workers),
        )
        transports.append(transport)

    health = health_check(store, redis_live, metrics)
    http = None
    if serve_http:
        http = await start_http(config.server.metrics_listen, metrics.registry, health)
    log.info(
        "started",
        auth=_bound(transports[0]),
        acct=_bound(transports[1]),
        metrics=_bound_server(http) if http else "supervisor",
        database=engine.dialect.name,
        live_state="redis" if redis_live is not None else "database",
        nas=len(config.nas),
        catalog_version=catalog.current.version,
        secrets_key=config.security.secrets_key is not None,
    )
    return Running(
        server,
        transports,
        http,
        executor,
        catalog,
        metrics,
        committer,
        accounting,
        redis_live,
        store,
        primary,
        accounting.close_stale,
        handler,
        Tracer(None, authorization, functools.partial(peek, live, store), executor),
        health,
        authorization,
        notifier=notifier,
        events=events,
        mailer=MailJob(engine, smtp_settings(config.smtp)) if config.smtp.host else None,
        disconnector=Disconnector(
            engine, config.nas, metrics, grace_seconds=config.billing.stale_grace_seconds
        ),
    )


def server_cipher(security: SecurityConfig) -> Any:
    """The cipher of account secrets under the configured key (none: nothing decrypts)."""
    key = security.secrets_key
    return cipher_for(key.reveal() if key is not None else None)


def timed_batches(
    run: Callable[[Sequence[AccountingEvent]], list[AcctOutcome]], metrics: Metrics
) -> Callable[[Sequence[AccountingEvent]], list[AcctOutcome]]:
    """``run`` (an accounting batch), its size and time counted when it committed."""

    def timed(events: Sequence[AccountingEvent]) -> list[AcctOutcome]:
        started = time.perf_counter()
        outcomes = run(events)
        metrics.batch(len(events), time.perf_counter() - started)
        return outcomes

    return timed


SWEEP_SECONDS = 60.0  # how often every client's live sequence is compared with Redis's
HEALTH_TIMEOUT = 2.0  # seconds a part may take to answer /healthz before it counts as down
HEALTH_EVERY = 5.0  # seconds between the probes that feed radiusd_dependency_up


def accounting_lanes(*, sqlite: bool, redis: bool) -> int:
    """Group committers side by side. SQLite has one writer. On PostgreSQL alone two lanes
    overlap one batch's commit with the next batch; with Redis one lane does more (measured:
    its batches are twice as large, and server and PostgreSQL CPU per request about half)."""
    return 1 if sqlite or redis else 2


def call_lane(event: AccountingEvent) -> str:
    """Requests of one call share a lane: the legs of a call share its h323-conf-id, else
    its Acct-Session-Id (Sippy); Accounting-On/Off of a NAS key go by the NAS key."""
    return f"{event.nas_key}|{event.conf_id or event.acct_session_id}"


def require_current_schema(engine: Engine) -> None:
    """Refuse to serve on a database whose schema is not the one this version writes."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise UserError(
            f"database schema is at revision {current or 'none'}, this version needs {head}: "
            "run `billingctl db upgrade`"
        )


def start_failure(exc: BaseException) -> str:
    """One line saying why the daemon could not start (never a traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    down = unavailable(exc)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    if down is not None:
        return f"cannot start: {down} unreachable: {first}"
    if isinstance(exc, OSError):  # a port taken, an address not ours
        return f"cannot start: {exc}"
    return f"cannot start: {type(exc).__name__}: {first}"


def health_check(
    store: SqlStore,
    redis_live: RedisLiveState | None,
    metrics: Metrics,
    *,
    timeout: float = HEALTH_TIMEOUT,
) -> Callable[[], Awaitable[list[str]]]:
    """/healthz: the names of the unreachable parts (database, redis), none when healthy.

    The parts are checked at once, and one that does not answer within ``timeout`` (a server
    that accepts connections but hangs) is unreachable too. Its check goes on in the
    background and the next requests wait for that same check rather than starting another,
    so a hung server holds one thread per part, never the whole pool."""
    parts: list[tuple[str, Callable[[], bool]]] = [("database", store.reachable)]
    if redis_live is not None:
        parts.append(("redis", redis_live.reachable))
    running: dict[str, asyncio.Future[bool]] = {}

    async def probe(name: str, check: Callable[[], bool]) -> bool:
        future = running.get(name)
        if future is None or future.done():
            future = running[name] = asyncio.get_running_loop().run_in_executor(None, check)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False

    async def health() -> list[str]:
        results = await asyncio.gather(*(probe(name, check) for name, check in parts))
        down: list[str] = []
        for (name, _check), ok in zip(parts, results, strict=True):
            metrics.up.labels(name).set(1 if ok else 0)
            if not ok:
                down.append(name)
        return down

    return health


def _bound(transport: asyncio.DatagramTransport) -> str:
    host, port = transport.get_extra_info("sockname")[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_server(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def every(
    seconds: float,
    stop: asyncio.Event,
    job: Callable[[], Awaitable[None]],
    name: str,
    *,
    at_start: bool = False,
) -> None:
    """Run ``job`` every ``seconds`` (and once right away ``at_start``) until ``stop``; a
    failure is logged and retried later."""
    log = get_logger("radiusd")
    wait = not at_start
    while not stop.is_set():
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)
        wait = True
        if stop.is_set():
            break
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - keep serving; try again next round
            log.warning(f"{name}_failed", error=f"{type(exc).__name__}: {exc}")


def background_jobs(
    running: Running, stop: asyncio.Event, config: Config
) -> list[asyncio.Task[None]]:
    log = get_logger("radiusd")
    loop = asyncio.get_running_loop()

    async def refresh() -> None:
        if await loop.run_in_executor(running.executor, running.catalog.refresh):
            gc.freeze()  # the old catalog is freed by reference counting (it has no cycles)
            log.info("catalog_reloaded", version=running.catalog.current.version)

    async def reap() -> None:
        closed = await loop.run_in_executor(
            running.executor, running.close_stale, datetime.now(UTC)
        )
        if closed:
            log.info("stale_calls_closed", calls=closed)

    def repairing(work: Callable[[], int], event: str) -> Callable[[], Awaitable[None]]:
        """A job that runs ``work`` (heal or sweep: clients reloaded) in a database thread;
        the stale gauge says whether some client's effects are still missing from Redis."""

        async def job() -> None:
            healed = await loop.run_in_executor(running.executor, work)
            if healed:
                running.metrics.live_healed.inc(healed)
                log.info(event, clients=healed)
                detail = {"clients": healed, "by": event}
                await loop.run_in_executor(
                    running.executor,
                    lambda: record_event(running.store.engine, "live_healed", detail=detail),
                )
            if running.redis_live is not None:
                running.metrics.live_stale.set(1 if running.redis_live.lagging else 0)

        return job

    async def probe_health() -> None:
        await running.health()  # radiusd_dependency_up, also when nobody asks /healthz

    async def count_active() -> None:
        active = await loop.run_in_executor(running.executor, running.store.count_active_calls)
        running.metrics.active_calls.set(active)

    reap_every = max(0.2, min(30.0, config.billing.stale_grace_seconds / 4))
    jobs = [
        asyncio.create_task(every(1.0, stop, refresh, "catalog_refresh")),
    ]
    live = running.redis_live
    if running.primary and live is not None:
        heal = repairing(live.heal, "live_state_healed")
        sweep = repairing(live.sweep, "live_state_swept")
        jobs += [
            asyncio.create_task(every(1.0, stop, heal, "live_heal")),
            asyncio.create_task(every(SWEEP_SECONDS, stop, sweep, "live_sweep", at_start=True)),
        ]
    if running.http is not None:  # with workers, the supervisor probes
        jobs.append(asyncio.create_task(every(HEALTH_EVERY, stop, probe_health, "health_probe")))
    if running.notifier is not None:
        jobs.append(asyncio.create_task(every(1.0, stop, running.notifier.job, "notifier")))
    if running.events is not None:
        jobs.append(asyncio.create_task(every(1.0, stop, running.events.job, "events_count")))
    if running.primary:
        chores = Chores(live, running.executor)
        jobs += [
            asyncio.create_task(every(2.0, stop, count_active, "active_calls")),
            asyncio.create_task(every(1.0, stop, chores.renew, "chores_lease")),
            asyncio.create_task(every(reap_every, stop, chores.only(reap), "stale_reaper")),
        ]
        if running.mailer is not None:
            mail = chores.only(running.mailer.job)
            jobs.append(asyncio.create_task(every(1.0, stop, mail, "mail_queue")))
        if running.disconnector is not None:
            cut = chores.only(running.disconnector.job)
            jobs.append(asyncio.create_task(every(1.0, stop, cut, "disconnects")))
    return jobs


class Chores:
    """The deployment's chores (closing stale calls, Disconnect-Requests, the mail queue)
    are done by one node at a time when the nodes share a Redis: the holder of a lease it
    renews every second; another node takes over within the lease's 3 s when it stops or
    loses Redis. Each chore is safe on several nodes at once (its rows are claimed in the
    database), so without Redis every node does them; the lease only saves the work of the
    others, which grows with the number of nodes. A node that cannot reach Redis does them
    too: a Redis outage must not stop calls being closed or cut."""

    def __init__(self, live: ResyncingLive | None, executor: Executor) -> None:
        self._live = live
        self._executor = executor
        self.held = live is None

    async def renew(self) -> None:
        if self._live is not None:
            loop = asyncio.get_running_loop()
            held = await loop.run_in_executor(
                self._executor, self._live.holds_lease, CHORES_LEASE_KEY, CHORES_LEASE_MS
            )
            self.held = held is not False

    def only(self, chore: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            if self.held:
                await chore()

        return job


def reload_nas(running: Running, config_path: Path | None) -> None:
    """SIGHUP: re-read the config and swap in the new NAS list and secrets. The swap is one
    assignment on the event loop, so no datagram sees a half-built table; an invalid file
    keeps the old list."""
    log = get_logger("radiusd")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("reload_failed", error=str(exc))
        return
    running.server.nas_table = NasTable(config.nas)
    if running.authorization is not None:  # a new server key (after a rotation)
        running.authorization.secrets.set_cipher(server_cipher(config.security))
    if running.disconnector is not None:
        running.disconnector.set_nas(config.nas)
    log.info(
        "nas_reloaded", nas=len(config.nas), secrets_key=config.security.secrets_key is not None
    )


def toggle_trace(running: Running) -> None:
    """SIGUSR1 (and --trace at start): trace the target's Access-Requests, or stop."""
    handler = running.handler
    handler.trace = None if handler.trace is not None else running.tracer
    get_logger("radiusd").info(
        "trace_on" if handler.trace is not None else "trace_off",
        target=running.tracer.target or "every request",
    )


async def serve(
    config: Config,
    config_path: Path | None = None,
    *,
    metrics: Metrics | None = None,
    serve_http: bool = True,
    primary: bool = True,
    trace: str | None = None,
    notifier: Notifier | None = None,
) -> int:
    log = get_logger("radiusd")
    # A signal that arrives while we start is held, not fatal (the default action of SIGTERM
    # and SIGHUP is to kill), and acted on once the handlers are in place. A worker inherits
    # the mask from the supervisor, so this also covers its start-up.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    running = await start(config, metrics=metrics, serve_http=serve_http, primary=primary)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_nas, running, config_path)
    if trace:
        running.tracer.target = trace.strip()
        toggle_trace(running)
    loop.add_signal_handler(signal.SIGUSR1, toggle_trace, running)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    jobs = background_jobs(running, stop, config)
    notifier = notifier or Notifier.from_environ()
    notifier.ready(f"answering on {_bound(running.transports[0])}")
    watchdog = asyncio.create_task(notifier.watchdog())
    await stop.wait()
    notifier.stopping()
    log.info("stopping", in_flight=len(running.server.tasks))
    running.server.closing = True  # stop taking requests; replies still go out
    deadline = loop.time() + config.server.drain_seconds
    drained = await running.server.drain(config.server.drain_seconds)
    # flush what the group committer still holds, then end the background jobs: both
    # normally instant, they share what is left of the deadline, and at least a second
    deadline = max(deadline, loop.time() + 1.0)
    drained = await _within(running.committer.close(), deadline) and drained
    for transport in running.transports:
        transport.close()
    if running.http is not None:
        running.http.close()
    drained = await _within(asyncio.gather(*jobs), deadline) and drained
    running.metrics.flush()  # the last loop turn's counts
    watchdog.cancel()
    if not drained:
        # Work still stuck at the deadline (a database that does not answer) is given up,
        # unanswered (the switch retries it): waiting for the threads that hold it, as the
        # interpreter does at exit, would take as long as the database does.
        log.warning("stopped", drained=False, abandoned=len(running.server.tasks))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    running.executor.shutdown(wait=True)
    log.info("stopped", drained=True)
    return 0


async def _within(work: Awaitable[object], deadline: float) -> bool:
    """Await ``work`` until ``deadline`` (loop time); False (``work`` cancelled) if it ran out."""
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        await asyncio.wait_for(work, timeout)
    except TimeoutError:
        return False
    return True
