"""Prometheus collectors, built against a registry passed in (a fresh one per test).

The updates every answered request makes (its count, its duration, the in-flight gauge) are
applied once per turn of the event loop, added up: with several workers each update is a
write to a shared memory-mapped file under a lock, and five of them per request cost about
5% of an Access-Request's CPU. A scrape sees them as soon as the turn that answered the
request ends. The rarer updates (drops, rejects, errors) are applied at once.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

DEPENDENCY_UP = ("radiusd_dependency_up", "1 when a dependency is reachable")


class Metrics:
    """Every collector of the daemon, registered in one order (the order /metrics lists
    them in): the requests, then the state, then the rarer events."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._requests(self.registry)
        self._state(self.registry)
        self._counts: dict[Any, int] = {}
        self._observed: dict[Any, list[float]] = {}
        self._in_flight: Callable[[], int] | None = None
        self._in_flight_written = -1
        self._scheduled: asyncio.AbstractEventLoop | None = None  # a flush() is due on it
        self._events(self.registry)

    def _requests(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "radiusd_requests_total",
            "RADIUS requests answered or dropped, by type and result",
            ["type", "result"],
            registry=r,
        )
        self.rejects = Counter(
            "radiusd_rejects_total", "Business rejections, by reason", ["reason"], registry=r
        )
        self.dropped = Counter(
            "radiusd_dropped_total",
            "Datagrams dropped without a reply, by reason",
            ["reason"],
            registry=r,
        )
        self.duration = Histogram(
            "radiusd_request_duration_seconds",
            "Time from receipt to reply",
            ["type"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )

    def _state(self, r: CollectorRegistry) -> None:
        self.active_calls = Gauge(
            "radiusd_active_calls",
            "Calls in state active in the whole deployment (from the shared database: every"
            " node reports the same value; aggregate nodes with max(), never sum())",
            registry=r,
            multiprocess_mode="max",
        )
        self.live_healed = Counter(
            "radiusd_live_healed_total",
            "Clients whose live state in Redis this node reloaded from the database because"
            " effects of committed ledger writes had not reached it",
            registry=r,
        )
        self.collisions = Counter(
            "radiusd_session_id_collisions_total",
            "Stops with a known leg identity but a different duration",
            registry=r,
        )
        self.in_flight = Gauge(
            "radiusd_in_flight",
            "Requests being processed",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.up = Gauge(
            *DEPENDENCY_UP,
            ["dependency"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.batch_size = Histogram(
            "radiusd_accounting_batch_size",
            "Accounting requests committed together in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "radiusd_accounting_commit_seconds",
            "Time to record one accounting batch, its transaction's commit included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.live_stale = Gauge(
            "radiusd_live_state_stale",
            "1 while some client's committed effects are still missing from Redis after the"
            " heal's grace (being reloaded from the database)",
            registry=r,
            multiprocess_mode="max",
        )

    def _events(self, r: CollectorRegistry) -> None:
        self.auth_failures = Counter(
            "radiusd_auth_failures_total",
            "Login credentials refused (code 2), by method (pap, chap, digest, none) and reason"
            " (missing, not_allowed, wrong, unusable, locked_out)",
            ["method", "reason"],
            registry=r,
        )
        self.events = Counter(
            "radiusd_events_total",
            "Entries this process wrote to the events log, by kind",
            ["kind"],
            registry=r,
        )
        self.disconnects = Counter(
            "radiusd_disconnects_total",
            "Disconnect-Requests (RFC 5176) sent, by answer: ack, nak, timeout",
            ["result"],
            registry=r,
        )
        self.nas_dropped = Counter(
            "radiusd_nas_dropped_total",
            "Datagrams dropped, by configured NAS and reason",
            ["nas", "reason"],
            registry=r,
        )
        self.attribute_errors = Counter(
            "radiusd_attribute_errors_total",
            "Attributes whose value did not fit their dictionary type (kept raw, ignored), "
            "by configured NAS and attribute name",
            ["nas", "attribute"],
            registry=r,
        )

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept for the next request: labels() checks its
        arguments and takes a lock on every call. A child is created on its first use, so
        /metrics shows a series only once something was counted in it."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    # --- per request, applied once per loop turn --------------------------------------------
    def dependency_up(self, name: str, ok: bool) -> None:
        self.up.labels(name).set(1 if ok else 0)

    def answered(self, kind: str, result: str, seconds: float) -> None:
        """A request answered (radiusd_requests_total) in ``seconds`` (the duration)."""
        counted = self.child(self.requests, kind, result)
        self._counts[counted] = self._counts.get(counted, 0) + 1
        timed = self.child(self.duration, kind)
        observed = self._observed.get(timed)
        if observed is None:
            self._observed[timed] = [seconds]
        else:
            observed.append(seconds)
        self.changed()

    def batch(self, size: int, seconds: float) -> None:
        """An accounting batch recorded (called from a database thread, once per batch)."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """radiusd_in_flight is ``count()``: read at every scrape in one process, written at
        the end of each loop turn that changed it with several (a scrape there reads the
        workers' files)."""
        self._in_flight = count
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.in_flight.set_function(lambda: float(count()))
        self.flush()

    def changed(self) -> None:
        """Something to apply at the end of this loop turn (at once outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled is not loop:  # (a loop that closed with a flush due is forgotten)
            self._scheduled = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = None
        counts, self._counts = self._counts, {}
        for child, count in counts.items():
            child.inc(count)
        observed, self._observed = self._observed, {}
        for child, values in observed.items():
            _observe_all(child, values)
        if self._in_flight is not None:
            now = self._in_flight()
            if now != self._in_flight_written:
                self._in_flight_written = now
                self.in_flight.set(now)


def _observe_all(child: Any, values: list[float]) -> None:
    """``child.observe(v)`` for each value, as one write to the sum and one per bucket hit
    (prometheus-client's Histogram keeps them in ``_sum`` and ``_buckets``; a version
    without them gets one observe() per value)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            child.observe(value)
        return
    hits: dict[int, int] = {}
    for value in values:
        index = bisect.bisect_left(bounds, value)  # the first bucket whose bound >= value
        hits[index] = hits.get(index, 0) + 1
    total.inc(sum(values))
    for index, count in hits.items():
        buckets[index].inc(count)


class DependencyStates(Collector):
    """``radiusd_dependency_up`` as the workers' supervisor serves it: its own probe's last
    results, read at each scrape. (A gauge of the supervisor's would not reach /metrics:
    prometheus-client chose in-process values when the supervisor imported it, before the
    multiprocess directory existed, and /metrics serves only the workers' files.)"""

    def __init__(self) -> None:
        self._states: dict[str, bool] = {}

    def set(self, name: str, ok: bool) -> None:
        self._states[name] = ok

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(*DEPENDENCY_UP, labels=["dependency"])
        for name, ok in sorted(self._states.items()):
            family.add_metric([name], 1.0 if ok else 0.0)
        yield family
