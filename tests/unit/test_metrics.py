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


def _series(metrics: Metrics, prefix: str) -> list[str]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return [
        line for line in text.splitlines() if line.startswith(prefix) and "_created" not in line
    ]


def test_answered_requests_are_applied_at_the_turn_s_end_as_one_observe_each_would() -> None:
    import asyncio

    values = [0.0004, 0.0005, 0.002, 0.002, 0.3, 7.0, 0.01]
    direct = Metrics()
    for value in values:
        direct.child(direct.requests, "acct", "answered").inc()
        direct.child(direct.duration, "acct").observe(value)

    deferred = Metrics()

    async def turn() -> None:
        for value in values:
            deferred.answered("acct", "answered", value)
        # nothing written until the loop turn ends ...
        labels = {"type": "acct", "result": "answered"}
        assert deferred.registry.get_sample_value("radiusd_requests_total", labels) == 0
        await asyncio.sleep(0)  # ... then all of it, added up

    asyncio.run(turn())
    for prefix in ("radiusd_requests_total", "radiusd_request_duration_seconds"):
        assert _series(deferred, prefix) == _series(direct, prefix)
    outside = Metrics()
    outside.answered("auth", "accept", 0.001)  # no loop running: at once
    assert (
        outside.registry.get_sample_value(
            "radiusd_requests_total", {"type": "auth", "result": "accept"}
        )
        == 1
    )


def test_in_flight_is_read_when_scraped() -> None:
    metrics = Metrics()
    tasks = {1, 2, 3}
    metrics.track_in_flight(lambda: len(tasks))
    assert metrics.registry.get_sample_value("radiusd_in_flight") == 3
    tasks.clear()
    assert metrics.registry.get_sample_value("radiusd_in_flight") == 0
