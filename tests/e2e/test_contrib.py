"""contrib/: the alert rules pass promtool, and every metric the dashboard, the rules and the
README's table name is one a running daemon serves on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Daemon

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "radiusd.json"
RULES = ROOT / "contrib" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "contrib" / "alerts_test.yml"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# series Prometheus makes itself (not served by the daemon)
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/run does)")
    return found


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def served_metrics(daemon: Daemon) -> dict[str, str]:
    """name -> type, from the # TYPE lines of /metrics (the *_created gauges left out)."""
    status, body = daemon.http("/metrics")
    assert status == 200
    types = dict(
        line.split()[2:4] for line in body.splitlines() if line.startswith("# TYPE radiusd_")
    )
    return {name: kind for name, kind in types.items() if not name.endswith("_created")}


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\b(radiusd_[a-z0-9_]+)", text))


def resolves(name: str, served: dict[str, str]) -> bool:
    if name in served:
        return True
    return any(
        name.endswith(suffix) and served.get(name.removesuffix(suffix)) == "histogram"
        for suffix in HISTOGRAM_SERIES
    )


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def test_every_metric_named_exists_in_a_running_daemon(daemon: Daemon) -> None:
    daemon.billingctl("db", "upgrade")
    daemon.start()
    # an accounting request (of an unknown caller: recorded and answered all the same)
    reply = daemon.radclient(
        "acct", {"Acct-Status-Type": "Start", "Acct-Session-Id": "m-1", "User-Name": "nobody"}
    )
    assert reply is not None and reply.code == "Accounting-Response"
    body = daemon.http("/metrics")[1]
    assert "radiusd_accounting_batch_size_count 1.0" in body
    assert "radiusd_accounting_commit_seconds_count 1.0" in body
    # the dependency gauge is fed without anyone asking /healthz
    deadline = time.monotonic() + 15
    while 'radiusd_dependency_up{dependency="database"} 1.0' not in body:
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
        body = daemon.http("/metrics")[1]
    served = served_metrics(daemon)
    assert daemon.stop() == 0

    exprs = dashboard_exprs()
    rules_text = RULES.read_text()
    named = referenced("\n".join(exprs)) | referenced(rules_text)
    missing = sorted(name for name in named if not resolves(name, served))
    assert missing == [], f"named but not served: {missing}"
    # what the issue asks the dashboard to show, by the metric that shows it
    board = "\n".join(exprs)
    for needed in (
        "radiusd_requests_total",
        "radiusd_rejects_total",
        "radiusd_request_duration_seconds_bucket",
        "radiusd_dropped_total",
        "radiusd_nas_dropped_total",
        "radiusd_active_calls",
        "radiusd_accounting_batch_size",
        "radiusd_accounting_commit_seconds",
        "radiusd_dependency_up",
        "radiusd_session_id_collisions_total",
    ):
        assert needed in board, needed
    # the rules' other series are Prometheus's own
    words = set(re.findall(r"\b([a-z_]+)\{", rules_text))
    assert words - {n for n in words if n.startswith("radiusd_")} <= PROMETHEUS_OWN

    # the README's metrics table lists exactly what /metrics serves, with its type
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `(radiusd_[a-z0-9_]+)` \| (\w+) \|", readme, re.MULTILINE))
    assert table == served


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """/metrics serves the same names on every backend: one is enough."""
    return str(request.getfixturevalue("sqlite_url")), ""
