"""What one run measured: per target and scenario, the extras, the machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.ledger import LedgerCheck
from bench.loadgen import Result
from bench.procstat import Reading
from bench.profiling import Profile


@dataclass
class Measurement:
    target: str
    scenario: str
    result: Result
    reading: Reading

    def cpu(self, group: str) -> float | None:
        return self.reading.cpu.get(group)

    def cpu_per_1000(self, group: str | None = None) -> float | None:
        """CPU seconds per 1,000 requests: of one group, or of all groups together."""
        if self.result.requests == 0:
            return None
        if group is None:
            total = sum(self.reading.cpu.values())
        else:
            value = self.reading.cpu.get(group)
            if value is None:
                return None
            total = value
        return total / self.result.requests * 1000

    @property
    def peak_rss_mb(self) -> float | None:
        kb = self.reading.peak_rss_kb
        return kb / 1024 if kb is not None else None


@dataclass
class TargetInfo:
    name: str
    label: str
    started: bool
    error: str | None = None
    # ours: a restart's launch to its first correct Access-Accept, Redis empty (the lazy
    # path); others: the launch to ready, a Redis rebuild before it excluded
    start_seconds: float | None = None
    # ours: the first start on the loaded database (as billingctl load left it), as above
    first_start_seconds: float | None = None
    rebuild_seconds: float | None = None  # billingctl live rebuild (ours: after the start)
    load_seconds: float | None = None
    load_cached: bool | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class IndexBuild:
    seconds: float
    index_seconds: float
    rates: int
    tables: int
    extra_rss_mb: float
    peak_extra_mb: float
    snapshot_seconds: float | None = None  # the same catalog from the rate index snapshots


@dataclass
class LatencyCompare:
    rate: float  # requests/s offered to both
    big: Result
    small: Result


def pooled(results: list[Result]) -> Result:
    """Runs of one measurement taken as one: their latencies together (percentiles over
    all of them), their counts added up."""
    out = Result()
    for r in results:
        out.window += r.window
        out.requests += r.requests
        out.jobs += r.jobs
        out.latencies += r.latencies
        out.verified += r.verified
        out.timeouts += r.timeouts
        out.failures += r.failures
        out.unexpected += r.unexpected
        out.unsent += r.unsent
    return out


@dataclass
class NodesRun:
    """One deployment of the two-node scenario: one node or two, on one kind of Redis."""

    variant: str  # "redis" (one server) or "cluster" (Redis Cluster)
    nodes: int
    workers: int  # per node
    round: int
    measurement: Measurement | None = None
    check: LedgerCheck | None = None
    error: str | None = None
    running_at_end: bool = True


REDIS_VARIANTS = {"redis": "one Redis server", "cluster": "Redis Cluster (3 masters)"}


@dataclass
class Run:
    started: str
    parameters: dict[str, Any]
    machine: dict[str, str]
    data: dict[str, str]
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    production: str | None = None  # the target the targets are judged on
    half_load: Measurement | None = None
    half_load_rate: float | None = None
    half_load_quiet: tuple[float, float] | None = None  # (seconds waited, busy share)
    half_load_embedded: Measurement | None = None  # issue 18: the embedded default's
    half_load_embedded_rate: float | None = None
    latency: LatencyCompare | None = None
    latency_embedded: LatencyCompare | None = None  # the same on ours-sqlite (issue 19)
    index_build: IndexBuild | None = None
    index_error: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    profile_runs: dict[str, Measurement] = field(default_factory=dict)
    profile_error: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    two_node: list[NodesRun] = field(default_factory=list)
    two_node_skipped: dict[str, str] = field(default_factory=dict)  # variant: why not run
    two_node_data: str = ""
    # issue 14: each credential method at one offered rate, in rounds (batching alike)
    methods: list[Measurement] = field(default_factory=list)
    methods_rate: float | None = None
    # issue 18: the CPU targets' scenarios measured again, rounds 2.. (round 1 is
    # ``measurements``), each round with new calls and the targets in turn
    cpu_rounds: list[list[Measurement]] = field(default_factory=list)

    def get(self, target: str, scenario: str) -> Measurement | None:
        return _find(self.measurements, target, scenario)

    def rounds(self, target: str, scenario: str) -> list[Measurement | None]:
        """``target``'s measurement of ``scenario`` in each round of the CPU targets (round
        1 first; None where a round did not measure it)."""
        return [self.get(target, scenario)] + [
            _find(extra, target, scenario) for extra in self.cpu_rounds
        ]


def _find(measurements: list[Measurement], target: str, scenario: str) -> Measurement | None:
    for m in measurements:
        if m.target == target and m.scenario == scenario:
            return m
    return None
