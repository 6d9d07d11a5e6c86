"""The per-request line written without structlog's chain is the line the chain writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from radiusd import logging as rlog

FIELDS: dict[str, Any] = {
    "code": "Access-Request",
    "nas": "gw|10.0.0.1",
    "user": "acme \u00e9\u4e2d",
    "called": "15550001111",
    "session_id": None,
    "outcome": "reject",
    "reason": "no_rate",
    "grant": None,
    "client": "Acme",
    "elapsed": 1.2e-05,
    "odd": object(),  # not JSON: repr(), as JSONRenderer's fallback does
}


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What was written to stderr so far (configure() binds the sys.stderr of the test)."""
    yield lambda: capsys.readouterr().err
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    rlog._Output.json_requests = None


def without_time(text: str) -> str:
    record = json.loads(text)
    assert record.pop("timestamp").endswith("Z")
    return json.dumps(record)


def test_the_fast_line_is_the_structlog_line(stderr: Callable[[], str]) -> None:
    rlog.configure("json", "info")
    rlog.request_logger().info("radius_request", **FIELDS)
    structlog.get_logger("radiusd.request").info("radius_request", **FIELDS)
    fast, chain = stderr().splitlines()
    # the same keys in the same order, the same values (strings, floats, null, the repr()
    # of what JSON cannot hold) but the time; the text is orjson's: compact, UTF-8
    assert without_time(fast) == without_time(chain)
    assert list(json.loads(fast)) == [*FIELDS, "event", "level", "timestamp"]
    assert fast.startswith(
        '{"code":"Access-Request","nas":"gw|10.0.0.1","user":"acme \u00e9\u4e2d",'
    )


def test_what_orjson_refuses_is_written_by_the_standard_encoder(
    stderr: Callable[[], str],
) -> None:
    """An integer past 64 bits, which orjson refuses, is written by the standard encoder
    rather than lost."""
    rlog.configure("json", "info")
    rlog.request_logger().info("radius_request", user="acme \u00e9", grant=2**70)
    assert json.loads(stderr())["grant"] == 2**70


def test_below_the_configured_level_nothing_is_written(stderr: Callable[[], str]) -> None:
    rlog.configure("json", "warning")
    rlog.request_logger().info("radius_request", code="Access-Request")
    assert stderr() == ""


def test_console_format_goes_through_structlog(stderr: Callable[[], str]) -> None:
    rlog.configure("console", "info")
    rlog.request_logger().info("radius_request", code="Access-Request")
    text = stderr()
    assert "radius_request" in text
    assert not text.startswith("{")


def test_bound_context_goes_through_structlog(stderr: Callable[[], str]) -> None:
    rlog.configure("json", "info")
    structlog.contextvars.bind_contextvars(worker=3)
    rlog.request_logger().info("radius_request", code="Access-Request")
    assert json.loads(stderr())["worker"] == 3


class _Writes:
    """A stderr that records each write() call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_line_is_one_write_with_its_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers of one daemon share stderr: a line written in two parts (print() writes
    the newline apart) can have another worker's line between them, and two JSON lines
    then run together (seen under load)."""
    out = _Writes()
    monkeypatch.setattr("sys.stderr", out)
    try:
        rlog.configure("json", "info")
        rlog.request_logger().info("radius_request", code="Access-Request")
        rlog.get_logger().warning("dropped", reason="malformed")
    finally:
        structlog.reset_defaults()
        rlog._Output.json_requests = None
    assert len(out.calls) == 2
    for call in out.calls:
        assert call.endswith("\n") and call.count("\n") == 1
        json.loads(call)
