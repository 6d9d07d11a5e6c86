"""`[server] workers = N`: N worker processes on the same ports (SO_REUSEPORT).

A datagram goes to the worker its RADIUS Identifier picks (radiusd/steering.py; the
kernel's hash of the source address and port where that program cannot be attached), so a
switch's retransmissions reach the process whose duplicate cache knows them. The supervisor serves
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
from typing import TYPE_CHECKING

from billing_core.config import Config, load_config

from .httpd import HEALTH_EVERY, Health, health_probe, start_http
from .logging import configure, get_logger
from .loop import HANDLED_SIGNALS, bound_server, run
from .metrics import DependencyStates
from .sdnotify import Notifier

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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


class Workers:
    """The worker processes: started with the signals blocked, restarted when one dies,
    told of SIGHUP and SIGUSR1, stopped with SIGTERM within the drain bound."""

    def __init__(self, count: int, config_path: Path | None, trace: str | None) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._path = str(config_path) if config_path else None
        self._trace = trace
        # readiness for the supervisor's READY=1: a file per worker (a multiprocessing Event
        # would be semaphores that a supervisor killed outright leaves behind)
        ready_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / "ready"
        ready_dir.mkdir(exist_ok=True)
        self.ready = [ready_dir / f"worker-{i}" for i in range(count)]
        self.processes: list[BaseProcess] = []

    def start(self) -> None:
        self.processes = [self._spawn(i) for i in range(len(self.ready))]

    def _spawn(self, index: int) -> BaseProcess:
        """A worker starts with the signals blocked (the mask is inherited): one we forward
        while it starts is taken when its handlers are in place, instead of killing it."""
        process = self._context.Process(
            target=_worker,
            args=(self._path, index, self._trace, str(self.ready[index])),
            daemon=False,
        )
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return process

    def forward(self, sig: signal.Signals) -> None:
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    async def restart_dead(self) -> bool:
        """Start again each worker that died; False when one could not start (its ports:
        restarting cannot help)."""
        from prometheus_client import multiprocess

        log = get_logger("radiusd")
        for index, process in enumerate(self.processes):
            if process.is_alive():
                continue
            log.error("worker_died", worker=index, exitcode=process.exitcode)
            if process.exitcode == CANNOT_START:
                return False
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESTART_PAUSE)
            self.processes[index] = self._spawn(index)
        return True

    async def stop(self, drain_seconds: float) -> list[int | None]:
        """SIGTERM to each; one still running after the drain bound (and 10 s) is killed."""
        loop = asyncio.get_running_loop()
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + drain_seconds + 10
        codes = []
        for process in self.processes:
            await loop.run_in_executor(None, process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            codes.append(process.exitcode)
        return codes


def _dependency_probe(config: Config, registry: CollectorRegistry) -> Health:
    """/healthz and radiusd_dependency_up for every worker: the bootstrap's checks, on an
    engine and a Redis client of the supervisor's own, their states served from
    ``registry`` (the workers serve no HTTP and do not probe)."""
    from billing_core.bootstrap import health_checks

    states = DependencyStates()
    registry.register(states)
    return health_probe(health_checks(config), states.set)


async def _supervise(
    config: Config,
    config_path: Path | None,
    trace: str | None = None,
    notifier: Notifier | None = None,
) -> int:
    from prometheus_client import CollectorRegistry, multiprocess

    log = get_logger("radiusd")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # the probe is made once the workers are starting: it imports the billing side (half a
    # second), which the workers import too, each in its own process
    probe: list[Health] = []

    async def health() -> list[str]:
        return await probe[0]()

    http = await start_http(config.server.metrics_listen, registry, health)  # may fail: first
    workers = Workers(config.server.workers, config_path, trace)
    workers.start()
    probe.append(_dependency_probe(config, registry))
    log.info("supervisor_started", workers=len(workers.processes), metrics=bound_server(http))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for forwarded in (signal.SIGHUP, signal.SIGUSR1):  # reload; trace on/off
        loop.add_signal_handler(forwarded, workers.forward, forwarded)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    notifier = notifier or Notifier()
    notified = [
        asyncio.create_task(_announce(workers, stop, notifier)),
        asyncio.create_task(notifier.watchdog()),
    ]
    started = await _watch(workers, stop, health)
    notifier.stopping()
    log.info("stopping_workers", workers=len(workers.processes))
    codes = await workers.stop(config.server.drain_seconds)
    http.close()
    for task in notified:
        task.cancel()
    log.info("stopped", exit_codes=codes)
    return 0 if started and all(code == 0 for code in codes) else 1


async def _announce(workers: Workers, stop: asyncio.Event, notifier: Notifier) -> None:
    """READY=1 once every worker answers."""
    while not all(path.exists() for path in workers.ready):
        if stop.is_set():
            return
        await asyncio.sleep(0.1)
    notifier.ready(f"{len(workers.processes)} workers answering")


async def _watch(workers: Workers, stop: asyncio.Event, health: Health) -> bool:
    """Until ``stop``: probe the dependencies every HEALTH_EVERY seconds (unasked) and
    restart the workers that die. False when a worker could not start (then stop is set)."""
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
        if not await workers.restart_dead():
            stop.set()
            return False
    return True
