"""The composition root: builds every part from the config, runs, drains, exits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from billing_core.accounting import AccountingService, AcctOutcome
from billing_core.adapters.db import make_engine
from billing_core.adapters.redis_live import ResyncingLive
from billing_core.adapters.sql_store import SqlStore
from billing_core.errors import UserError
from billing_core.ports import LiveState
from billing_core.services import AuthorizationService, CatalogCache
from billing_core.sessions import AccountingEvent

from .batching import GroupCommitter
from .codec import Codec, load_dictionary
from .config import Config, ListenAddress
from .handler import Handler
from .httpd import start_http
from .logging import get_logger
from .metrics import Metrics
from .transport import NasTable, RadiusProtocol, RadiusServer

DRAIN_SECONDS = 10.0


@dataclass
class Running:
    server: RadiusServer
    transports: list[asyncio.DatagramTransport]
    http: asyncio.Server
    executor: ThreadPoolExecutor
    catalog: CatalogCache
    metrics: Metrics
    committer: GroupCommitter[AccountingEvent, AcctOutcome]
    accounting: AccountingService
    redis_live: ResyncingLive | None


def _socket(listen: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((listen.host, listen.port))
    sock.setblocking(False)
    return sock


def refuse_unbuilt(config: Config) -> None:
    """Settings the config accepts but this version cannot honour yet: refuse, never ignore."""
    if config.server.workers != 1:
        raise UserError("server.workers: only 1 worker is supported in this version")


async def start(config: Config) -> Running:
    refuse_unbuilt(config)
    log = get_logger("radiusd")
    metrics = Metrics()
    engine = make_engine(config.database.url.reveal(), pool_size=config.database.pool_size)
    store = SqlStore(engine)
    sqlite = engine.dialect.name == "sqlite"
    executor = ThreadPoolExecutor(
        max_workers=1 if sqlite else config.database.pool_size, thread_name_prefix="db"
    )
    loop = asyncio.get_running_loop()
    catalog = await loop.run_in_executor(executor, CatalogCache, store)
    live: LiveState = store
    redis_live: ResyncingLive | None = None
    if config.redis.url.reveal():
        redis_live = ResyncingLive.from_url(
            config.redis.url.reveal(),
            store.live_client,
            clients=lambda: list(catalog.current.clients),
        )
        rebuilt = await loop.run_in_executor(executor, redis_live.rebuild)
        log.info("live_state_rebuilt", clients=rebuilt)
        live = redis_live
    authorization = AuthorizationService(
        lambda: catalog.current,
        live,
        max_call_length=config.billing.max_call_length,
        auth_hold_seconds=config.billing.auth_hold_seconds,
    )
    accounting = AccountingService(
        lambda: catalog.current,
        store,
        live,
        auth_hold_seconds=config.billing.auth_hold_seconds,
        max_acct_delay_seconds=config.billing.max_acct_delay_seconds,
        stale_grace_seconds=config.billing.stale_grace_seconds,
        max_call_length=config.billing.max_call_length,
    )
    committer: GroupCommitter[AccountingEvent, AcctOutcome] = GroupCommitter(
        accounting.record_many, executor
    )
    committer.start()
    codec = Codec(load_dictionary(config.server.dictionary))
    handler = Handler(codec, authorization, committer.submit, executor, metrics)
    server = RadiusServer(
        codec,
        NasTable(config.nas),
        handler.handle,
        metrics,
        max_in_flight=config.server.max_in_flight,
        duplicate_ttl=config.server.duplicate_cache_seconds,
        duplicate_size=config.server.duplicate_cache_size,
    )
    transports: list[asyncio.DatagramTransport] = []
    for listen, accounting_port in (
        (config.server.auth_listen, False),
        (config.server.acct_listen, True),
    ):
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda ap=accounting_port: RadiusProtocol(server, ap),  # type: ignore[misc]
            sock=_socket(listen),
        )
        transports.append(transport)

    async def health() -> list[str]:
        down: list[str] = []
        parts: list[tuple[str, Callable[[], bool]]] = [("database", store.reachable)]
        if redis_live is not None:
            parts.append(("redis", redis_live.reachable))
        for name, check in parts:
            ok = await loop.run_in_executor(None, check)
            metrics.up.labels(name).set(1 if ok else 0)
            if not ok:
                down.append(name)
        return down

    http = await start_http(
        config.server.metrics_listen.host,
        config.server.metrics_listen.port,
        metrics.registry,
        health,
    )
    log.info(
        "started",
        auth=_bound(transports[0]),
        acct=_bound(transports[1]),
        metrics=_bound_server(http),
        database=engine.dialect.name,
        live_state="redis" if redis_live is not None else "database",
        nas=len(config.nas),
        catalog_version=catalog.current.version,
    )
    return Running(
        server, transports, http, executor, catalog, metrics, committer, accounting, redis_live
    )


def _bound(transport: asyncio.DatagramTransport) -> str:
    host, port = transport.get_extra_info("sockname")[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_server(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


async def every(
    seconds: float, stop: asyncio.Event, job: Callable[[], Awaitable[None]], name: str
) -> None:
    """Run ``job`` every ``seconds`` until ``stop``; a failure is logged and retried later."""
    log = get_logger("radiusd")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
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
            log.info("catalog_reloaded", version=running.catalog.current.version)

    async def reap() -> None:
        closed = await loop.run_in_executor(
            running.executor, running.accounting.close_stale, datetime.now(UTC)
        )
        if closed:
            log.info("stale_calls_closed", calls=closed)

    async def resync() -> None:
        live = running.redis_live
        if live is not None and await loop.run_in_executor(None, live.resync):
            log.info("live_state_resynced")

    reap_every = max(0.2, min(30.0, config.billing.stale_grace_seconds / 4))
    return [
        asyncio.create_task(every(1.0, stop, refresh, "catalog_refresh")),
        asyncio.create_task(every(reap_every, stop, reap, "stale_reaper")),
        asyncio.create_task(every(1.0, stop, resync, "live_resync")),
    ]


async def serve(config: Config) -> int:
    log = get_logger("radiusd")
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    jobs = background_jobs(running, stop, config)
    await stop.wait()
    log.info("stopping", in_flight=len(running.server.tasks))
    for transport in running.transports:
        transport.pause_reading() if hasattr(transport, "pause_reading") else None
    drained = await running.server.drain(DRAIN_SECONDS)
    await running.committer.close()
    for transport in running.transports:
        transport.close()
    running.http.close()
    await asyncio.gather(*jobs)
    running.executor.shutdown(wait=True)
    log.info("stopped", drained=drained)
    return 0
