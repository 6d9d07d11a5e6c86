"""Long console commands show progress on a terminal (a real pty) and nothing in scripts."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from billingctl.progress import Progress, for_terminal

from .billingctl_support import generate_rates, rates_csv

BILLINGCTL = str(Path(sys.executable).parent / "billingctl")

PROVISIONING = """
rate_tables:
  - {name: retail, currency: USD, rates: [{code: "1", rate: "0.01", effective_date: "2026-01-01"}]}
clients:
  - {name: Acme, rate_table: retail, payments: [{id: p1, amount: "1.00"}]}
  - {name: Beta, rate_table: retail}
"""


@pytest.fixture
def workdir(tmp_path: Path, sqlite_url: str) -> Path:
    (tmp_path / "radiusd.toml").write_text(f'[database]\nurl = "{sqlite_url}"\n')
    (tmp_path / "r.csv").write_text(rates_csv(generate_rates(3000)))
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    return tmp_path


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RADIUSD_")}


def run_quiet(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BILLINGCTL, "--config", "radiusd.toml", *args],
        cwd=workdir,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_on_terminal(workdir: Path, *args: str) -> tuple[int, str, str]:
    """stderr on a pseudo-terminal, stdout on a pipe: (exit code, stdout, the terminal)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [BILLINGCTL, "--config", "radiusd.toml", *args],
        cwd=workdir,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert process.stdout is not None
    out = process.stdout.read().decode()
    process.stdout.close()
    return process.wait(timeout=60), out, screen.decode()


def test_quiet_when_stderr_is_not_a_terminal(workdir: Path) -> None:
    assert run_quiet(workdir, "db", "upgrade").returncode == 0
    loaded = run_quiet(workdir, "load", "p.yaml")
    assert (loaded.returncode, loaded.stderr) == (0, "")
    imported = run_quiet(workdir, "rates", "import", "retail", "r.csv")
    assert (imported.returncode, imported.stderr) == (0, "")
    assert imported.stdout.startswith("retail: 3000 rates from r.csv")


def test_progress_on_a_terminal(workdir: Path) -> None:
    assert run_quiet(workdir, "db", "upgrade").returncode == 0
    # a bad row after the progress was drawn: the error line starts on a clean line
    rows = generate_rates(3000)
    rows[2500] = (*rows[2500][:5], 0, *rows[2500][6:])  # interval 0
    (workdir / "bad.csv").write_text(rates_csv(rows))
    code, out, screen = run_on_terminal(
        workdir, "rates", "import", "other", "bad.csv", "--currency", "USD"
    )
    assert code == 1 and out == ""
    assert "rates import bad.csv: 1/3,000 rows (0%)" in screen  # the first row draws
    assert screen.endswith(
        "\r\x1b[K" + "billingctl: bad.csv line 2502: interval: must be a whole number >= 1\r\n"
    )

    code, out, screen = run_on_terminal(workdir, "load", "p.yaml")
    assert code == 0 and out.startswith("loaded 1 rate tables, 1 rates, 2 clients")
    assert "load p.yaml: 0 rates and clients" in screen and "reading and validating" in screen
    assert "load p.yaml: 3/3 rates and clients (100%)" in screen

    code, out, screen = run_on_terminal(workdir, "rates", "import", "retail", "r.csv")
    assert code == 0 and out.startswith("retail: 3000 rates from r.csv")
    assert "rates import r.csv: 1/3,000 rows (0%)" in screen  # the first row draws
    assert "3,000/3,000 rows (100%)" in screen  # and the last
    assert "merging into the table" in screen
    assert screen.endswith("\r\x1b[K")  # cleared: the result alone stays on the screen


def test_the_progress_line() -> None:
    stream = io.StringIO()
    progress = Progress("import", 200, stream=stream, interval=0)
    progress.advance(50)
    assert progress.line() == "import: 50/200 rows (25%)"  # no rate yet
    assert progress.started is not None
    progress.started -= 10  # as if the first rows came ten seconds ago
    assert progress.line() == "import: 50/200 rows (25%), 5 rows/s, 30s left"
    progress.advance(150)
    assert progress.line() == "import: 200/200 rows (100%), 20 rows/s, 10s elapsed"
    progress.finish()
    assert stream.getvalue().count("\r") == 3 and stream.getvalue().endswith("\r\x1b[K")
    silent = io.StringIO()
    off = Progress("x", 5, stream=silent, enabled=False)
    off.advance(5)
    off.finish()
    assert silent.getvalue() == ""
    assert not for_terminal("x", json_output=True).enabled


def test_live_rebuild_progress_on_a_terminal(workdir: Path, pg_url: str, redis_url: str) -> None:
    (workdir / "radiusd.toml").write_text(
        f'[database]\nurl = "{pg_url}"\n[redis]\nurl = "{redis_url}"\n'
    )
    assert run_quiet(workdir, "load", "p.yaml").returncode == 0
    code, out, screen = run_on_terminal(workdir, "live", "rebuild")
    assert (code, out) == (0, "live state rebuilt from the database: 2 clients\n")
    assert "live rebuild: 2/2 clients (100%)" in screen and screen.endswith("\r\x1b[K")
    quiet = run_quiet(workdir, "live", "rebuild")
    assert (quiet.returncode, quiet.stderr) == (0, "")
