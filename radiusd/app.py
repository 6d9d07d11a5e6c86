"""The daemon's lifecycle: start (the parts from ``billing_core.bootstrap``, the handler, the
sockets, HTTP), serve until a signal, drain within a bound, exit. Signals are held while
it starts; a stop that cannot drain in time gives up the stuck work and exits."""

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_core.bootstrap import (
    Components,
    build,
    dependency_down,
    open_catalog,
    open_database,
    server_cipher,
)
from billing_core.config import Config, ConfigError, ListenAddress, load_config
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.errors import UserError
from billing_core.services.accounting import AcctOutcome

from . import steering
from .batching import LanedCommitter
from .codec import DIALECT_DICTIONARIES, Codec, load_dictionary
from .disconnect import Disconnector
from .handler import Handler
from .httpd import HEALTH_EVERY, Health, health_probe, start_http
from .logging import get_logger
from .loop import HANDLED_SIGNALS, bound_server
from .metrics import Metrics
from .notify import EventCounter, MailJob
from .notify import Notifier as BalanceNotifier
from .sdnotify import Notifier
from .trace import Tracer
from .transport import NasTable, RadiusProtocol, RadiusServer


@dataclass
class Running:
    core: Components
    server: RadiusServer
    transports: list[asyncio.DatagramTransport]
    http: asyncio.Server | None
    metrics: Metrics
    committer: LanedCommitter[AccountingEvent, AcctOutcome]
    primary: bool
    handler: Handler
    tracer: Tracer
    health: Health
    notifier: BalanceNotifier
    events: EventCounter
    mailer: MailJob | None
    disconnector: Disconnector


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
    metrics = metrics or Metrics()
    core = await open_components(config)
    events = EventCounter(core.notifications, core.event_source, metrics)
    await _in_thread(core, events.run_once)  # from here on, ours are counted
    committer = start_committer(core, metrics, linger_ms=config.server.accounting_linger_ms)
    codec, codecs = load_codecs(config)
    handler = Handler(codec, core.authorization.authorize, committer.submit, metrics, codecs=codecs)
    notifier = BalanceNotifier(core.notifications, core.live, mail_enabled=core.outbox is not None)
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
    await check_live_state(core, metrics)
    transports = await bind_radius(config, server)
    health = health_probe(core.health_checks, metrics.dependency_up)
    http = None
    if serve_http:
        http = await start_http(config.server.metrics_listen, metrics.registry, health)
    log_started(config, core, transports, http)
    return Running(
        core,
        server,
        transports,
        http,
        metrics,
        committer,
        primary,
        handler,
        Tracer(None, core.authorization, core.peek, core.database.executor),
        health,
        notifier,
        events,
        MailJob(core.outbox) if core.outbox is not None else None,
        Disconnector(
            core.disconnects, config.nas, metrics, grace_seconds=config.billing.stale_grace_seconds
        ),
    )


async def open_components(config: Config) -> Components:
    """The billing side's parts (``billing_core.bootstrap``); the schema check and the first
    catalog load run in a database thread."""
    log = get_logger("radiusd")
    database = open_database(config)
    loop = asyncio.get_running_loop()
    catalog = await loop.run_in_executor(database.executor, open_catalog, database)
    gc.freeze()  # the catalog lives long: the collector need not walk its objects again
    return build(
        config,
        database,
        catalog,
        on_secret_unusable=lambda account, problem: log.error(
            "account_secret_unusable", account=account.name, problem=problem
        ),
    )


async def _in_thread(core: Components, work: Callable[..., Any], *args: Any) -> Any:
    """``work`` in a database thread."""
    return await asyncio.get_running_loop().run_in_executor(core.database.executor, work, *args)


async def check_live_state(core: Components, metrics: Metrics) -> None:
    """Before the first answer: every client whose Redis state is behind the sequence the
    database marked applied (a Redis restored from an older snapshot) is reloaded, so that
    no request is decided on it. Missing clients are left to load on first use, lagging
    ones to the healer. A Redis that does not answer is left to the periodic sweep (the
    daemon starts: accounting goes on without Redis)."""
    live = core.redis_live
    if live is None:
        return
    try:
        reloaded = await _in_thread(core, functools.partial(live.sweep, claim=False))
    except Exception as exc:  # noqa: BLE001 - the start goes on; the sweep retries
        get_logger("radiusd").warning("live_check_failed", error=f"{type(exc).__name__}: {exc}")
        return
    if reloaded:  # counted as the sweep's are; each such client delays the start by a load
        metrics.live_healed.inc(reloaded)
        get_logger("radiusd").info("live_state_swept", clients=reloaded, at="start")


def start_committer(
    core: Components, metrics: Metrics, *, linger_ms: float = 0.0
) -> LanedCommitter[AccountingEvent, AcctOutcome]:
    """The group committer of accounting: a request is answered once its batch committed;
    under load a batch waits up to ``linger_ms`` for more (``server.accounting_linger_ms``)."""
    committer: LanedCommitter[AccountingEvent, AcctOutcome] = LanedCommitter(
        timed_batches(core.record_batch, metrics),
        core.database.executor,
        call_lane,
        lanes=accounting_lanes(sqlite=core.database.sqlite, redis=core.redis_live is not None),
        linger=linger_ms / 1000,
    )
    committer.start()
    return committer


def load_codecs(config: Config) -> tuple[Codec, dict[str, Codec]]:
    """The codec of ``[server] dictionary`` (cisco's packaged one by default) and those of
    the other dialects' packaged dictionaries (all of them, so that a SIGHUP may bring a NAS
    of any dialect)."""
    codec = Codec(load_dictionary(config.server.dictionary))
    codecs = {
        dialect: Codec(load_dictionary(dialect=dialect))
        for dialect in DIALECT_DICTIONARIES
        if dialect != "cisco"
    }
    return codec, codecs


async def bind_radius(config: Config, server: RadiusServer) -> list[asyncio.DatagramTransport]:
    """The authentication port's transport, then the accounting port's."""
    loop = asyncio.get_running_loop()
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
    return transports


def log_started(
    config: Config,
    core: Components,
    transports: list[asyncio.DatagramTransport],
    http: asyncio.Server | None,
) -> None:
    get_logger("radiusd").info(
        "started",
        auth=_bound(transports[0]),
        acct=_bound(transports[1]),
        metrics=bound_server(http) if http else "supervisor",
        database=core.engine.dialect.name,
        live_state="redis" if core.redis_live is not None else "database",
        nas=len(config.nas),
        catalog_version=core.catalog.current.version,
        secrets_key=config.security.secrets_key is not None,
    )


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


def accounting_lanes(*, sqlite: bool, redis: bool) -> int:
    """Group committers side by side. SQLite has one writer. On PostgreSQL alone two lanes
    overlap one batch's commit with the next batch; with Redis one lane does more (measured:
    its batches are twice as large, and server and PostgreSQL CPU per request about half)."""
    return 1 if sqlite or redis else 2


def call_lane(event: AccountingEvent) -> str:
    """Requests of one call share a lane: the legs of a call share its h323-conf-id, else
    its Acct-Session-Id (Sippy); Accounting-On/Off of a NAS key go by the NAS key."""
    return f"{event.nas_key}|{event.conf_id or event.acct_session_id}"


def start_failure(exc: BaseException) -> str:
    """One line saying why the daemon could not start (never a traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    down = dependency_down(exc)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    if down is not None:
        return f"cannot start: {down} unreachable: {first}"
    if isinstance(exc, OSError):  # a port taken, an address not ours
        return f"cannot start: {exc}"
    return f"cannot start: {type(exc).__name__}: {first}"


def _bound(transport: asyncio.DatagramTransport) -> str:
    host, port = transport.get_extra_info("sockname")[:2]
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


Job = Callable[[], Awaitable[None]]


def background_jobs(
    running: Running, stop: asyncio.Event, config: Config
) -> list[asyncio.Task[None]]:
    """The jobs of ``job_schedule``, each on its own task until ``stop``."""
    return [
        asyncio.create_task(every(seconds, stop, job, name, at_start=at_start))
        for seconds, job, name, at_start in job_schedule(running, config)
    ]


def job_schedule(running: Running, config: Config) -> list[tuple[float, Job, str, bool]]:
    """(every how many seconds, job, name, also at start). Only the primary worker heals
    and sweeps the Redis live state, reaps stale calls, counts active calls, sends mail and
    disconnects; with workers, the supervisor probes the dependencies."""
    core = running.core
    schedule: list[tuple[float, Job, str, bool]] = [
        (1.0, catalog_refresh(core), "catalog_refresh", False)
    ]
    live = core.redis_live
    if running.primary and live is not None:
        schedule += [
            (1.0, repairing(running, live.heal, "live_state_healed"), "live_heal", False),
            (SWEEP_SECONDS, repairing(running, live.sweep, "live_state_swept"), "live_sweep", True),
        ]
    if running.http is not None:

        async def probe_health() -> None:
            await running.health()  # radiusd_dependency_up, also when nobody asks /healthz

        schedule.append((HEALTH_EVERY, probe_health, "health_probe", False))
    schedule += [
        (1.0, running.notifier.job, "notifier", False),
        (1.0, running.events.job, "events_count", False),
    ]
    if running.primary:
        chores = Chores(core)
        reap_every = max(0.2, min(30.0, config.billing.stale_grace_seconds / 4))
        schedule += [
            (2.0, active_calls(running), "active_calls", False),
            (1.0, chores.renew, "chores_lease", False),
            (reap_every, chores.only(stale_reaper(core)), "stale_reaper", False),
        ]
        if running.mailer is not None:
            schedule.append((1.0, chores.only(running.mailer.job), "mail_queue", False))
        schedule.append((1.0, chores.only(running.disconnector.job), "disconnects", False))
    return schedule


class Chores:
    """The deployment's chores (closing stale calls, Disconnect-Requests, the mail queue)
    are done by one node at a time when the nodes share a Redis: the holder of a lease it
    renews every second; another node takes over within the lease's 3 s when it stops or
    loses Redis. Each chore is safe on several nodes at once (its rows are claimed in the
    database), so without Redis every node does them; the lease only saves the work of the
    others, which grows with the number of nodes. A node that cannot reach Redis does them
    too: a Redis outage must not stop calls being closed or cut."""

    def __init__(self, core: Components) -> None:
        self._core = core
        self.held = core.chores_lease is None

    async def renew(self) -> None:
        lease = self._core.chores_lease
        if lease is not None:
            held = await _in_thread(self._core, lease)
            self.held = held is not False

    def only(self, chore: Job) -> Job:
        async def job() -> None:
            if self.held:
                await chore()

        return job


def catalog_refresh(core: Components) -> Job:
    async def refresh() -> None:
        if await _in_thread(core, core.catalog.refresh):
            gc.freeze()  # the old catalog is freed by reference counting (it has no cycles)
            get_logger("radiusd").info("catalog_reloaded", version=core.catalog.current.version)

    return refresh


def stale_reaper(core: Components) -> Job:
    async def reap() -> None:
        closed = await _in_thread(core, core.accounting.close_stale, datetime.now(UTC))
        if closed:
            get_logger("radiusd").info("stale_calls_closed", calls=closed)

    return reap


def active_calls(running: Running) -> Job:
    async def count_active() -> None:
        core = running.core
        running.metrics.active_calls.set(await _in_thread(core, core.store.count_active_calls))

    return count_active


def repairing(running: Running, work: Callable[[], int], event: str) -> Job:
    """A job that runs ``work`` (heal or sweep: clients reloaded) in a database thread;
    the stale gauge says whether some client's effects are still missing from Redis."""
    core, metrics = running.core, running.metrics

    async def job() -> None:
        healed = await _in_thread(core, work)
        if healed:
            metrics.live_healed.inc(healed)
            get_logger("radiusd").info(event, clients=healed)
            detail = {"clients": healed, "by": event}
            await _in_thread(core, lambda: core.record_event("live_healed", detail=detail))
        if core.redis_live is not None:
            metrics.live_stale.set(1 if core.redis_live.lagging else 0)

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
    # a new server key (after a rotation)
    running.core.authorization.secrets.set_cipher(server_cipher(config.security))
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
    running.core.database.executor.shutdown(wait=True)
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
