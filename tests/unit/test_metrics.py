"""Metrics.child: the labelled child kept across requests is the series labels() gives."""

from __future__ import annotations

from radiusd.metrics import Metrics


def test_a_kept_child_counts_in_the_labelled_series_and_appears_on_first_use() -> None:
    metrics = Metrics()
    registry = metrics.registry
    labels = {"type": "auth", "result": "accept"}
    assert registry.get_sample_value("radiusd_requests_total", labels) is None
    metrics.child(metrics.requests, "auth", "accept").inc()
    metrics.child(metrics.requests, "auth", "accept").inc()
    metrics.requests.labels("auth", "accept").inc()
    assert registry.get_sample_value("radiusd_requests_total", labels) == 3
    assert metrics.child(metrics.requests, "auth", "accept") is metrics.requests.labels(
        "auth", "accept"
    )
    other = {"type": "auth", "result": "reject"}
    assert registry.get_sample_value("radiusd_requests_total", other) is None
    metrics.child(metrics.duration, "auth").observe(0.002)
    assert (
        registry.get_sample_value(
            "radiusd_request_duration_seconds_bucket", {"type": "auth", "le": "0.0025"}
        )
        == 1
    )
