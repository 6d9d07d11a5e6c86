"""Prometheus collectors, built against a registry passed in (a fresh one per test)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
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
        self.active_calls = Gauge(
            "radiusd_active_calls", "Calls in state active", registry=r, multiprocess_mode="max"
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
            "radiusd_dependency_up",
            "1 when a dependency is reachable",
            ["dependency"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.nas_dropped = Counter(
            "radiusd_nas_dropped_total",
            "Datagrams dropped, by configured NAS and reason",
            ["nas", "reason"],
            registry=r,
        )

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept for the next request: labels() checks its
        arguments and takes a lock on every call. A child is still created on first use
        only, so /metrics shows the same series as before."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
