"""Schema upgrades run from several hosts at once (a deployment of N nodes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_core.adapters.sql.db import current_revision, head_revision, make_engine

from ..conftest import throwaway_database

BILLINGCTL = Path(sys.executable).parent / "billingctl"


@pytest.fixture
def empty_pg_url(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database with no schema at all."""
    with throwaway_database(pg_admin_url) as url:
        yield url


def test_upgrades_started_together_take_turns_and_both_succeed(
    empty_pg_url: str, tmp_path: Path
) -> None:
    """Both run at once on a fresh database: one creates the schema under a database lock,
    the other waits for it and finds nothing to do (it failed with a UniqueViolation on
    pg_type before)."""
    config = tmp_path / "radiusd.toml"
    config.write_text(f'[database]\nurl = "{empty_pg_url}"\n', encoding="utf-8")
    command = [str(BILLINGCTL), "--config", str(config), "db", "upgrade"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    for code, out, err in results:
        assert (code, err) == (0, ""), err
        assert out.strip() == f"database at revision {head_revision()}"
    engine = make_engine(empty_pg_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
