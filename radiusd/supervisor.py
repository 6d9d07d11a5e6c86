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
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path

from .app import HANDLED_SIGNALS, HEALTH_EVERY
from .config import Config, load_config
from .logging import configure, get_logger
from .loop import run
from .sdnotify import Notifier

RESTART_PAUSE = 1.0
CANNOT_START = 3  # a worker's exit code when it cannot bind its ports: restarting cannot help


def _stop_with_the_supervisor() -> None:
    """If the supervisor goes away, even killed with SIGKILL, the worker drains and stops as on
    SIGTERM instead of serving on as an orphan that holds the ports."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _worker(
    config_path: str | None, index: int, trace: str | None = None, ready: str | None = None
) -> None:
    _stop_with_the_supervisor()
    path = Path(config_path) if config_path else None
    config = load_config(path)
    configure(config.server.log_format, config.server.log_level)
    from .app import serve

    get_logger("radiusd").info("worker_started", worker=index, pid=os.getpid())
    try:
        # readiness for the supervisor's READY=1: a file (a multiprocessing Event would be
        # semaphores that a supervisor killed outright leaves behind)
        notifier = Notifier(on_ready=(lambda: Path(ready).touch()) if ready else None)
        code = run(
            serve(
                config,
                path,
                serve_http=False,
                primary=index == 0,
                trace=trace,
                notifier=notifier,
            )
        )
    except Exception as exc:  # noqa: BLE001 - as `radiusd serve` without workers: one line
        from .app import start_failure

        print(f"radiusd: {start_failure(exc)}", file=sys.stderr)
        raise SystemExit(CANNOT_START) from None
    raise SystemExit(code)


def run_workers(config: Config, config_path: Path | None, trace: str | None = None) -> int:
    # multiprocessing starts its resource tracker at the first spawn and then unblocks
    # SIGINT/SIGTERM in the caller: start it before the mask below is set
    resource_tracker.ensure_running()
    # the supervisor notifies systemd (READY once every worker answers); the workers do not
    notifier = Notifier.from_environ(take=True)
    # SIGTERM/SIGINT/SIGHUP are held until _supervise has its handlers (see app.serve)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    metrics_dir = tempfile.mkdtemp(prefix="radiusd-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return asyncio.run(_supervise(config, config_path, trace, notifier))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _supervise(
    config: Config,
    config_path: Path | None,
    trace: str | None = None,
    notifier: Notifier | None = None,
) -> int:
    from prometheus_client import CollectorRegistry, multiprocess

    from billing_core.adapters.redis_connect import redis_probe
    from billing_core.adapters.sql.db import make_engine
    from billing_core.adapters.sql.store import SqlStore

    from .app import _bound_server
    from .httpd import start_http
    from .metrics import Metrics

    log = get_logger("radiusd")
    context = multiprocessing.get_context("spawn")
    path_arg = str(config_path) if config_path else None

    def spawn(index: int) -> BaseProcess:
        """A worker starts with the signals blocked (the mask is inherited): one we forward
        while it starts is taken when its handlers are in place, instead of killing it."""
        process = context.Process(
            target=_worker, args=(path_arg, index, trace, str(ready[index])), daemon=False
        )
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return process

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    store = SqlStore(make_engine(config.database.url.reveal(), pool_size=1))
    redis_up = (
        redis_probe(config.redis.url.reveal(), config.redis.cluster)
        if config.redis.url.reveal()
        else None
    )
    own = Metrics(CollectorRegistry())  # the dependency gauge, written to the shared directory

    async def health() -> list[str]:
        loop = asyncio.get_running_loop()
        down = []
        if not await loop.run_in_executor(None, store.reachable):
            down.append("database")
        if redis_up is not None and not await loop.run_in_executor(None, redis_up):
            down.append("redis")
        for name in ("database", "redis"):
            own.up.labels(name).set(0 if name in down else 1)
        return down

    listen = config.server.metrics_listen
    http = await start_http(listen, registry, health)  # may fail: first
    ready_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / "ready"
    ready_dir.mkdir(exist_ok=True)
    ready = [ready_dir / f"worker-{i}" for i in range(config.server.workers)]
    workers = [spawn(i) for i in range(config.server.workers)]
    log.info("supervisor_started", workers=len(workers), metrics=_bound_server(http))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def forward(sig: signal.Signals) -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    for forwarded in (signal.SIGHUP, signal.SIGUSR1):  # reload; trace on/off
        loop.add_signal_handler(forwarded, forward, forwarded)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    notifier = notifier or Notifier()

    async def announce() -> None:
        """READY=1 once every worker answers."""
        while not all(path.exists() for path in ready):
            if stop.is_set():
                return
            await asyncio.sleep(0.1)
        notifier.ready(f"{len(workers)} workers answering")

    notified = [asyncio.create_task(announce()), asyncio.create_task(notifier.watchdog())]
    cannot_start = False
    probed = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        if stop.is_set():
            break
        if time.monotonic() - probed >= HEALTH_EVERY:  # radiusd_dependency_up, unasked
            probed = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(health(), HEALTH_EVERY)
        for index, process in enumerate(workers):
            if not process.is_alive():
                log.error("worker_died", worker=index, exitcode=process.exitcode)
                if process.exitcode == CANNOT_START:
                    cannot_start = True
                    stop.set()
                    break
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
                await asyncio.sleep(RESTART_PAUSE)
                workers[index] = spawn(index)
    notifier.stopping()
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
    for task in notified:
        task.cancel()
    log.info("stopped", exit_codes=codes)
    return 0 if not cannot_start and all(code == 0 for code in codes) else 1
