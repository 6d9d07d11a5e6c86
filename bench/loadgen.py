"""The load generator: asyncio, many source sockets, a fixed window, every reply checked.

Each source socket carries up to 256 *lanes*; a lane has one request outstanding at a time
and owns one RADIUS Identifier (its index), so no Identifier is ever reused while a request
is in flight and the number of sockets, not the 8-bit Identifier, bounds the window.
Lanes take *jobs* (one request, a Start+Stop pair, or a whole call), encoded before the run
(``scenarios``), from one shared queue; a step is stamped with the lane's Identifier as it
goes out (``packets.Stamper``) and waits for its reply before the next step is sent.

Two modes: closed loop (every lane sends its next request as soon as its reply arrived:
the throughput at that window) and paced (jobs start at a fixed rate: latency at a given
load). A run has a warm-up, then the measured window, then a drain that waits for the
replies still outstanding (or their timeout). Counts, latencies, the probes' CPU and memory
readings all belong to the window; timeouts and failed checks are counted over the whole
run. Only loopback addresses are accepted. A step names its destination by index into the
run's addresses, so one pool can spread its requests over several nodes; with
``LoadSpec.record`` every request's outcome is kept, for checking afterwards what the
servers recorded against what was sent (``bench.ledger``).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.packets import (
    BAD_AUTHENTICATOR,
    BAD_MESSAGE_AUTHENTICATOR,
    MALFORMED,
    NO_MESSAGE_AUTHENTICATOR,
    WRONG_IDENTIFIER,
    ReplyChecker,
    Stamper,
)

# (destination: an index into the run's addresses: 0 = authentication port, 1 = accounting
# port; with several nodes, node * 2 + port; datagram, kind)
Step = tuple[int, bytes, int]
Addresses = tuple[tuple[str, int], ...]
# (the job's index in the pool, the step's index in the job, the reply code or TIMED_OUT)
Answer = tuple[int, int, int]
TIMED_OUT = 0
Job = tuple[Step, ...]
Pool = list[Job]

FAILURE_NAMES = {
    BAD_AUTHENTICATOR: "bad_authenticator",
    BAD_MESSAGE_AUTHENTICATOR: "bad_message_authenticator",
    MALFORMED: "malformed",
    WRONG_IDENTIFIER: "wrong_identifier",
}
_TICK = 0.001
_SCAN = 0.05


class Probe(Protocol):
    """Readings taken at the edges of the measured window (``procstat.ProcessProbe``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class LoadSpec:
    duration: float = 4.0
    warmup: float = 0.5
    timeout: float = 2.0
    rate: float | None = None  # jobs per second (paced); None = closed loop
    sockets: int = 8
    lanes: int = 16  # per socket: the window is sockets x lanes
    record: bool = False  # keep every request's outcome (``Result.answers``)


@dataclass
class Result:
    window: float = 0.0
    requests: int = 0
    jobs: int = 0
    latencies: list[float] = field(default_factory=list)
    verified: int = 0
    timeouts: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    missing_message_authenticator: int = 0
    unexpected: int = 0
    outcomes: Counter[tuple[int, int]] = field(default_factory=Counter)
    late: int = 0
    stray: int = 0
    send_errors: int = 0
    unsent: int = 0
    exhausted: bool = False
    generator_cpu: float = 0.0
    # with ``LoadSpec.record``: every request sent in the whole run, answered or timed out
    answers: list[Answer] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.window if self.window > 0 else 0.0

    @property
    def job_rate(self) -> float:
        return self.jobs / self.window if self.window > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds (nearest rank); 0 with no samples."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)


class _Lane:
    __slots__ = ("auth", "ident", "index", "job", "kind", "late_auth", "sent_at", "step")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.job: Job | None = None
        self.index = 0
        self.step = 0
        self.sent_at = 0.0
        self.auth = b""
        self.kind = 0
        self.late_auth: bytes | None = None


def check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host}: the load generator only sends to loopback addresses")


class _Run:
    def __init__(
        self,
        pool: Pool,
        addresses: Addresses,
        checker: ReplyChecker,
        expect: dict[int, int],
        spec: LoadSpec,
        probes: Sequence[Probe],
    ) -> None:
        for host, _port in addresses:
            check_loopback(host)
        self.loop = asyncio.get_running_loop()
        self.addresses = addresses
        self.checker = checker
        self.result = Result()
        self.stamper = Stamper(checker.secret)
        self.jobs = enumerate(pool)
        self.answers = self.result.answers if spec.record else None
        self.expect = expect
        self.spec = spec
        self.probes = probes
        self.sockets: list[socket.socket] = []
        self.lanes: list[list[_Lane]] = []
        family = socket.AF_INET6 if ":" in addresses[0][0] else socket.AF_INET
        bind = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        if not 1 <= spec.lanes <= 256:
            raise ValueError("1 to 256 lanes per socket (one Identifier each)")
        for _ in range(spec.sockets):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((bind, 0))
            sock.setblocking(False)
            self.sockets.append(sock)
            self.lanes.append([_Lane(i) for i in range(spec.lanes)])
        self.measuring = False
        self.stopping = False
        self.in_flight = 0
        self.free: deque[tuple[int, _Lane]] = deque()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.window_start = 0.0
        self.cpu_start = 0.0
        self.started_jobs = 0
        self.pace_start = 0.0

    # --- sending ------------------------------------------------------------------------------
    def _send(self, s: int, lane: _Lane, now: float) -> None:
        assert lane.job is not None
        port, data, kind = lane.job[lane.step]
        data = self.stamper.stamp(data, lane.ident)
        lane.auth = data[4:20]
        lane.kind = kind
        lane.sent_at = now
        self.in_flight += 1
        try:
            self.sockets[s].sendto(data, self.addresses[port])
        except (BlockingIOError, InterruptedError):
            self.result.send_errors += 1  # stays in flight: it times out

    def _start_job(self, s: int, lane: _Lane, now: float) -> bool:
        item = next(self.jobs, None)
        if item is None:
            if not self.result.exhausted:
                self.result.exhausted = True
                if self.measuring:
                    self._end_window()
            return False
        lane.index, lane.job = item
        lane.step = 0
        self.started_jobs += 1
        self._send(s, lane, now)
        return True

    def _job_done(self, s: int, lane: _Lane, now: float) -> None:
        lane.job = None
        if self.stopping:
            return
        if self.spec.rate is None:
            self._start_job(s, lane, now)
        else:
            self.free.append((s, lane))

    def _pace(self) -> None:
        if self.stopping:
            return
        now = time.perf_counter()
        assert self.spec.rate is not None
        due = int((now - self.pace_start) * self.spec.rate) - self.started_jobs
        while due > 0:
            if not self.free:
                self.result.unsent += due
                self.started_jobs += due
                break
            s, lane = self.free.popleft()
            if self._start_job(s, lane, now):
                due -= 1
        self.loop.call_later(_TICK, self._pace)

    # --- receiving ----------------------------------------------------------------------------
    def _readable(self, s: int) -> None:
        sock = self.sockets[s]
        lanes = self.lanes[s]
        nlanes = len(lanes)
        check = self.checker.check
        result = self.result
        while True:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            now = time.perf_counter()
            ident = data[1] if len(data) > 1 else 256
            lane = lanes[ident] if ident < nlanes else None
            if lane is None or lane.job is None:
                result.stray += 1
                continue
            verdict = check(data, lane.auth, ident)
            if verdict < 0:
                if verdict == NO_MESSAGE_AUTHENTICATOR:
                    # the Response Authenticator was right: answered, without the MA
                    result.missing_message_authenticator += 1
                    verdict = data[0]
                else:
                    late = lane.late_auth
                    if late is not None and check(data, late, ident) >= 0:
                        result.late += 1
                        lane.late_auth = None
                    else:
                        result.failures[FAILURE_NAMES.get(verdict, str(verdict))] += 1
                    continue
            self.in_flight -= 1
            result.verified += 1
            if self.answers is not None:
                self.answers.append((lane.index, lane.step, verdict))
            if self.expect.get(lane.kind, verdict) != verdict:
                result.unexpected += 1
            if self.measuring:
                result.latencies.append(now - lane.sent_at)
                result.requests += 1
                result.outcomes[(lane.kind, verdict)] += 1
            lane.step += 1
            job = lane.job
            if lane.step < len(job) and not self.stopping:
                self._send(s, lane, now)
                continue
            if lane.step >= len(job) and self.measuring:
                result.jobs += 1
            self._job_done(s, lane, now)
            if self.stopping and self.in_flight == 0 and not self.done.done():
                self.done.set_result(None)

    # --- the clock ----------------------------------------------------------------------------
    def _scan(self) -> None:
        now = time.perf_counter()
        limit = now - self.spec.timeout
        for s, lanes in enumerate(self.lanes):
            for lane in lanes:
                if lane.job is not None and lane.sent_at < limit:
                    self.result.timeouts += 1
                    self.in_flight -= 1
                    if self.answers is not None:
                        self.answers.append((lane.index, lane.step, TIMED_OUT))
                    lane.late_auth = lane.auth
                    self._job_done(s, lane, now)
        if self.stopping and self.in_flight == 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.loop.call_later(_SCAN, self._scan)

    def _begin_window(self) -> None:
        if self.stopping:
            return
        for probe in self.probes:
            probe.start()
        self.measuring = True
        self.window_start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.loop.call_later(self.spec.duration, self._end_window)

    def _end_window(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.measuring:
            self.measuring = False
            self.result.window = time.perf_counter() - self.window_start
            cpu = time.process_time() - self.cpu_start
            self.result.generator_cpu = cpu / self.result.window if self.result.window else 0.0
            for probe in self.probes:
                probe.stop()
        if self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)

    async def run(self) -> Result:
        for s, sock in enumerate(self.sockets):
            self.loop.add_reader(sock.fileno(), self._readable, s)
        gc_was = gc.isenabled()
        gc.disable()
        try:
            now = time.perf_counter()
            if self.spec.rate is None:
                for s, lanes in enumerate(self.lanes):
                    for lane in lanes:
                        self._start_job(s, lane, now)
            else:
                self.free.extend((s, lane) for s, lanes in enumerate(self.lanes) for lane in lanes)
                self.pace_start = now
                self._pace()
            self.loop.call_later(self.spec.warmup, self._begin_window)
            self.loop.call_later(_SCAN, self._scan)
            await self.done
        finally:
            for sock in self.sockets:
                self.loop.remove_reader(sock.fileno())
                sock.close()
            if gc_was:
                gc.enable()
        return self.result


async def run(
    pool: Pool,
    addresses: Addresses,
    checker: ReplyChecker,
    expect: dict[int, int],
    spec: LoadSpec,
    probes: Sequence[Probe] = (),
) -> Result:
    """Drive ``pool`` at the server at ``addresses`` (auth, acct; then the next node's auth,
    acct, for pools whose steps name more than one node); stops by itself."""
    return await _Run(pool, addresses, checker, expect, spec, probes).run()
