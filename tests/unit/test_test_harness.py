"""The test harness's own rules."""

from __future__ import annotations

import pytest

from tests.conftest import worker_database


def test_each_xdist_worker_flushes_a_database_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_database("redis://h:6379/8") == "redis://h:6379/8"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert worker_database("redis://h:6379/8") == "redis://h:6379/8"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert worker_database("redis://:pw@h:6379/8") == "redis://:pw@h:6379/11"
    assert worker_database("redis://h:6379") == "redis://h:6379/3"
