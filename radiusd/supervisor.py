"""`[server] workers = N`: N worker processes on the same ports (SO_REUSEPORT).

The kernel hashes each NAS's source address and port onto one worker, so a switch's
retransmissions reach the process whose duplicate cache knows them. The supervisor serves
/metrics (prometheus-client's multiprocess mode: every worker writes its samples to a shared
directory, the supervisor adds them up) and /healthz, forwards SIGHUP, restarts a worker
that dies, and on SIGTERM/SIGINT stops them all and exits 0 when they drained cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from .config import Config, load_config
from .logging import configure, get_logger

RESTART_PAUSE = 1.0


def _worker(config_path: str | None, index: int) -> None:
    path = Path(config_path) if config_path else None
    config = load_config(path)
    configure(config.server.log_format, config.server.log_level)
    from .app import serve

    get_logger("radiusd").info("worker_started", worker=index, pid=os.getpid())
    raise SystemExit(asyncio.run(serve(config, path, serve_http=False, primary=index == 0)))


def run_workers(config: Config, config_path: Path | None) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="radiusd-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return asyncio.run(_supervise(config, config_path))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _supervise(config: Config, config_path: Path | None) -> int:
    from prometheus_client import CollectorRegistry, multiprocess

    from billing_core.adapters.db import make_engine
    from billing_core.adapters.redis_live import RedisLiveState
    from billing_core.adapters.sql_store import SqlStore

    from .app import _bound_server
    from .httpd import start_http
    from .metrics import Metrics

    log = get_logger("radiusd")
    context = multiprocessing.get_context("spawn")
    path_arg = str(config_path) if config_path else None

    def spawn(index: int) -> BaseProcess:
        process = context.Process(target=_worker, args=(path_arg, index), daemon=False)
        process.start()
        return process

    workers = [spawn(i) for i in range(config.server.workers)]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    store = SqlStore(make_engine(config.database.url.reveal(), pool_size=1))
    redis_live = (
        RedisLiveState.from_url(config.redis.url.reveal(), store.live_client)
        if config.redis.url.reveal()
        else None
    )
    own = Metrics(CollectorRegistry())  # the dependency gauge, written to the shared directory

    async def health() -> list[str]:
        loop = asyncio.get_running_loop()
        down = []
        if not await loop.run_in_executor(None, store.reachable):
            down.append("database")
        if redis_live is not None and not await loop.run_in_executor(None, redis_live.reachable):
            down.append("redis")
        for name in ("database", "redis"):
            own.up.labels(name).set(0 if name in down else 1)
        return down

    listen = config.server.metrics_listen
    http = await start_http(listen.host, listen.port, registry, health)
    log.info("supervisor_started", workers=len(workers), metrics=_bound_server(http))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def forward_hup() -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, forward_hup)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        if stop.is_set():
            break
        for index, process in enumerate(workers):
            if not process.is_alive():
                log.error("worker_died", worker=index, exitcode=process.exitcode)
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
                await asyncio.sleep(RESTART_PAUSE)
                workers[index] = spawn(index)
    log.info("stopping_workers", workers=len(workers))
    for process in workers:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + config.server.drain_seconds + 10
    codes = []
    for process in workers:
        await loop.run_in_executor(None, process.join, max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        codes.append(process.exitcode)
    http.close()
    log.info("stopped", exit_codes=codes)
    return 0 if all(code == 0 for code in codes) else 1
