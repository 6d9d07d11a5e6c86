"""Shared fixtures: real PostgreSQL databases (throwaway, per test) and SQLite files.

PostgreSQL comes from $RADIUSD_TEST_POSTGRES_URL (an admin URL whose role may CREATE
DATABASE), by default the machine's local server. Each test gets its own database, cloned
from a template migrated once per session, and dropped afterwards. A missing server fails
the tests that need it: it is never silently skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from billing_core.adapters.db import make_engine, upgrade
from billing_core.adapters.redis_connect import SyncRedis, redis_client
from tests.redis_cluster import LocalCluster, running_cluster

ADMIN_URL = os.environ.get(
    "RADIUSD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# a Redis database of this test session's own (1..13; the benchmark owns 14), so that two
# test runs on one machine do not flush each other's data
REDIS_URL = os.environ.get(
    "RADIUSD_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{os.getpid() % 13 + 1}"
)


def _admin_engine() -> object:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database; yields its name."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"radiusd_tmpl_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name)
    engine = make_engine(url.render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"radiusd_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database on each engine."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied before and after the test (real server, never a fake)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


# --- Redis Cluster -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real Redis Cluster on loopback (3 masters, 3 replicas), one per session."""
    with running_cluster() as cluster:
        yield cluster


@dataclass(frozen=True)
class RedisTarget:
    """The live state's Redis for a test: one server, or a Redis Cluster (``cluster``)."""

    url: str
    cluster: bool
    flush: Callable[[], None]

    def client(self) -> SyncRedis:
        return redis_client(self.url, self.cluster)

    def toml(self) -> str:
        """The ``[redis]`` section of a config naming it."""
        return f'[redis]\nurl = "{self.url}"\ncluster = {"true" if self.cluster else "false"}\n'


@pytest.fixture(params=["single", "cluster"])
def live_redis(request: pytest.FixtureRequest) -> Iterator[RedisTarget]:
    """Each test twice: on one Redis server (its own database), and on a Redis Cluster
    (emptied before and after; restored to cluster_state:ok first)."""
    if request.param == "single":
        url = str(request.getfixturevalue("redis_url"))

        def flush() -> None:
            redis_client(url).flushdb()

        yield RedisTarget(url, False, flush)
        return
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    cluster.wait_ok()
    cluster.flush()
    yield RedisTarget(cluster.url, True, cluster.flush)
    cluster.flush()
